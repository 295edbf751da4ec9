"""Rules against loop-based references written straight from the thesis formulas."""

import numpy as np
import pytest
import torch

from sklrp.rules import (
    RULE_NAMES,
    AbsZ,
    AlphaBeta,
    DenseMap,
    DiagonalMap,
    Epsilon,
    Flat,
    Gamma,
    Part,
    Rule,
    Term,
    WSquare,
    Z,
    ZB,
    ZBox,
    ZPlus,
    make_rule,
    propagate,
    safe_divide,
)

T = torch.float64


def _layer(rng, n=4, i=5, j=3, bias=True, zero_unit=False):
    x = rng.randn(n, i)
    w = rng.randn(i, j)
    b = rng.randn(j) if bias else np.zeros(j)
    if zero_unit:
        # force z_j = 0 for sample 0, unit 0 (the unstable case of the z-rule)
        b[0] = -(x[0] @ w[:, 0])
    r = rng.randn(n, j)
    return x, w, b, r


def _t(a):
    return torch.as_tensor(a, dtype=T)


# -- loop references ------------------------------------------------------------------
def ref_z(x, w, b, r):
    n, I = x.shape
    J = w.shape[1]
    out, rb = np.zeros((n, I)), np.zeros(n)
    for s in range(n):
        for j in range(J):
            zj = sum(x[s, i] * w[i, j] for i in range(I)) + b[j]
            if zj == 0:
                continue
            for i in range(I):
                out[s, i] += x[s, i] * w[i, j] / zj * r[s, j]  # Eq. (2.13)
            rb[s] += b[j] / zj * r[s, j]  # Eq. (2.16)
    return out, rb


def ref_epsilon(x, w, b, r, eps):
    n, I = x.shape
    J = w.shape[1]
    out, rb = np.zeros((n, I)), np.zeros(n)
    for s in range(n):
        for j in range(J):
            zj = sum(x[s, i] * w[i, j] for i in range(I)) + b[j]
            sign = 1.0 if zj >= 0 else -1.0  # sign(0) = 1, Eq. (2.22)
            for i in range(I):
                out[s, i] += x[s, i] * w[i, j] / (zj + eps * sign) * r[s, j]
            rb[s] += b[j] / (zj + eps * sign) * r[s, j]
    return out, rb


def ref_alphabeta(x, w, b, r, alpha, beta):
    n, I = x.shape
    J = w.shape[1]
    out, rb = np.zeros((n, I)), np.zeros(n)
    for s in range(n):
        for j in range(J):
            zij = [x[s, i] * w[i, j] for i in range(I)] + [b[j]]  # bias as an extra input, Eq. (2.25)
            zp = sum(v for v in zij if v > 0)
            zn = sum(v for v in zij if v <= 0)
            for i, v in enumerate(zij):
                msg = 0.0
                if v > 0 and zp != 0:
                    msg += alpha * v / zp
                if v <= 0 and zn != 0:
                    msg += beta * v / zn
                if i < I:
                    out[s, i] += msg * r[s, j]
                else:
                    rb[s] += msg * r[s, j]
    return out, rb


def ref_shares(v, r):
    """R_i = sum_j v_ij / sum_i' v_i'j R_j for contributions v of shape (n, I, J); a zero column passes nothing."""
    n, I, J = v.shape
    out = np.zeros((n, I))
    for s in range(n):
        for j in range(J):
            den = sum(v[s, i, j] for i in range(I))
            for i in range(I):
                out[s, i] += v[s, i, j] / den * r[s, j] if den != 0 else 0.0
    return out


def ref_flat(x, conn, r):
    """Eq. (2.27): z_ij = 1 for every input i connected to j (``conn[i, j]``), whatever its weight."""
    return ref_shares(np.broadcast_to(np.asarray(conn, dtype=float), (x.shape[0], *conn.shape)), r)


def ref_wsquare(x, w, r):
    """Eq. (2.28): z_ij = w_ij^2."""
    return ref_shares(np.broadcast_to(w ** 2, (x.shape[0], *w.shape)), r)


def ref_zb(x, w, r, lo, hi):
    """zB (Table 2.1): z_ij = x_i w_ij - l_i w+_ij - h_i w-_ij."""
    n, (I, J) = x.shape[0], w.shape
    v = np.zeros((n, I, J))
    for s in range(n):
        for i in range(I):
            for j in range(J):
                v[s, i, j] = x[s, i] * w[i, j] - lo[i] * max(w[i, j], 0) - hi[i] * min(w[i, j], 0)
    return ref_shares(v, r)


def ref_absz(x, w, r):
    """Eq. (2.7): z_ij = |x_i w_ij|."""
    return ref_shares(np.abs(x[:, :, None] * w[None]), r)


def ref_gamma(x, w, b, r, gamma):
    """Montavon et al. (2019), LRP-gamma: the z-rule with w + gamma w+ and b + gamma b+."""
    return ref_z(x, w + gamma * np.maximum(w, 0), b + gamma * np.maximum(b, 0), r)


# -- reference agreement ----------------------------------------------------------------
@pytest.mark.parametrize("zero_unit", [False, True])
def test_z_rule_matches_loop_reference(zero_unit):
    x, w, b, r = _layer(np.random.RandomState(0), zero_unit=zero_unit)
    res = Z().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    ref, rb = ref_z(x, w, b, r)
    assert np.all(np.isfinite(res.input.numpy()))
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.bias.numpy(), rb, rtol=1e-10, atol=1e-10)


# eps=0 with z_j=0 is the z-rule's 0/0 case, covered by the z-rule test
@pytest.mark.parametrize(
    "eps,zero_unit", [(0.0, False), (0.01, False), (1.0, False), (100.0, False), (0.01, True), (1.0, True)]
)
def test_epsilon_rule_matches_loop_reference(eps, zero_unit):
    x, w, b, r = _layer(np.random.RandomState(1), zero_unit=zero_unit)
    res = Epsilon(eps).propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    ref, rb = ref_epsilon(x, w, b, r, eps)
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.bias.numpy(), rb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, -1.0), (1.5, -0.5)])
@pytest.mark.parametrize("bias", [True, False])
def test_alphabeta_rule_matches_loop_reference(alpha, beta, bias):
    x, w, b, r = _layer(np.random.RandomState(2), bias=bias)
    lmap = DenseMap(_t(w), _t(b) if bias else None)
    res = AlphaBeta(alpha, beta).propagate(lmap, _t(x), _t(r))
    ref, rb = ref_alphabeta(x, w, b, r, alpha, beta)
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.bias.numpy(), rb, rtol=1e-10, atol=1e-12)


def test_alphabeta_empty_parts_give_zero_not_nan():
    # all inputs and weights positive: z-_j = 0 -> the beta part must be 0, not NaN (LRP Toolbox #19)
    x = np.abs(np.random.RandomState(3).randn(3, 4))
    w = np.abs(np.random.RandomState(4).randn(4, 2))
    r = np.ones((3, 2))
    res = AlphaBeta(2.0, -1.0).propagate(DenseMap(_t(w)), _t(x), _t(r))
    assert np.all(np.isfinite(res.input.numpy()))
    ref, _ = ref_alphabeta(x, w, np.zeros(2), r, 2.0, -1.0)
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-10)
    # all-zero input: both parts empty
    res0 = AlphaBeta(2.0, -1.0).propagate(DenseMap(_t(w)), torch.zeros(1, 4, dtype=T), torch.ones(1, 2, dtype=T))
    assert torch.all(res0.input == 0)


def test_flat_and_wsquare_match_loop_reference():
    x, w, b, r = _layer(np.random.RandomState(5))
    w[1, 2] = 0.0  # a zero weight is still a connection: the receptive field of a dense unit is every input
    conn = np.ones_like(w, dtype=bool)
    np.testing.assert_allclose(
        Flat().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r)).input.numpy(), ref_flat(x, conn, r), rtol=1e-12
    )
    np.testing.assert_allclose(
        WSquare().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r)).input.numpy(), ref_wsquare(x, w, r), rtol=1e-12
    )


def test_zb_matches_loop_reference():
    rng = np.random.RandomState(6)
    x = rng.uniform(0, 1, size=(3, 5))
    w = rng.randn(5, 4)
    r = rng.randn(3, 4)
    lo, hi = np.zeros(5), np.ones(5)
    res = ZB(0.0, 1.0).propagate(DenseMap(_t(w), _t(rng.randn(4))), _t(x), _t(r))
    np.testing.assert_allclose(res.input.numpy(), ref_zb(x, w, r, lo, hi), rtol=1e-10)
    lo2, hi2 = tuple(-np.arange(5.0)), tuple(np.arange(5.0) + 1)
    res2 = ZB(lo2, hi2).propagate(DenseMap(_t(w)), _t(x), _t(r))
    np.testing.assert_allclose(res2.input.numpy(), ref_zb(x, w, r, lo2, hi2), rtol=1e-10)


def test_flat_spreads_over_the_receptive_field_not_the_nonzero_weights():
    """Eq. (2.27): weights [1, 0, 2, 0] and R_j = 3 give 0.75 to each of the four inputs."""
    lmap = DenseMap(_t([[1.0], [0.0], [2.0], [0.0]]))
    r = Flat().propagate(lmap, _t(np.random.RandomState(0).randn(2, 4)), _t([[3.0], [3.0]]))
    np.testing.assert_allclose(r.input.numpy(), 0.75)
    # a diagonal map connects output d to input d only (also where w_d = 0, e.g. a clipped feature)
    w = _t([2.0, 0.0, -1.0])
    r = Flat().propagate(DiagonalMap(w), _t(np.ones((1, 3))), _t([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(r.input.numpy(), [[1.0, 2.0, 3.0]])


def test_diagonal_map_equals_dense_diagonal_matrix():
    # the flat rule is left out: a dense matrix connects all inputs, whatever its zeros (see above)
    rng = np.random.RandomState(7)
    x, w, b, r = rng.randn(4, 6), rng.randn(6), rng.randn(6), rng.randn(4, 6)
    for rule in (Z(), Epsilon(0.1), AlphaBeta(2, -1), WSquare(), ZB(-3.0, 3.0), Gamma(0.3), AbsZ()):
        diag = rule.propagate(DiagonalMap(_t(w), _t(b)), _t(x), _t(r))
        dense = rule.propagate(DenseMap(_t(np.diag(w)), _t(b)), _t(x), _t(r))
        np.testing.assert_allclose(diag.input.numpy(), dense.input.numpy(), rtol=1e-10, err_msg=repr(rule))
        np.testing.assert_allclose(diag.bias.numpy(), dense.bias.numpy(), rtol=1e-10, atol=1e-14)


# -- conservation ------------------------------------------------------------------------
def test_z_rule_conserves_exactly_with_bias():
    x, w, b, r = _layer(np.random.RandomState(8), n=10, i=7, j=5)
    res = Z().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    np.testing.assert_allclose((res.input.sum(1) + res.bias).numpy(), r.sum(1), rtol=1e-10)


@pytest.mark.parametrize("eps", [0.01, 1.0, 100.0])
def test_epsilon_conservation_law_eq_2_23(eps):
    x, w, b, r = _layer(np.random.RandomState(9), n=6, i=5, j=4)
    res = Epsilon(eps).propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    z = x @ w + b
    sign = np.where(z >= 0, 1.0, -1.0)
    # per unit j: sum_i R_{i<-j} = R_j (1 - (b_j + eps sign)/(z_j + eps sign)), Eq. (2.23)
    expected_inputs = (r * (1 - (b + eps * sign) / (z + eps * sign))).sum(1)
    np.testing.assert_allclose(res.input.sum(1).numpy(), expected_inputs, rtol=1e-10)
    absorbed_by_stabiliser = (r * eps * sign / (z + eps * sign)).sum(1)
    np.testing.assert_allclose((res.input.sum(1) + res.bias).numpy() + absorbed_by_stabiliser, r.sum(1), rtol=1e-10)


def test_large_epsilon_absorbs_everything():
    x, w, b, r = _layer(np.random.RandomState(10))
    res = Epsilon(1e12).propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    assert np.abs(res.input.numpy()).max() < 1e-9


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, -1.0)])
def test_alphabeta_conserves_without_bias(alpha, beta):
    rng = np.random.RandomState(11)
    x, w, r = rng.randn(8, 6), rng.randn(6, 4), rng.randn(8, 4)
    res = AlphaBeta(alpha, beta).propagate(DenseMap(_t(w)), _t(x), _t(r))
    np.testing.assert_allclose(res.input.sum(1).numpy(), r.sum(1), rtol=1e-10)


@pytest.mark.parametrize("rule", [Flat(), WSquare(), ZB(-5.0, 5.0)])
def test_input_invariant_rules_conserve(rule):
    x, w, b, r = _layer(np.random.RandomState(12), n=5, i=6, j=4)
    res = rule.propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    np.testing.assert_allclose(res.input.sum(1).numpy(), r.sum(1), rtol=1e-9)
    assert torch.all(res.bias == 0)


def test_flat_and_wsquare_ignore_input_values():
    _, w, b, r = _layer(np.random.RandomState(13))
    x1, x2 = np.random.RandomState(1).randn(4, 5), np.random.RandomState(2).randn(4, 5)
    for rule in (Flat(), WSquare()):
        a = rule.propagate(DenseMap(_t(w), _t(b)), _t(x1), _t(r)).input
        c = rule.propagate(DenseMap(_t(w), _t(b)), _t(x2), _t(r)).input
        torch.testing.assert_close(a, c)


# -- parameters and bad input ----------------------------------------------------------------
def test_zplus_is_alphabeta_one_zero():
    assert ZPlus() == AlphaBeta(1.0, 0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"alpha": 2.0, "beta": 1.0}, "alpha \\+ beta must equal 1"), ({"alpha": 0.5, "beta": 0.5}, "alpha must be >= 1"),
     ({"alpha": float("nan"), "beta": 1.0}, "finite")],
)
def test_alphabeta_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlphaBeta(**kwargs)


def test_zennit_convention_maps_to_thesis_convention():
    # zennit's AlphaBeta(alpha=2, beta=1) subtracts beta * negative part: our AlphaBeta(2, -1)
    rng = np.random.RandomState(14)
    x, w, r = rng.randn(3, 12), rng.randn(12, 2), rng.randn(3, 2)
    ours = AlphaBeta(2.0, -1.0).propagate(DenseMap(_t(w)), _t(x), _t(r)).input.numpy()
    zp = np.maximum(x[:, :, None] * w[None], 0)
    zn = np.minimum(x[:, :, None] * w[None], 0)
    zennit_style = (2 * zp / zp.sum(1, keepdims=True) - 1 * zn / zn.sum(1, keepdims=True)) * r[:, None, :]
    np.testing.assert_allclose(ours, zennit_style.sum(2), rtol=1e-10)


@pytest.mark.parametrize("eps", [-1.0, float("inf"), float("nan"), "big"])
def test_epsilon_validation(eps):
    with pytest.raises(ValueError, match="epsilon"):
        Epsilon(eps)


def test_zb_validation():
    with pytest.raises(ValueError, match="low must be <= high"):
        ZB(1.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        ZB(float("-inf"), 0.0)


def test_make_rule_names_and_errors():
    assert make_rule("z") == Z()
    assert make_rule("epsilon", epsilon=0.5) == Epsilon(0.5)
    assert make_rule("zplus") == AlphaBeta(1.0, 0.0)
    assert make_rule("alphabeta", alpha=1.0, beta=0.0) == AlphaBeta(1.0, 0.0)
    assert make_rule("flat") == Flat()
    assert make_rule("w2") == WSquare()
    assert make_rule("zb", low=-1.0, high=2.0) == ZB(-1.0, 2.0)
    assert make_rule(Epsilon(3.0)) == Epsilon(3.0)
    with pytest.raises(ValueError, match="unknown rule 'lrp'"):
        make_rule("lrp")
    with pytest.raises(TypeError, match="rule must be"):
        make_rule(3)
    with pytest.raises(TypeError, match="sklrp.rules.Rule"):
        propagate("z", DenseMap(torch.eye(2, dtype=T)), torch.ones(1, 2, dtype=T), torch.ones(1, 2, dtype=T))


def test_float32_and_dtype_preserved():
    x, w, b, r = _layer(np.random.RandomState(15))
    f32 = torch.float32
    res = Epsilon(0.1).propagate(
        DenseMap(torch.as_tensor(w, dtype=f32), torch.as_tensor(b, dtype=f32)),
        torch.as_tensor(x, dtype=f32), torch.as_tensor(r, dtype=f32),
    )
    assert res.input.dtype == f32
    ref, _ = ref_epsilon(x, w, b, r, 0.1)
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-4, atol=1e-5)


# -- rules beyond Table 2.1: gamma, zB with bounds of any sample shape, the magnitude rule of Eq. (2.7) ------
@pytest.mark.parametrize("gamma", [0.0, 0.25, 2.0])
@pytest.mark.parametrize("zero_unit", [False, True])
def test_gamma_rule_matches_loop_reference(gamma, zero_unit):
    x, w, b, r = _layer(np.random.RandomState(20), zero_unit=zero_unit and gamma == 0.0)
    res = Gamma(gamma).propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    ref, rb = ref_gamma(x, w, b, r, gamma)
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.bias.numpy(), rb, rtol=1e-10, atol=1e-12)
    # conservative with the bias' share, for every unit with a non-zero denominator
    if not zero_unit:
        np.testing.assert_allclose((res.input.sum(1) + res.bias).numpy(), r.sum(1), rtol=1e-10)


def test_gamma_zero_is_the_z_rule():
    x, w, b, r = _layer(np.random.RandomState(21))
    a = Gamma(0.0).propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    c = Z().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    torch.testing.assert_close(a.input, c.input)
    assert Gamma(0.0).quotient and not Gamma(0.1).quotient


def test_absz_matches_eq_2_7_and_conserves():
    x, w, b, r = _layer(np.random.RandomState(22))
    res = AbsZ().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    np.testing.assert_allclose(res.input.numpy(), ref_absz(x, w, r), rtol=1e-10)
    np.testing.assert_allclose(res.input.sum(1).numpy(), r.sum(1), rtol=1e-10)
    assert torch.all(res.bias == 0)
    # Eq. (2.7): every input gets relevance of the sign of R_j (the thesis' counter-example)
    one = AbsZ().propagate(DenseMap(_t(w[:, :1])), _t(x), _t(np.abs(r[:, :1])))
    assert torch.all(one.input >= 0)


def test_zbox_bounds_shaped_like_a_sample_match_loop_reference():
    rng = np.random.RandomState(23)
    x = rng.uniform(-1, 1, size=(3, 6))
    w, r = rng.randn(6, 4), rng.randn(3, 4)
    lo, hi = -1.0 - rng.rand(6), 1.0 + rng.rand(6)
    res = ZBox(lo, hi).propagate(DenseMap(_t(w), _t(rng.randn(4))), _t(x), _t(r))
    np.testing.assert_allclose(res.input.numpy(), ref_zb(x, w, r, lo, hi), rtol=1e-10)
    np.testing.assert_allclose(res.input.sum(1).numpy(), r.sum(1), rtol=1e-9)
    assert ZB is ZBox and make_rule("zb", low=lo, high=hi) == ZBox(lo, hi) == make_rule("zbox", low=lo, high=hi)
    assert make_rule("zbox", low=lo.reshape(2, 3), high=1.0).low.shape == (2, 3)  # the sample's shape is kept


def test_zbox_shape_mismatch_is_a_clear_error():
    import sklearn.pipeline
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import sklrp

    rng = np.random.RandomState(24)
    X, y = rng.randn(30, 4), rng.randint(2, size=30)
    with pytest.raises(ValueError, match=r"bound low has shape \(2,\), which does not fit one input sample of "
                                         r"shape \(4,\)"):
        ZBox([0.0, 0.0], [1.0, 1.0]).propagate(DenseMap(_t(rng.randn(4, 2))), _t(X[:2]), _t(rng.randn(2, 2)))
    pipe = sklearn.pipeline.make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="zb", low=[-3.0, -3.0], high=[3.0, 3.0]).fit(X, y)
    with pytest.raises(ValueError, match="does not fit one input sample"):
        lrp.explain(X[:3])
    with pytest.raises(ValueError, match="do not broadcast"):
        ZBox(np.zeros(3), np.ones(2))


def test_new_rule_validation_and_names():
    for bad in (-0.1, float("nan"), "big"):
        with pytest.raises(ValueError, match="gamma"):
            Gamma(bad)
    with pytest.raises(ValueError, match="finite"):
        ZBox(np.array([0.0, np.nan]), 1.0)
    for name in ("gamma", "zbox", "absz"):
        assert name in RULE_NAMES
    assert make_rule("gamma", gamma=0.5) == Gamma(0.5)
    assert make_rule("gamma") == Gamma(0.25)
    assert make_rule("absz") == AbsZ()
    for name in RULE_NAMES:
        assert isinstance(make_rule(name), Rule)
    assert hash(ZBox([0.0, 1.0], 2.0)) == hash(ZBox((0.0, 1.0), 2.0))


# -- one division, one arithmetic ---------------------------------------------------------------
def test_safe_divide_semantics():
    """0/0 := 0 (thesis), x/0 := 0 for finite x (a subnormal den counts as 0), NaN stays NaN, else IEEE."""
    nan, inf = float("nan"), float("inf")
    num = torch.tensor([0.0, 3.0, -2.0, nan, nan, inf, 6.0, 1.0, 1e300, 1.0, 2.0], dtype=T)
    den = torch.tensor([0.0, 0.0, -0.0, 0.0, 2.0, 0.0, 3.0, inf, 1e-300, 1e-320, nan], dtype=T)
    got = safe_divide(num, den)
    expected = [0.0, 0.0, 0.0, nan, nan, nan, 2.0, 0.0, inf, 0.0, nan]
    np.testing.assert_array_equal(got.numpy(), expected)
    x = torch.tensor(np.random.RandomState(0).randn(1000), dtype=T)
    y = torch.tensor(np.random.RandomState(1).randn(1000), dtype=T)
    np.testing.assert_allclose(safe_divide(x, y).numpy(), (x / y).numpy(), rtol=4e-16, atol=0)
    buf = den.clone()
    out = safe_divide(num, buf, out=buf)  # in place into the denominator's buffer
    assert out is buf
    np.testing.assert_array_equal(out.numpy(), expected)
    f32 = safe_divide(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert f32.dtype == torch.float32 and torch.equal(f32, torch.zeros(2))


def test_rules_are_described_by_parts_and_capabilities():
    assert Z().quotient and Epsilon(0.1).quotient and not AlphaBeta(2, -1).quotient
    assert Flat().input_invariant and WSquare().input_invariant and not Z().input_invariant
    assert AlphaBeta(2, -1).uses_input_sign and not Epsilon().uses_input_sign and not AbsZ().uses_input_sign
    assert all(make_rule(name).has_parts for name in RULE_NAMES)


def test_a_rule_described_by_parts_works_on_every_map():
    """A new rule written as parts (here: the positive contributions only, bias ignored) needs no other code."""

    class PositiveOnly(Rule):
        def parts(self):
            return (Part((Term("x+", "pos"), Term("x-", "neg"))),)

    x, w, b, r = _layer(np.random.RandomState(25))
    res = PositiveOnly().propagate(DenseMap(_t(w), _t(b)), _t(x), _t(r))
    zp = np.maximum(x[:, :, None] * w[None], 0)
    np.testing.assert_allclose(res.input.numpy(), (zp / zp.sum(1, keepdims=True) * r[:, None, :]).sum(2),
                               rtol=1e-10)
    assert res.input.shape == (4, 5) and torch.all(res.bias == 0)


def test_overriding_propagate_of_a_rule_with_parts_is_an_error():
    with pytest.raises(TypeError, match="overrides propagate.*inherits parts.*from Epsilon"):
        class Bad(Epsilon):
            def propagate(self, lmap, x, relevance):  # pragma: no cover
                return super().propagate(lmap, x, relevance)

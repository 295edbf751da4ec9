"""Tests for the exact (path-integral) Taylor decomposition of kernel SVMs, the head's remainder,
the remainder warning and the bad-input checks of the Taylor settings."""

import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, OneClassSVM

import sklrp
from sklrp import kernels as K
from sklrp.propagators import RuleConfig, build_chain
from sklrp.rules import Epsilon
from sklrp.svm import REMAINDER_WARNING_FRACTION, Pair, TaylorRemainderWarning

LRP = functools.partial(sklrp.LRPTransformer, device="cpu")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(1)
    X = rng.rand(120, 4) + 0.05  # strictly positive: the chi2 kernel's domain
    y = ((X[:, 0] - 0.5) ** 2 + (X[:, 1] - 0.5) ** 2 < 0.12).astype(int)
    y3 = np.digitize(X[:, 0] + 0.5 * X[:, 2], [0.6, 1.0])
    return X, y, y3


def _labels(name, X, y):
    # the sigmoid kernel cannot fit the disc: give it a half-plane
    return (X[:, 0] > X[:, 1]).astype(int) if name == "sigmoid" else y


class _Cauchy(K.Kernel):
    """A user kernel with only a torch matrix: gradient from autograd."""

    def __init__(self, scale=0.1):
        self.scale = scale

    def matrix(self, X, Y):
        d2 = ((X * X).sum(1, keepdim=True) + (Y * Y).sum(1) - 2 * X @ Y.T).clamp(min=0)
        return 1.0 / (1.0 + d2 / self.scale)


MODELS = {
    "rbf": lambda: SVC(kernel="rbf", gamma=2.0, C=10.0),
    "chi2": lambda: SVC(kernel=K.Chi2Kernel(gamma=1.5), C=10.0),
    "poly": lambda: SVC(kernel="poly", degree=3, gamma=2.0, coef0=1.0, C=10.0),
    "sigmoid": lambda: SVC(kernel="sigmoid", gamma=0.5, coef0=-1.0, C=10.0),
    "user": lambda: SVC(kernel=_Cauchy(0.1), C=10.0),
}


def _conserves(E, rtol=1e-6):
    total = E.relevance.sum(1) + E.bias_relevance
    assert np.all(np.abs(total - E.output) <= rtol * np.abs(E.output)), np.abs(total - E.output).max()


@pytest.mark.parametrize("name", list(MODELS))
def test_exact_conserves_binary(data, name):
    X, y, _ = data
    y = _labels(name, X, y)
    lrp = LRP(MODELS[name](), taylor_reference="root").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaylorRemainderWarning)
        E = lrp.explain(X[:15])
    assert E.extras["root_found"].all()
    _conserves(E)
    # the bias part is f(x~) at the root point, |f(x~)| <= root_tol, and the relevance is not trivial
    sign = np.where(E.target == 1, 1.0, -1.0)
    np.testing.assert_allclose(E.bias_relevance, sign * lrp.estimator_.decision_function(E.root_point), atol=1e-12)
    assert np.all(np.abs(E.bias_relevance) <= 1e-6)
    assert np.all(np.abs(E.relevance).sum(1) > 0.1 * np.abs(E.output))
    # the head's remainder is the whole residual of a lone SVM; relative residual per sample
    np.testing.assert_allclose(E.taylor_remainder, E.residual, atol=1e-14)
    np.testing.assert_allclose(E.absorbed, 0.0, atol=1e-14)
    assert np.all(E.relative_residual <= 1e-6)
    # the same root point as the first-order decomposition: only the integral differs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaylorRemainderWarning)
        F = LRP(MODELS[name](), taylor="first_order").fit(X, y).explain(X[:15])  # "auto": a root point
    np.testing.assert_allclose(E.root_point, F.root_point, atol=1e-12)


MULTICLASS = {"rbf": MODELS["rbf"], "chi2": lambda: SVC(kernel=K.Chi2Kernel(gamma=3.0), C=10.0)}


@pytest.mark.parametrize("name", list(MULTICLASS))
def test_exact_conserves_multiclass_ovo(data, name):
    # the explained output g_k (signed sum of the pairwise decisions with k) and a single pair
    X, _, y3 = data
    lrp = LRP(MULTICLASS[name]()).fit(X, y3)
    E = lrp.explain(X[:12])
    assert E.extras["root_found"].all()
    _conserves(E)
    ovo = MULTICLASS[name]().set_params(decision_function_shape="ovo").fit(X, y3).decision_function(X[:12])
    combos = np.column_stack([ovo[:, 0] + ovo[:, 1], -ovo[:, 0] + ovo[:, 2], -ovo[:, 1] - ovo[:, 2]])
    np.testing.assert_allclose(E.output, combos[np.arange(12), E.target], atol=1e-10)
    E = lrp.explain(X[:6], target=Pair(2, 0))
    _conserves(E)
    np.testing.assert_allclose(E.output, -ovo[:6, 1], atol=1e-10)


def _rbf_gradient_loop(sv, coef, gamma, p):
    # Eq. (A.5)'s derivative at the rows of p: sum_i a_i k(x_i, p) 2 gamma (x_i - p)
    p = np.atleast_2d(p)
    out = np.zeros(p.shape)
    for i in range(sv.shape[0]):
        k = np.exp(-gamma * ((sv[i] - p) ** 2).sum(1, keepdims=True))
        out += coef[i] * k * 2 * gamma * (sv[i] - p)
    return out


def _chi2_gradient_loop(sv, coef, gamma, p):
    # Eq. (A.7)'s derivative at the rows of p: sum_i a_i k(x_i, p) gamma (4 x_i^2 / (x_i + p)^2 - 1)
    p = np.atleast_2d(p)
    out = np.zeros(p.shape)
    for i in range(sv.shape[0]):
        k = np.exp(-gamma * ((sv[i] - p) ** 2 / (sv[i] + p)).sum(1, keepdims=True))
        out += coef[i] * k * gamma * (4 * sv[i] ** 2 / (sv[i] + p) ** 2 - 1)
    return out


@pytest.mark.parametrize("name, gamma, gradient", [("rbf", 2.0, _rbf_gradient_loop),
                                                   ("chi2", 1.5, _chi2_gradient_loop)])
def test_exact_matches_loop_integral(data, name, gamma, gradient):
    # R_d = (x - x~)_d int_0^1 df/dx_d(x~ + t (x - x~)) dt by a 400-panel composite Simpson rule in loops
    X, y, _ = data
    lrp = LRP(MODELS[name](), target=1).fit(X, y)
    svc = lrp.estimator_
    E = lrp.explain(X[:3])
    sv = svc.support_vectors_ if svc.support_vectors_.size else X[svc.support_]
    coef = svc.dual_coef_[0]
    t = np.linspace(0.0, 1.0, 801)
    w = np.full(801, 2.0)
    w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
    w /= 3 * 800
    for n in range(3):
        x, root = X[n], E.root_point[n]
        integral = w @ gradient(sv, coef, gamma, root + t[:, None] * (x - root))
        np.testing.assert_allclose(E.relevance[n], (x - root) * integral, rtol=1e-8, atol=1e-11)


def test_first_order_is_eq_a5_at_its_root(data):
    X, y, _ = data
    lrp = LRP(MODELS["rbf"](), taylor="first_order", target=1).fit(X, y)
    svc = lrp.estimator_
    E = lrp.explain(X[:3])
    for n in range(3):
        expected = (X[n] - E.root_point[n]) * _rbf_gradient_loop(svc.support_vectors_, svc.dual_coef_[0], 2.0,
                                                                 E.root_point[n])[0]
        np.testing.assert_allclose(E.relevance[n], expected, rtol=1e-9, atol=1e-12)
    assert np.all(E.extras["quadrature_nodes"] == 0)


def test_quadrature_adapts_per_sample(data):
    # a narrow RBF along a long path needs more nodes than 8; node counts are powers of two from 8,
    # capped at taylor_max_nodes; a looser tolerance needs fewer
    X, y, _ = data
    model = SVC(kernel="rbf", gamma=40.0, C=100.0)
    E = LRP(model).fit(X, y).explain(X)
    nodes = E.extras["quadrature_nodes"]
    assert set(np.unique(nodes)) <= {0, 8, 16, 32, 64, 128, 256}
    assert nodes.max() > 8 and (nodes == 8).any()
    _conserves(E, rtol=1e-8)
    loose = LRP(model, taylor_tol=1e-2).fit(X, y).explain(X).extras["quadrature_nodes"]
    assert loose.sum() < nodes.sum()
    capped = LRP(model, taylor_max_nodes=12).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TaylorRemainderWarning)
        C = capped.explain(X)
    assert set(np.unique(C.extras["quadrature_nodes"])) <= {0, 8, 12}


def test_head_reports_its_remainder(data):
    # HeadRelevance.remainder = f(x) - sum R - bias, the part the head's decomposition leaves out
    X, y, _ = data
    svc = MODELS["rbf"]().fit(X, y)
    _, head = build_chain(svc)
    for taylor in ("first_order", "exact"):
        config = RuleConfig(Epsilon(0.01), taylor=taylor)
        head.prepare(config.tensor(X), y, config)
        x = config.tensor(X[:10])
        scores = head.scores(x, config)
        weights = config.tensor(head.target_weights(head.predicted(scores.numpy()), 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TaylorRemainderWarning)
            hr = head.relevance(x, weights, scores, config)
        g = (weights * scores).sum(1)
        np.testing.assert_allclose(hr.remainder.numpy(), (g - hr.relevance.sum(1) - hr.bias).numpy(), atol=1e-13)
        # independently: the Taylor remainder is f(x) - f(x~) - sum_d R_d with f from scikit-learn
        sign = weights[:, 0].numpy()
        f_root = sign * svc.decision_function(hr.extras["root_point"].numpy())
        expected = sign * svc.decision_function(X[:10]) - f_root - hr.relevance.sum(1).numpy()
        np.testing.assert_allclose(hr.remainder.numpy(), expected, atol=1e-10)
        if taylor == "exact":
            assert np.all(np.abs(hr.remainder.numpy()) <= 1e-6 * np.abs(g.numpy()))
        else:
            assert np.median(np.abs(hr.remainder.numpy()) / np.abs(g.numpy())) > 0.01


@pytest.mark.parametrize("gamma", [1e-3, 0.3, 2.0, 8.0])
def test_remainder_warning_fires_exactly_when_median_share_is_large(data, gamma):
    X, y, _ = data
    lrp = LRP(SVC(kernel="rbf", gamma=gamma, C=100.0), taylor="first_order").fit(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        E = lrp.explain(X[:30])
    share = np.median(E.relative_residual)
    fired = [w for w in caught if issubclass(w.category, TaylorRemainderWarning)]
    assert bool(fired) == (share > REMAINDER_WARNING_FRACTION)
    if fired:
        assert "taylor='exact'" in str(fired[0].message) and f"{share:.1%}" in str(fired[0].message)
    # the exact decomposition never leaves that much
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaylorRemainderWarning)
        LRP(SVC(kernel="rbf", gamma=gamma, C=100.0)).fit(X, y).explain(X[:30])


def test_remainder_warning_cases(data):
    X, y, _ = data
    # first order on a curved model: fires; on a nearly linear one: does not
    with pytest.warns(TaylorRemainderWarning, match="use taylor='exact'"):
        LRP(SVC(kernel="rbf", gamma=8.0, C=100.0), taylor="first_order").fit(X, y).explain(X[:30])
    rng = np.random.RandomState(0)
    Xl = rng.randn(150, 3)
    yl = (Xl @ [1.0, -2.0, 0.5] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TaylorRemainderWarning)
        LRP(SVC(kernel="rbf", gamma=1e-3, C=100.0), taylor="first_order").fit(Xl, yl).explain(Xl[:20])
    # the exact form with a single node cannot integrate a narrow RBF: it names its own fix
    with pytest.warns(TaylorRemainderWarning, match="raise taylor_max_nodes"):
        LRP(SVC(kernel="rbf", gamma=200.0, C=100.0), taylor_max_nodes=1).fit(X, y).explain(X[:20])


def test_remainder_apart_from_absorbed_relevance_in_a_pipeline(data):
    # StandardScaler under the epsilon rule absorbs relevance; the SVM head's Taylor remainder is reported apart
    X, y, _ = data
    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", gamma=0.5, C=10.0)).fit(X, y)
    for taylor in ("first_order", "exact"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TaylorRemainderWarning)
            E = LRP(FrozenEstimator(model), rule="epsilon", epsilon=1.0, taylor=taylor).fit(X).explain(X[:10])
            Z = model[0].transform(X[:10])
            H = LRP(FrozenEstimator(model[-1]), taylor=taylor).fit(model[0].transform(X)).explain(Z)
        np.testing.assert_allclose(E.taylor_remainder, H.residual, atol=1e-12)  # the head's own remainder
        np.testing.assert_allclose(E.residual, E.absorbed + E.taylor_remainder, atol=1e-12)
        assert np.abs(E.absorbed).max() > 1e-3
        np.testing.assert_allclose(E.relative_residual, np.abs(E.residual) / np.abs(E.output))
        if taylor == "exact":
            assert np.all(np.abs(E.taylor_remainder) <= 1e-6 * np.abs(E.output))
        else:
            assert np.median(np.abs(E.taylor_remainder) / np.abs(E.output)) > 0.01


def test_one_class_svm_exact(data):
    X, _, _ = data
    lrp = LRP(OneClassSVM(gamma=2.0, nu=0.2)).fit(X)
    E = lrp.explain(X[:10])
    assert E.extras["root_found"].all()
    _conserves(E)


def test_float32_exact(data):
    X, y, _ = data
    E = LRP(MODELS["rbf"](), dtype="float32").fit(X, y).explain(X[:8])
    assert E.relevance.dtype == np.float64  # numpy out
    total = E.relevance.sum(1) + E.bias_relevance
    np.testing.assert_allclose(total, E.output, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("param, value", [
    ("taylor", "second_order"), ("taylor", None), ("taylor_tol", 0.0), ("taylor_tol", -1e-8), ("taylor_tol", np.nan),
    ("taylor_tol", 2.0), ("taylor_tol", "1e-8"), ("taylor_max_nodes", 0), ("taylor_max_nodes", 10 ** 6),
    ("taylor_max_nodes", 2.5), ("taylor_max_nodes", True),
])
def test_bad_taylor_settings(data, param, value):
    # LRPTransformer's parameter constraints, or sklrp.svm's own check (the node limit), name the parameter
    X, y, _ = data
    match = rf"'{param}' parameter of LRPTransformer must be|{param} must be"
    with pytest.raises(ValueError, match=match):
        LRP(MODELS["rbf"](), **{param: value}).fit(X, y)  # up front, in fit
    lrp = LRP(MODELS["rbf"]()).fit(X, y).set_params(**{param: value})
    with pytest.raises(ValueError, match=match):
        lrp.explain(X[:2])


@pytest.mark.parametrize("field, value, match", [
    ("taylor", "second_order", "taylor must be one of"),
    ("taylor_tol", 0.0, r"taylor_tol must be a finite number in \(0, 1\)"),
    ("taylor_max_nodes", 10 ** 6, r"taylor_max_nodes must be an integer in \[1, 1024\]"),
    ("taylor_max_nodes", True, r"taylor_max_nodes must be an integer in \[1, 1024\]"),
    ("root_tol", -1.0, "root_tol must be a positive finite number"),
    ("n_root_candidates", 0, "n_root_candidates must be a positive integer"),
])
def test_head_checks_its_settings(data, field, value, match):
    # a head used through a RuleConfig directly (a Chain, the audit) checks the settings itself
    X, y, _ = data
    _, head = build_chain(MODELS["rbf"]().fit(X, y))
    config = RuleConfig(Epsilon(0.01), **{field: value})
    with pytest.raises(ValueError, match=match):
        head.prepare(config.tensor(X), y, config)


class _NumpyKernel(K.Kernel):
    """matrix() through numpy: autograd cannot differentiate it."""

    def matrix(self, X, Y):
        return torch.as_tensor(np.exp(-((X.detach().numpy()[:, None] - Y.detach().numpy()[None]) ** 2).sum(2)))


class _NoKernel(K.Kernel):
    """Implements nothing sklrp could decompose, but is a usable SVC kernel."""

    def __call__(self, X, Y=None):
        X = np.asarray(X, dtype=float)
        Y = X if Y is None else np.asarray(Y, dtype=float)
        return X @ Y.T


def test_kernels_without_a_gradient(data):
    X, y, _ = data
    with pytest.raises(TypeError, match="_NumpyKernel has no gradient.*implement gradient"):
        LRP(SVC(kernel=_NumpyKernel())).fit(X, y)
    with pytest.raises(TypeError, match="neither sum-decomposable nor differentiable"):
        LRP(SVC(kernel=_NoKernel())).fit(X, y)


def test_overflowing_input_is_named(data):
    # RBF on X * 1e300: squared distances overflow float64; say so instead of blaming the reference set
    X, y, _ = data
    lrp = LRP(FrozenEstimator(SVC(kernel="rbf", gamma=1.0).fit(X, y)), taylor_reference="root").fit(X)
    message = r"largest \|value\| 7.7e\+299\) and the reference samples overflow float64.*Rescale"
    with pytest.raises(ValueError, match=message):
        lrp.explain(X[:3] * 1e300)
    for taylor in ("first_order", "exact"):
        with pytest.raises(ValueError, match="overflow"):
            lrp.set_params(taylor=taylor).explain(X[:3] * 1e200)


# -- expansion at the training mean (taylor_reference="mean") -----------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_mean_reference_conserves_with_f_of_the_mean_as_bias(data, name):
    X, y, _ = data
    yy = _labels(name, X, y)
    lrp = LRP(MODELS[name](), taylor_reference="mean").fit(X, yy)
    E = lrp.explain(X[:8])
    _conserves(E)
    np.testing.assert_allclose(E.root_point, np.broadcast_to(X.mean(0), E.root_point.shape), rtol=1e-12)
    sign = np.where(E.target == lrp.classes_[1], 1.0, -1.0)
    f_mean = lrp.estimator_.decision_function(X.mean(0)[None])[0]
    np.testing.assert_allclose(E.bias_relevance, sign * f_mean, rtol=1e-10)
    assert E.extras["root_found"].all()


def test_mean_reference_matches_loop_integral(data):
    X, y, _ = data
    lrp = LRP(MODELS["rbf"](), target=1, taylor_reference="mean").fit(X, y)
    svc = lrp.estimator_
    E = lrp.explain(X[:3])
    t = np.linspace(0.0, 1.0, 801)
    w = np.full(801, 2.0)
    w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
    w /= 3 * 800
    mean = X.mean(0)
    for n in range(3):
        path = mean + t[:, None] * (X[n] - mean)
        integral = w @ _rbf_gradient_loop(svc.support_vectors_, svc.dual_coef_[0], 2.0, path)
        np.testing.assert_allclose(E.relevance[n], (X[n] - mean) * integral, rtol=1e-8, atol=1e-11)


def test_mean_reference_first_order_and_bad_value(data):
    X, y, _ = data
    E = LRP(MODELS["rbf"](), taylor="first_order", taylor_reference="mean", target=1).fit(X, y).explain(X[:3])
    assert E.relevance.shape == (3, 4) and np.all(E.taylor_remainder != 0)
    with pytest.raises(ValueError, match="'taylor_reference' parameter of LRPTransformer"):
        LRP(MODELS["rbf"](), taylor_reference="median").fit(X, y)


def test_auto_reference_is_the_mean_for_exact_and_a_root_for_first_order(data):
    X, y, _ = data
    svc = FrozenEstimator(MODELS["rbf"]().fit(X, y))
    for taylor, reference in (("exact", "mean"), ("first_order", "root")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TaylorRemainderWarning)
            auto = LRP(svc, taylor=taylor).fit(X).explain(X[:6])
            pinned = LRP(svc, taylor=taylor, taylor_reference=reference).fit(X).explain(X[:6])
        np.testing.assert_array_equal(auto.relevance, pinned.relevance)
        np.testing.assert_array_equal(auto.root_point, pinned.root_point)
    assert LRP(svc).get_params()["taylor_reference"] == "auto"


def test_overflowing_input_is_named_at_the_mean(data):
    X, y, _ = data
    lrp = LRP(FrozenEstimator(SVC(kernel="rbf", gamma=1.0).fit(X, y)), taylor_reference="mean").fit(X)
    with pytest.raises(ValueError, match=r"and the training mean overflow float64.*Rescale"):
        lrp.explain(X[:3] * 1e200)

"""sklrp.nn: the torch LRP engine against slow loop-based references of the thesis formulas.

The references build every layer's weight matrix w_ij with explicit loops over
output positions and kernel offsets, and apply the rules of Table 2.1 / Section
2.3.1 neuron by neuron (loops over i, j), one sample at a time.
"""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from sklrp.nn import Add, Composite, Concat, fold_batchnorm, forward, lrp
from sklrp.rules import ZB, AbsZ, AlphaBeta, Epsilon, Flat, Gamma, WSquare, Z, ZBox, ZPlus

torch.set_num_threads(1)
D = torch.float64


# ----------------------------------------------------------------------------- references
def conv_matrix(m, in_shape):
    """Dense (n_in, n_out) matrix, (n_out,) bias and (n_in, n_out) connectivity of a ConvNd layer, built with loops.

    An input is connected to an output unit when a kernel position maps onto it (zero padding is not an
    input), whatever the weight's value (the receptive field of Eq. (2.27)).
    """
    C, *L = in_shape
    d = len(L)
    k, s, p, dil = m.kernel_size, m.stride, m.padding, m.dilation
    out = [(L[t] + 2 * p[t] - dil[t] * (k[t] - 1) - 1) // s[t] + 1 for t in range(d)]
    Co, g = m.out_channels, m.groups
    cin_g, cout_g = C // g, Co // g
    w = m.weight.detach().numpy()
    W = np.zeros((C * int(np.prod(L)), Co * int(np.prod(out))))
    conn = np.zeros(W.shape, dtype=bool)
    for co in range(Co):
        grp = co // cout_g
        for opos in itertools.product(*[range(o) for o in out]):
            j = np.ravel_multi_index((co, *opos), (Co, *out))
            for ci in range(cin_g):
                for kpos in itertools.product(*[range(kk) for kk in k]):
                    ipos = [opos[t] * s[t] - p[t] + kpos[t] * dil[t] for t in range(d)]
                    if all(0 <= ipos[t] < L[t] for t in range(d)):
                        i = np.ravel_multi_index((grp * cin_g + ci, *ipos), (C, *L))
                        W[i, j] += w[(co, ci, *kpos)]
                        conn[i, j] = True
    b = np.zeros(W.shape[1]) if m.bias is None else np.repeat(m.bias.detach().numpy(), int(np.prod(out)))
    return W, b, conn


def pool_windows(m, in_shape):
    """Input index lists of each output unit of a 2-D pooling layer (padding skipped)."""
    C, H, Wd = in_shape
    if isinstance(m, nn.AdaptiveAvgPool2d):
        oh, ow = (m.output_size, m.output_size) if isinstance(m.output_size, int) else m.output_size
        rows = [(int(np.floor(a * H / oh)), int(np.ceil((a + 1) * H / oh))) for a in range(oh)]
        cols = [(int(np.floor(a * Wd / ow)), int(np.ceil((a + 1) * Wd / ow))) for a in range(ow)]
        wins = []
        for c in range(C):
            for r0, r1 in rows:
                for c0, c1 in cols:
                    wins.append([np.ravel_multi_index((c, y, x), in_shape)
                                 for y in range(r0, r1) for x in range(c0, c1)])
        return wins
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
    s = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
    p = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
    oh, ow = (H + 2 * p[0] - k[0]) // s[0] + 1, (Wd + 2 * p[1] - k[1]) // s[1] + 1
    wins = []
    for c in range(C):
        for a in range(oh):
            for bb in range(ow):
                wins.append([np.ravel_multi_index((c, y, x), in_shape)
                             for y in range(a * s[0] - p[0], a * s[0] - p[0] + k[0])
                             for x in range(bb * s[1] - p[1], bb * s[1] - p[1] + k[1])
                             if 0 <= y < H and 0 <= x < Wd])
    return wins


def ref_rule(rule, W, b, x, R, conn=None, shape=None):
    """One rule of Table 2.1 applied with loops over i and j (one sample). Returns (R_in, R_bias).

    ``conn[i, j]``: input i is connected to unit j (None: a dense layer, every input is). ``shape``: the
    layer input's per-sample shape (for zB bounds shaped like a sample).
    """
    n_in, n_out = W.shape
    r_in, r_b = np.zeros(n_in), 0.0
    if isinstance(rule, ZBox):
        shape = (n_in,) if shape is None else shape
        lo, hi = (np.broadcast_to(np.asarray(v, dtype=float), shape).ravel() for v in (rule.low, rule.high))
    for j in range(n_out):
        if isinstance(rule, Flat):  # Eq. (2.27): z_ij = 1 over the receptive field
            field = [i for i in range(n_in) if conn is None or conn[i, j]]
            for i in field:
                r_in[i] += R[j] / len(field)
            continue
        if isinstance(rule, WSquare):  # Eq. (2.28)
            den = sum(W[i, j] ** 2 for i in range(n_in))
            for i in range(n_in):
                r_in[i] += W[i, j] ** 2 / den * R[j]
            continue
        z = [x[i] * W[i, j] for i in range(n_in)]
        if isinstance(rule, ZBox):  # z_ij = x_i w_ij - l_i w+_ij - h_i w-_ij, bias ignored
            zz = [x[i] * W[i, j] - lo[i] * max(W[i, j], 0) - hi[i] * min(W[i, j], 0) for i in range(n_in)]
            den = sum(zz)
            for i in range(n_in):
                r_in[i] += zz[i] / den * R[j] if den != 0 else 0.0
            continue
        if isinstance(rule, AbsZ):  # Eq. (2.7): |z_ij| / sum_i' |z_i'j|, bias ignored
            den = sum(abs(v) for v in z)
            for i in range(n_in):
                r_in[i] += abs(z[i]) / den * R[j] if den != 0 else 0.0
            continue
        if isinstance(rule, Gamma):  # Montavon et al. 2019: x_i (w_ij + gamma w+_ij), bias b_j + gamma b+_j
            g = rule.gamma
            zg = [x[i] * (W[i, j] + g * max(W[i, j], 0)) for i in range(n_in)]
            bg = b[j] + g * max(b[j], 0)
            den = sum(zg) + bg
            if den != 0:
                for i in range(n_in):
                    r_in[i] += zg[i] / den * R[j]
                r_b += bg / den * R[j]
            continue
        if isinstance(rule, AlphaBeta):  # Eqs. (2.24)-(2.26), bias split into its parts
            zp = sum(max(v, 0) for v in z) + max(b[j], 0)
            zn = sum(min(v, 0) for v in z) + min(b[j], 0)
            for i in range(n_in):
                if zp != 0:
                    r_in[i] += rule.alpha * max(z[i], 0) / zp * R[j]
                if zn != 0:
                    r_in[i] += rule.beta * min(z[i], 0) / zn * R[j]
            r_b += (rule.alpha * max(b[j], 0) / zp if zp else 0) * R[j]
            r_b += (rule.beta * min(b[j], 0) / zn if zn else 0) * R[j]
            continue
        zj = sum(z) + b[j]
        if isinstance(rule, Epsilon):  # Eq. (2.22), sign(0) = +1
            zj = zj + rule.epsilon * (1.0 if zj >= 0 else -1.0)
        if zj == 0:
            continue
        for i in range(n_in):
            r_in[i] += z[i] / zj * R[j]
        r_b += b[j] / zj * R[j]
    return r_in, r_b


def ref_maxpool(wins, x, R, flat=False):
    """Eqs. (2.33)-(2.35): winners split R_j evenly; the flat variant spreads over the window."""
    r_in = np.zeros(x.size)
    for j, win in enumerate(wins):
        vals = [x[i] for i in win]
        chosen = win if flat else [i for i in win if x[i] == max(vals)]
        for i in chosen:
            r_in[i] += R[j] / len(chosen)
    return r_in


def ref_avgpool(wins, x, R, flat=False):
    """Average pooling as a linear layer with w_ij = 1/n (Section 2.3.1), z-rule or flat."""
    r_in = np.zeros(x.size)
    for j, win in enumerate(wins):
        if flat:
            for i in win:
                r_in[i] += R[j] / len(win)
            continue
        zj = sum(x[i] for i in win)  # the 1/n cancels between z_ij and z_j
        for i in win:
            r_in[i] += x[i] / zj * R[j] if zj != 0 else 0.0
    return r_in


def ref_lrp(net, x, composite, weights):
    """Loop-based LRP of a Sequential (one sample at a time). Returns (R, R_bias) as numpy."""
    mods = list(net)
    out_r, out_b = [], []
    for n in range(x.shape[0]):
        acts = [x[n:n + 1]]
        with torch.no_grad():
            for m in mods:
                acts.append(m(acts[-1]))
        if isinstance(mods[-1], (nn.Softmax, nn.LogSoftmax)):
            mods, acts = mods[:-1], acts[:-1]
        R = (weights[n] * acts[-1][0]).numpy().ravel()
        rb = 0.0
        position = sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in mods)
        for m, a in zip(reversed(mods), reversed(acts[:-1])):
            xa = a[0].numpy().ravel()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                position -= 1
                if isinstance(m, nn.Linear):
                    W, b = m.weight.detach().numpy().T, (np.zeros(m.out_features) if m.bias is None
                                                         else m.bias.detach().numpy())
                    conn = None
                else:
                    W, b, conn = conv_matrix(m, tuple(a.shape[1:]))
                R, r = ref_rule(composite.rule_for(m, position), W, b, xa, R, conn, tuple(a.shape[1:]))
                rb += r
            elif isinstance(m, nn.MaxPool2d):
                R = ref_maxpool(pool_windows(m, tuple(a.shape[1:])), xa, R, composite.is_flat(position))
            elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
                R = ref_avgpool(pool_windows(m, tuple(a.shape[1:])), xa, R, composite.is_flat(position))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):  # Eq. (2.54)
                C = a.shape[1]
                s = (m.weight / torch.sqrt(m.running_var + m.eps)).detach().numpy()
                beta = (m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)).detach().numpy()
                per = xa.size // C
                R_new = np.zeros_like(xa)
                for i in range(xa.size):
                    c = i // per
                    z = xa[i] * s[c] + beta[c]
                    R_new[i] = xa[i] * s[c] * R[i] / z
                    rb += beta[c] * R[i] / z
                R = R_new
            # activations, Flatten, Dropout: identity (Eq. (2.37))
        out_r.append(R.reshape(x.shape[1:]))
        out_b.append(rb)
    return np.stack(out_r), np.array(out_b)


def one_hot_pred(net, x):
    with torch.no_grad():
        s = net(x)
    return torch.nn.functional.one_hot(s.argmax(1), s.shape[1]).to(D)


def seeded(seed=0):
    torch.manual_seed(seed)
    return np.random.RandomState(seed)


def mlp(act=nn.ReLU, bias=True):
    seeded(0)
    return nn.Sequential(nn.Linear(5, 7, bias=bias), act(), nn.Linear(7, 6, bias=bias), act(),
                         nn.Linear(6, 3, bias=bias)).to(D)


def cnn(bias=True):
    seeded(1)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=1, groups=2, bias=bias), nn.ReLU(),
        nn.Conv2d(4, 6, 2, padding=1, dilation=2, bias=bias), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.3),
        nn.Linear(24, 3, bias=bias),
    ).to(D).eval()


RULES = [Z(), Epsilon(0.1), AlphaBeta(2.0, -1.0), ZPlus(), Flat(), WSquare(), ZB(-1.0, 1.5), Gamma(0.25), AbsZ()]


# ----------------------------------------------------------------------------- reference tests
@pytest.mark.parametrize("rule", RULES, ids=lambda r: repr(r))
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_mlp_rules_match_loop_reference(rule, act):
    net = mlp(act)
    x = torch.randn(3, 5, dtype=D).clamp(-1, 1.5)
    comp = Composite(rule)
    res = lrp(net, x, comp)
    ref_r, ref_b = ref_lrp(net, x, comp, one_hot_pred(net, x))
    np.testing.assert_allclose(res.relevance.numpy(), ref_r, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(res.bias.numpy(), ref_b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("comp", [
    Composite(Z()),
    Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0)),
    Composite(Epsilon(0.01), conv_rule=ZPlus(), input_rule=ZB(-3.0, 3.0)),
    Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0), flat_depth=1),
    Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0), flat_depth=2),
    Composite(WSquare()),
    # beyond Table 2.1: gamma, the magnitude rule of Eq. (2.7), zB with bounds shaped like one image (C, H, W)
    # or per channel (C, 1, 1)
    Composite(Epsilon(0.01), conv_rule=Gamma(0.25)),
    Composite(AbsZ()),
    Composite(Epsilon(0.01), conv_rule=ZPlus(), input_rule=ZBox(np.full((2, 8, 8), -3.0), np.full((2, 8, 8), 2.5))),
    Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0), input_rule=ZBox([[[-3.0]], [[-2.0]]], [[[2.0]], [[3.5]]])),
], ids=["z", "eps+a2b1", "eps+zplus+zb", "flat1", "flat2", "wsquare", "gamma", "absz", "zbox-CHW", "zbox-per-channel"])
def test_cnn_composites_match_loop_reference(comp):
    """Stride, padding, dilation, groups, max/adaptive-avg pooling, flat depth (Sections 5.4.1-5.4.2)."""
    net = cnn()
    x = torch.randn(3, 2, 8, 8, dtype=D)
    res = lrp(net, x, comp)
    ref_r, ref_b = ref_lrp(net, x, comp, one_hot_pred(net, x))
    np.testing.assert_allclose(res.relevance.numpy(), ref_r, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(res.bias.numpy(), ref_b, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("rule", [Z(), AlphaBeta(2.0, -1.0), Flat()], ids=repr)
def test_conv1d_conv3d_match_loop_reference(dim, rule):
    seeded(2)
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[dim]
    net = nn.Sequential(conv(2, 4, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten()).to(D)
    shape = (2, 7) if dim == 1 else (2, 4, 5, 3)
    x = torch.randn(2, *shape, dtype=D)
    with torch.no_grad():
        k = net(x).shape[1]
    w = torch.randn(2, k, dtype=D)
    res = lrp(net, x, Composite(rule), target=w)
    ref_r, _ = ref_lrp(net, x, Composite(rule), w)
    np.testing.assert_allclose(res.relevance.numpy(), ref_r, rtol=1e-9, atol=1e-11)


def test_maxpool_ties_are_split_evenly():
    """Eq. (2.35): tied maxima share R_j; overlapping windows and padding included."""
    seeded(3)
    net = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(9, 2)).to(D)
    x = torch.tensor(np.random.RandomState(0).randint(0, 3, size=(2, 1, 6, 6)), dtype=D)  # many ties
    res = lrp(net, x, Composite(Z()))
    ref_r, _ = ref_lrp(net, x, Composite(Z()), one_hot_pred(net, x))
    np.testing.assert_allclose(res.relevance.numpy(), ref_r, rtol=1e-10, atol=1e-12)
    total = res.relevance.flatten(1).sum(1) + res.bias
    np.testing.assert_allclose(total.numpy(), res.output.numpy(), rtol=1e-10)
    # non-overlapping windows (the reshaping fast path), input not a multiple of the kernel
    net2 = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9, 2)).to(D)
    x2 = torch.tensor(np.random.RandomState(1).randint(0, 3, size=(2, 1, 7, 7)), dtype=D)
    for comp in (Composite(Z()), Composite(Z(), flat_depth=1)):
        res2 = lrp(net2, x2, comp)
        ref2, _ = ref_lrp(net2, x2, comp, one_hot_pred(net2, x2))
        np.testing.assert_allclose(res2.relevance.numpy(), ref2, rtol=1e-10, atol=1e-12)
    # a window of four equal values hands each of them a quarter
    pool = nn.Sequential(nn.MaxPool2d(2), nn.Flatten()).to(D)
    r = lrp(pool, torch.ones(1, 1, 2, 2, dtype=D), Composite(Z()), target=0).relevance
    np.testing.assert_allclose(r.numpy().ravel(), [0.25] * 4)


def test_maxpool_ceil_mode_and_dilation_conserve():
    seeded(4)
    for mp in [nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.MaxPool2d(2, dilation=2), nn.MaxPool1d(3, 2, 1)]:
        shape = (1, 7) if isinstance(mp, nn.MaxPool1d) else (1, 7, 7)
        net = nn.Sequential(mp, nn.Flatten()).to(D)
        x = torch.rand(2, *shape, dtype=D)
        res = lrp(net, x, Composite(Z()), target="all")
        np.testing.assert_allclose(res.relevance.flatten(1).sum(1).numpy(), res.output.numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------- conservation and gradient
@pytest.mark.parametrize("make", [lambda: mlp(bias=False), lambda: cnn(bias=False)], ids=["mlp", "cnn"])
def test_z_rule_bias_free_relu_conserves_exactly(make):
    net = make()
    x = torch.randn(4, *((5,) if isinstance(net[0], nn.Linear) else (2, 8, 8)), dtype=D)
    res = lrp(net, x, Composite(Z()))
    assert np.abs(res.relevance.flatten(1).sum(1).numpy() - res.output.numpy()).max() < 1e-8
    assert np.all(res.bias.numpy() == 0)


@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_z_rule_with_bias_conserves_with_absorbed_bias(make):
    net = make()
    x = torch.randn(4, *((5,) if isinstance(net[0], nn.Linear) else (2, 8, 8)), dtype=D)
    res = lrp(net, x, Composite(Z()))
    total = res.relevance.flatten(1).sum(1) + res.bias
    assert np.abs(total.numpy() - res.output.numpy()).max() < 1e-8
    assert np.abs(res.bias.numpy()).max() > 1e-6  # the biases did absorb something


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_z_rule_equals_gradient_times_input_for_relu_nets(make, bias):
    """Eq. (2.61)."""
    net = make(bias=bias)
    x = torch.randn(3, *((5,) if isinstance(net[0], nn.Linear) else (2, 8, 8)), dtype=D)
    res = lrp(net, x, Composite(Z()), target=1)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg)[:, 1].sum(), xg)
    np.testing.assert_allclose(res.relevance.numpy(), (g * x).numpy(), rtol=1e-9, atol=1e-12)


def test_all_outputs_equal_sum_of_per_class_maps():
    """Fig. 2.8: relevance is linear in the initial relevance."""
    net = cnn()
    x = torch.randn(3, 2, 8, 8, dtype=D)
    comp = Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0), flat_depth=1)
    total = lrp(net, x, comp, target="all")
    per_class = sum(lrp(net, x, comp, target=k).relevance for k in range(3))
    np.testing.assert_allclose(total.relevance.numpy(), per_class.numpy(), rtol=1e-9, atol=1e-12)


def test_epsilon_residual_is_bounded_by_stabiliser():
    net = mlp()
    x = torch.randn(5, 5, dtype=D)
    small = lrp(net, x, Composite(Epsilon(1e-9)))
    large = lrp(net, x, Composite(Epsilon(10.0)))
    res_small = (small.output - small.relevance.sum(1) - small.bias).abs()
    res_large = (large.output - large.relevance.sum(1) - large.bias).abs()
    assert res_small.max() < 1e-6
    assert torch.all(res_large >= res_small - 1e-12) and res_large.max() > 1e-3


# ----------------------------------------------------------------------------- BatchNorm
def _bn_net(bn_after_relu=False):
    seeded(5)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 5 * 5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).to(D)
    for m in net:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def test_batchnorm_matches_eq_2_54_reference():
    net = _bn_net()
    x = torch.randn(3, 2, 5, 5, dtype=D)
    comp = Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0))
    res = lrp(net, x, comp)
    ref_r, ref_b = ref_lrp(net, x, comp, one_hot_pred(net, x))
    np.testing.assert_allclose(res.relevance.numpy(), ref_r, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(res.bias.numpy(), ref_b, rtol=1e-8, atol=1e-11)


def test_batchnorm_folded_equals_unfolded_under_z_rule():
    net = _bn_net()
    folded = fold_batchnorm(net)
    assert isinstance(net[1], nn.BatchNorm2d)  # the original is untouched
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[5], nn.Identity)
    x = torch.randn(4, 2, 5, 5, dtype=D)
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), net(x).numpy(), rtol=1e-10, atol=1e-12)
    a, b = lrp(net, x, Composite(Z())), lrp(folded, x, Composite(Z()))
    np.testing.assert_allclose(a.relevance.numpy(), b.relevance.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.bias.numpy(), b.bias.numpy(), rtol=1e-9, atol=1e-12)


def test_batchnorm_without_running_stats_is_rejected():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2, track_running_stats=False)).to(D)
    with pytest.raises(ValueError, match="running statistics"):
        lrp(net, torch.randn(4, 3, dtype=D), Composite(Z()))


# ----------------------------------------------------------------------------- LRN
def ref_lrn(m, x, R):
    """Eq. (2.46) with loops, torch's LRN z_j = x_j (k + a sum_{i in W_j} x_i^2)^-beta, a = alpha/size."""
    C = x.shape[0]
    a, c, k = m.alpha / m.size, m.beta, m.k
    r_in = np.zeros_like(x)
    for j in range(C):
        win = [i for i in range(C) if j - m.size // 2 <= i <= j + (m.size - 1) // 2]
        S = sum(x[i] ** 2 for i in win)
        v = {}
        for i in win:
            v[i] = x[j] / (k + a * x[j] ** 2) ** c / len(win)
            if i != j:
                v[i] -= 2 * a * c * x[i] ** 2 * x[j] / (k + a * S) ** (c + 1)
        den = sum(v.values())
        for i in win:
            r_in[i] += v[i] / den * R[j] if den != 0 else 0.0
    return r_in


def test_local_response_norm_matches_eq_2_46_reference():
    lrn = nn.LocalResponseNorm(size=4, alpha=0.5, beta=0.75, k=1.0)
    net = nn.Sequential(lrn, nn.Flatten()).to(D)
    x = torch.randn(2, 6, 2, 1, dtype=D)
    with torch.no_grad():
        k = net(x).shape[1]
    w = torch.randn(2, k, dtype=D)
    res = lrp(net, x, Composite(Z()), target=w)
    with torch.no_grad():
        R_top = (w * net(x)).reshape(x.shape)
    for n in range(2):
        for pos in itertools.product(range(2), range(1)):
            ref = ref_lrn(lrn, x[n, :, pos[0], pos[1]].numpy(), R_top[n, :, pos[0], pos[1]].numpy())
            np.testing.assert_allclose(res.relevance[n, :, pos[0], pos[1]].numpy(), ref, rtol=1e-9, atol=1e-12)
    # the Taylor weights sum to the approximation (2.45) of z_j; relevance is conserved exactly
    np.testing.assert_allclose(res.relevance.flatten(1).sum(1).numpy(), R_top.flatten(1).sum(1).numpy(), rtol=1e-9)


# ----------------------------------------------------------------------------- merges
class ResNetLike(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.inp = nn.Conv2d(1, 3, 3, padding=1, bias=bias)
        self.act1 = nn.ReLU()
        self.branch = nn.Conv2d(3, 3, 3, padding=1, bias=bias)
        self.add = Add()
        self.act2 = nn.ReLU()
        self.side = nn.Conv2d(3, 2, 1, bias=bias)
        self.cat = Concat(dim=1)
        self.pool = nn.AvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(5 * 2 * 2, 3, bias=bias)

    def forward(self, x):
        h = self.act1(self.inp(x))
        h = self.act2(self.add(self.branch(h), h))
        h = self.cat(h, self.side(h))
        return self.fc(self.flat(self.pool(h)))


@pytest.mark.parametrize("bias", [False, True])
def test_residual_add_and_concat_conserve_and_equal_gradient_times_input(bias):
    """Eqs. (2.38)-(2.41): no relevance is lost or doubled at the skip connection."""
    seeded(6)
    net = ResNetLike(bias).to(D)
    x = torch.randn(3, 1, 4, 4, dtype=D)
    res = lrp(net, x, Composite(Z()))
    total = res.relevance.flatten(1).sum(1) + res.bias
    np.testing.assert_allclose(total.numpy(), res.output.numpy(), rtol=1e-9, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    out = net(xg)
    (g,) = torch.autograd.grad((out * torch.nn.functional.one_hot(out.argmax(1), 3)).sum(), xg)
    np.testing.assert_allclose(res.relevance.numpy(), (g * x).numpy(), rtol=1e-9, atol=1e-12)


def test_add_splits_relevance_proportionally():
    add = Add()
    a = torch.tensor([[1.0, 3.0]], dtype=D)
    b = torch.tensor([[3.0, -1.0]], dtype=D)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.add = add

        def forward(self, x):
            return self.add(x[:, :2], x[:, 2:])

    res = lrp(Two(), torch.cat([a, b], 1), Composite(Z()), target=torch.ones(1, 2, dtype=D))
    # R_k = x_k / (a + b) * R with R = a + b
    np.testing.assert_allclose(res.relevance.numpy(), [[1.0, 3.0, 3.0, -1.0]])


def test_add_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        Add()(torch.ones(2, 3), torch.ones(3))


# ----------------------------------------------------------------------------- softmax
def test_terminal_softmax_is_removed():
    """Section 2.3.1: the logits are explained, not the probabilities."""
    net = mlp()
    with_sm = nn.Sequential(*net, nn.Softmax(dim=1))
    x = torch.randn(3, 5, dtype=D)
    a, b = lrp(net, x, Composite(Epsilon(0.01))), lrp(with_sm, x, Composite(Epsilon(0.01)))
    np.testing.assert_allclose(a.relevance.numpy(), b.relevance.numpy())
    np.testing.assert_allclose(b.scores.numpy(), net(x).detach().numpy())
    sig = nn.Sequential(*net, nn.Sigmoid())
    np.testing.assert_allclose(lrp(sig, x, Composite(Z())).output.numpy(), lrp(net, x, Composite(Z())).output.numpy())


def test_inner_softmax_is_rejected():
    net = nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1), nn.Linear(3, 2)).to(D)
    with pytest.raises(ValueError, match="Softmax"):
        lrp(net, torch.randn(2, 3, dtype=D), Composite(Z()))


# ----------------------------------------------------------------------------- model restored
def _state(net):
    return {
        "params": [p.detach().clone() for p in net.parameters()],
        "buffers": [b.detach().clone() for b in net.buffers()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "grads": [p.grad for p in net.parameters()],
        "training": [m.training for m in net.modules()],
        "inplace": [getattr(m, "inplace", None) for m in net.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in net.modules()],
    }


def _assert_same(a, b):
    for pa, pb in zip(a["params"] + a["buffers"], b["params"] + b["buffers"]):
        assert torch.equal(pa, pb)
    for key in ("requires_grad", "grads", "training", "inplace", "hooks"):
        assert a[key] == b[key], key


def test_model_is_unchanged_after_explaining():
    net = _bn_net()
    net[2].inplace = True
    net.train()
    net[0].weight.requires_grad_(False)
    before = _state(net)
    lrp(net, torch.randn(2, 2, 5, 5, dtype=D), Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0)))
    _assert_same(before, _state(net))


class Boom(nn.Identity):  # a supported (pass-through) layer that fails mid-way
    def forward(self, x):
        raise RuntimeError("boom")


class Weird(nn.Module):  # an unsupported leaf with parameters
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.w


@pytest.mark.parametrize("bad, error, match", [
    (Boom(), ValueError, "network failed on x .*: boom"),  # torch errors inside forward, wrapped
    (Weird(), TypeError, "Weird"),
    (nn.LSTM(3, 3), TypeError, "LSTM"),
])
def test_model_is_restored_after_an_exception(bad, error, match):
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True), bad, nn.Linear(3, 2)).to(D).train()
    before = _state(net)
    with pytest.raises(error, match=match):
        lrp(net, torch.randn(2, 3, dtype=D), Composite(Z()))
    _assert_same(before, _state(net))
    assert net.training


@pytest.mark.parametrize("where", ["input", "weight"])
def test_nonfinite_network_output_is_an_error_not_zero_relevance(where):
    # the rules set non-finite quotients to 0, so NaN must be caught before they run
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).to(D)
    x = torch.randn(2, 3, dtype=D)
    if where == "input":
        x[1, 0] = float("nan")
    else:
        with torch.no_grad():
            net[2].weight[0, 0] = float("inf")
    before = _state(net)
    with pytest.raises(ValueError, match="NaN or infinity"):
        lrp(net, x, Composite(Epsilon(0.01)))
    _assert_same(before, _state(net))


def test_forward_pass_relevance_only_once_and_checks_weights():
    fp = forward(mlp(), torch.randn(2, 5, dtype=D), Composite(Z()))
    with pytest.raises(ValueError, match="shape"):
        fp.relevance(torch.ones(2, 5, dtype=D))
    fp.relevance(torch.ones(2, 3, dtype=D))
    with pytest.raises(RuntimeError, match="once"):
        fp.relevance(torch.ones(2, 3, dtype=D))


def test_composite_validation():
    with pytest.raises(ValueError, match="flat_depth"):
        Composite(Z(), flat_depth=-1)
    with pytest.raises(TypeError, match="Rule"):
        Composite("epsilon")
    with pytest.raises(TypeError, match="padding_mode"):
        lrp(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular")).to(D),
            torch.randn(1, 1, 5, dtype=D), Composite(Z()), target="all")


# ----------------------------------------------------------------------------- more layer forms
def test_conv_same_padding_matches_numeric_padding():
    seeded(7)
    same = nn.Conv2d(2, 3, 3, padding="same").to(D)
    numeric = nn.Conv2d(2, 3, 3, padding=1).to(D)
    numeric.load_state_dict(same.state_dict())
    x = torch.randn(2, 2, 5, 5, dtype=D)
    for rule in (Epsilon(0.1), AlphaBeta(2.0, -1.0), Flat()):
        a = lrp(nn.Sequential(same, nn.Flatten()), x, Composite(rule), target="all")
        b = lrp(nn.Sequential(numeric, nn.Flatten()), x, Composite(rule), target="all")
        np.testing.assert_allclose(a.relevance.numpy(), b.relevance.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("pool", [
    nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    nn.AvgPool2d(3, stride=2, padding=1),
    nn.AdaptiveAvgPool2d((2, 3)),
    nn.AvgPool1d(2),
], ids=["nopad-ceil", "pad", "adaptive", "1d"])
def test_avgpool_forms_z_rule_is_gradient_times_input_and_flat_conserves(pool):
    """Average pooling is linear (Section 2.3.1): the z-rule equals gradient x input."""
    shape = (2, 7) if isinstance(pool, nn.AvgPool1d) else (2, 7, 6)
    net = nn.Sequential(pool, nn.Flatten()).to(D)
    x = torch.rand(2, *shape, dtype=D) + 0.1
    with torch.no_grad():
        w = torch.randn(2, net(x).shape[1], dtype=D)
    res = lrp(net, x, Composite(Z()), target=w)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg), xg, w)
    np.testing.assert_allclose(res.relevance.numpy(), (g * x).numpy(), rtol=1e-10, atol=1e-13)
    flat = lrp(net, x, Composite(Z(), flat_depth=1), target=w)
    np.testing.assert_allclose(flat.relevance.flatten(1).sum(1).numpy(), flat.output.numpy(), rtol=1e-10)


def test_linear_on_sequences_conserves():
    seeded(8)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.Flatten()).to(D)
    x = torch.randn(2, 6, 4, dtype=D)  # (n, T, d)
    res = lrp(net, x, Composite(Z()), target="all")
    total = res.relevance.flatten(1).sum(1) + res.bias
    np.testing.assert_allclose(total.numpy(), res.output.numpy(), rtol=1e-10)
    assert res.relevance.shape == x.shape


# ----------------------------------------------------------------------------- fast paths (issue 4)
def test_alpha_beta_float32_matches_float64():
    """a2b1 computes z- = z - z+ from the layer output (one convolution fewer): in float32 it
    stays as close to the float64 result as separate convolutions are (~1e-6 of max |R|)."""
    seeded(9)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    x = torch.randn(4, 3, 12, 12)
    comp = Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0))
    w = one_hot_pred(net.double(), x.double())
    r64 = lrp(net, x.double(), comp, target=w).relevance
    r32 = lrp(net.float(), x, comp, target=w.float()).relevance.double()
    assert float((r32 - r64).abs().max() / r64.abs().max()) < 1e-5


def test_units_with_zero_output_pass_no_relevance():
    """0/0 := 0 and R/0 := 0: z_j = 1 - 1 = 0 under the z-rule; an empty positive part under alpha-beta."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False)).to(D)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]], dtype=D))
    x = torch.tensor([[1.0, 1.0]], dtype=D)
    w = torch.tensor([[1.0, 0.0]], dtype=D)
    for rule in (Z(), Epsilon(0.0)):
        r = lrp(net, x, Composite(rule), target=w).relevance
        assert torch.equal(r, torch.zeros_like(r))
    r = lrp(net, torch.tensor([[0.0, 1.0]], dtype=D), Composite(AlphaBeta(2.0, -1.0)), target=w).relevance
    # unit 0: z+ = 0 passes nothing; z- = -1 = z-_1 gives input 1 beta * z-_1 / z- * R = -1 * 1 * (-1)
    np.testing.assert_allclose(r.numpy(), [[0.0, 1.0]])


def test_maxpool_with_infinite_maxima_uses_exact_comparison():
    """Tiled max pooling compares by arithmetic; an infinite maximum is compared exactly (inf - inf is NaN).

    ``lrp`` itself rejects a non-finite network output, so the layer step is called directly
    (an infinite activation can still occur inside a net whose output is finite).
    """
    from sklrp.nn.layers import maxpool_backward

    pool = nn.MaxPool2d(2)
    x = torch.tensor([[[[1.0, float("inf")], [0.0, 2.0]]]], dtype=D)
    r, _ = maxpool_backward(pool, False, x, pool(x), torch.full((1, 1, 1, 1), 3.0, dtype=D))
    np.testing.assert_array_equal(r.numpy().ravel(), [0.0, 3.0, 0.0, 0.0])


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_maxpool_window_and_offset_paths_agree_with_ties(dims):
    """Non-overlapping max pooling runs by window views (GPUs) or by offsets (CPUs): both are
    Eq. (2.35) with ties split evenly, and equal the general windowed implementation."""
    from sklrp.nn import layers

    pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims](2)
    x = torch.tensor(np.random.RandomState(dims).randint(0, 3, size=(2, 3) + (5,) * dims), dtype=D)  # many ties
    out = pool(x)
    relevance = torch.tensor(np.random.RandomState(0).randn(*out.shape), dtype=D)
    general = layers._maxpool_general(pool, False, x, out, relevance)
    for by_window in (True, False):
        r = layers._maxpool_tiled(pool, False, x, out, relevance, by_window=by_window)
        np.testing.assert_allclose(r.numpy(), general.numpy(), rtol=1e-12, atol=1e-14)
    flat = layers._maxpool_tiled(pool, True, x, out, relevance)
    np.testing.assert_allclose(flat.numpy(), layers._maxpool_general(pool, True, x, out, relevance).numpy(),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_paths_equal_cpu_in_float64():
    """On GPUs max pooling compares by window views and the scalars of the rules stay on the host;
    in float64 the relevance equals the CPU's (ties in the pools, an input layer of mixed sign)."""
    seeded(11)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)).to(D)
    x = torch.tensor(np.random.RandomState(0).randint(-2, 3, size=(3, 2, 8, 8)), dtype=D)  # ties everywhere
    for comp in (Composite(Epsilon(0.01)), Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0)),
                 Composite(Z(), conv_rule=ZPlus(), flat_depth=1)):
        cpu = lrp(net, x, comp)
        gpu = lrp(net.cuda(), x.cuda(), comp)
        net.cpu()
        np.testing.assert_allclose(gpu.relevance.cpu().numpy(), cpu.relevance.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gpu.bias.cpu().numpy(), cpu.bias.numpy(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- rules beyond Table 2.1, receptive fields
def test_zbox_with_per_feature_bounds_in_the_input_layer():
    net = mlp()
    x = torch.rand(4, 5, dtype=D) * 2 - 1
    lo, hi = -1.0 - np.arange(5.0) / 10, 1.0 + np.arange(5.0) / 5
    comp = Composite(Z(), input_rule=ZBox(lo, hi))
    res = lrp(net, x, comp)
    ref_r, ref_b = ref_lrp(net, x, comp, one_hot_pred(net, x))
    np.testing.assert_allclose(res.relevance.numpy(), ref_r, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(res.bias.numpy(), ref_b, rtol=1e-9, atol=1e-11)
    # bounds of the wrong shape name the problem instead of failing inside torch
    with pytest.raises(ValueError, match=r"bound low has shape \(2,\).*one input sample of shape \(5,\)"):
        lrp(net, x, Composite(Z(), input_rule=ZBox([0.0, 0.0], [1.0, 1.0])))


@pytest.mark.parametrize("rule", [Gamma(0.5), AbsZ(), ZBox(-2.0, 2.0)], ids=repr)
def test_new_rules_conserve(rule):
    """Gamma keeps the bias' share (Eq. (2.16)); the magnitude rule and zB ignore the bias, so every layer is
    exactly conservative onto its inputs."""
    net = mlp()
    x = torch.rand(6, 5, dtype=D) * 2 - 1
    res = lrp(net, x, Composite(rule), target="all")
    total = res.relevance.sum(1) + res.bias
    np.testing.assert_allclose(total.numpy(), res.output.numpy(), rtol=1e-9)
    if not isinstance(rule, Gamma):
        assert torch.all(res.bias == 0)


def test_flat_rule_spreads_over_the_receptive_field():
    """Eq. (2.27): every input connected to j shares R_j, zero weights included; zero padding is no input."""
    lin = nn.Linear(4, 1, bias=False).to(D)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0]], dtype=D))
    x = torch.randn(2, 4, dtype=D)
    r = lrp(nn.Sequential(lin), x, Composite(Flat()), target=torch.full((2, 1), 3.0, dtype=D) / lin(x).detach())
    np.testing.assert_allclose(r.relevance.numpy(), 0.75)
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False).to(D)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.0, 1.0, 0.0], [1.0, -2.0, 0.0], [0.0, 0.0, 0.5]]]], dtype=D))
    x = torch.randn(1, 1, 4, 4, dtype=D)
    net = nn.Sequential(conv, nn.Flatten())
    with torch.no_grad():
        out = net(x)
    w = 1.0 / out  # R_j = 1 at every output position
    r = lrp(net, x, Composite(Flat()), target=w).relevance[0, 0].numpy()
    # an interior output spreads 1/9 to each of its 9 inputs; a corner output has 4 inputs (5 are padding)
    W, _, conn = conv_matrix(conv, (1, 4, 4))
    expected = (conn / conn.sum(0)).sum(1).reshape(4, 4)
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    assert abs(expected[0, 0] - (1 / 4 + 2 / 6 + 1 / 9)) < 1e-12
    np.testing.assert_allclose(r.sum(), 16.0)


# ----------------------------------------------------------------------------- rules written once
class HalfEpsilon(Epsilon):
    """A user's rule: the epsilon rule with every scaled relevance halved (scale() overridden)."""

    def scale(self, relevance, den, unit=None, out=None):
        return super().scale(relevance, den, unit=unit).mul_(0.5)


def test_a_rule_subclass_runs_the_same_arithmetic_in_every_layer():
    """The nn fast path and the flattened linear-map path evaluate a subclass' own scale()."""
    from sklrp.rules import DenseMap

    net = mlp(bias=True)
    x = torch.randn(3, 5, dtype=D)
    half = lrp(net[:1], x, Composite(HalfEpsilon(0.1)), target="all")
    full = lrp(net[:1], x, Composite(Epsilon(0.1)), target="all")
    np.testing.assert_allclose(half.relevance.numpy(), 0.5 * full.relevance.numpy(), rtol=1e-12)
    lin = net[0]
    dense = HalfEpsilon(0.1).propagate(DenseMap(lin.weight.detach().T, lin.bias.detach()), x, lin(x).detach())
    np.testing.assert_allclose(half.relevance.numpy(), dense.input.numpy(), rtol=1e-12)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten()).to(D)
    xc = torch.randn(2, 2, 5, 5, dtype=D)
    a = lrp(conv, xc, Composite(HalfEpsilon(0.1)), target="all").relevance
    b = lrp(conv, xc, Composite(Epsilon(0.1)), target="all").relevance
    np.testing.assert_allclose(a.numpy(), 0.5 * b.numpy(), rtol=1e-12)


def test_rule_defined_by_propagate_only_runs_on_flattened_layers():
    """A rule that overrides propagate() (no parts) gets (n, features) tensors, as LinearMap promises."""
    from sklrp.rules import Rule

    class Plain(Rule):  # the z-rule written against the LinearMap interface directly
        def propagate(self, lmap, x, relevance):
            from sklrp.rules import LayerRelevance, safe_divide

            assert x.ndim == 2 and relevance.ndim == 2
            s = safe_divide(relevance, lmap.output(x))
            return LayerRelevance(lmap.backward(s) * x, (s * lmap.bias).sum(1))

    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(75, 2)).to(D)
    x = torch.randn(2, 2, 5, 5, dtype=D)
    a = lrp(net, x, Composite(Plain()))
    b = lrp(net, x, Composite(Z()))
    np.testing.assert_allclose(a.relevance.numpy(), b.relevance.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(a.bias.numpy(), b.bias.numpy(), rtol=1e-10, atol=1e-13)

"""Named composites (zennit's, defined as zennit defines them) and the generalised gamma rule.

The agreement with zennit itself is tested in tests/test_nn_zennit.py (peers environment); here
the composites are checked against their definitions, the rule against a loop reference, and the
``LRPTransformer(composite=...)`` parameter against sklrp.nn.lrp.
"""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from torch import nn

import sklrp
from sklrp.nn import COMPOSITES, Composite, TorchModel, lrp, make_composite
from sklrp.nn.composites import composite_from_config
from sklrp.propagators import RuleConfig
from sklrp.rules import (
    AlphaBeta,
    DenseMap,
    Epsilon,
    Flat,
    Gamma,
    GeneralizedGamma,
    LinearMap,
    Z,
    ZBox,
    ZPlus,
)

torch.set_num_threads(1)
D = torch.float64


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=float), dtype=D)


# ----------------------------------------------------------------------------- the generalised gamma rule
def ref_generalized_gamma(x, W, b, R, g):
    """Loops over i and j: units select their case by the sign of z_j (zennit's Gamma, Andeol et al. 2021)."""
    n_in, n_out = W.shape
    r_in, r_b = np.zeros(n_in), 0.0
    for j in range(n_out):
        z = sum(x[i] * W[i, j] for i in range(n_in)) + b[j]
        if z == 0:
            continue
        up = z > 0
        zz = []
        for i in range(n_in):
            w, wp, wn = W[i, j], max(W[i, j], 0.0), min(W[i, j], 0.0)
            if x[i] >= 0:
                zz.append(x[i] * (w + g * (wp if up else wn)))
            else:
                zz.append(x[i] * (w + g * (wn if up else wp)))
        bb = b[j] + g * (max(b[j], 0.0) if up else min(b[j], 0.0))
        den = sum(zz) + bb
        for i in range(n_in):
            r_in[i] += zz[i] / den * R[j]
        r_b += bb / den * R[j]
    return r_in, r_b


def _layer(seed, n=4, n_in=5, n_out=6, positive=False):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, n_in) if positive else rng.randn(n, n_in)
    return x, rng.randn(n_in, n_out), rng.randn(n_out) * 0.5, rng.randn(n, n_out)


@pytest.mark.parametrize("gamma", [0.0, 0.25, 2.0])
@pytest.mark.parametrize("positive", [True, False], ids=["x>=0", "mixed x"])
def test_generalized_gamma_matches_loop_reference_and_conserves(gamma, positive):
    x, W, b, R = _layer(1, positive=positive)
    res = GeneralizedGamma(gamma).propagate(DenseMap(_t(W), _t(b)), _t(x), _t(R))
    for n in range(x.shape[0]):
        ref, rb = ref_generalized_gamma(x[n], W, b, R[n], gamma)
        np.testing.assert_allclose(res.input[n].numpy(), ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.bias[n].item(), rb, rtol=1e-10, atol=1e-12)
    # Eq. (2.16): input and bias relevance add up to the upper relevance (no unit has z_j = 0 here)
    np.testing.assert_allclose((res.input.sum(1) + res.bias).numpy(), R.sum(1), rtol=1e-10)


def test_generalized_gamma_equals_gamma_for_positive_inputs_and_outputs():
    rng = np.random.RandomState(2)
    x, W, b = rng.rand(3, 5), np.abs(rng.randn(5, 4)) - 0.2, np.abs(rng.randn(4))
    assert np.all(x @ W + b > 0)
    lmap, R = DenseMap(_t(W), _t(b)), _t(rng.randn(3, 4))
    a = GeneralizedGamma(0.3).propagate(lmap, _t(x), R)
    c = Gamma(0.3).propagate(lmap, _t(x), R)
    np.testing.assert_allclose(a.input.numpy(), c.input.numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.bias.numpy(), c.bias.numpy(), rtol=1e-12)


def test_generalized_gamma_stays_bounded_where_gamma_diverges():
    """A unit with z_j < 0 that carries relevance (a residual sum hands it some): Gamma's denominator
    z_j + gamma * (positive part) vanishes here, the generalised rule's is at least |z_j|."""
    W, b = _t([[1.0], [-1.0]]), None
    x = _t([[1.0, 1.25]])  # z = -0.25; positive part 1.0; gamma 0.25 -> Gamma's denominator 0
    R = _t([[-0.25]])
    assert Gamma(0.25).propagate(DenseMap(W, b), x, R).input.abs().sum() == 0  # 0/0 := 0: all absorbed
    res = GeneralizedGamma(0.25).propagate(DenseMap(W, b), x, R)
    np.testing.assert_allclose(res.input.sum().item(), -0.25, rtol=1e-12)
    # z-_ij = (1 * 1, 1.25 * (-1 - 0.25)), denominator -0.5625: |denominator| >= |z_j|
    np.testing.assert_allclose(res.input.numpy(), [[0.25 / 0.5625, -0.25 * 1.5625 / 0.5625]], rtol=1e-12)


def test_generalized_gamma_on_convolutions_equals_its_dense_matrix():
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).to(D)
    x = torch.randn(2, 2, 5, 5, dtype=D)
    # the convolution's dense matrix, column by column
    eye = torch.eye(2 * 25, dtype=D).reshape(-1, 2, 5, 5)
    with torch.no_grad():
        W = (nn.functional.conv2d(eye, conv.weight, None, 2, 1)).reshape(50, -1)
        b = conv.bias[:, None].expand(3, 9).reshape(-1)
        out = conv(x)
    R = torch.randn_like(out)
    net = nn.Sequential(conv)
    res = lrp(net, x, Composite(GeneralizedGamma(0.5)), target=None)  # runs the layer path
    assert res.relevance.shape == x.shape
    from sklrp.nn.layers import conv_backward

    with torch.no_grad():
        r_in, rb = conv_backward(conv, GeneralizedGamma(0.5), x, out, R)
    dense = GeneralizedGamma(0.5).propagate(DenseMap(W, b), x.reshape(2, -1), R.reshape(2, -1))
    np.testing.assert_allclose(r_in.reshape(2, -1).numpy(), dense.input.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rb.numpy(), dense.bias.numpy(), rtol=1e-10, atol=1e-12)


def test_generalized_gamma_rejects_bad_gamma_and_maps_needing_parts():
    for bad in (-0.1, float("nan"), "a"):
        with pytest.raises(ValueError, match="gamma"):
            GeneralizedGamma(bad)
    assert not GeneralizedGamma().has_parts

    class PartsOnly(DenseMap):
        requires_parts = True
        description = "pooled descriptor mappings"

    with pytest.raises(TypeError, match="GeneralizedGamma rule is not defined for pooled descriptor mappings"):
        GeneralizedGamma().propagate(PartsOnly(_t([[1.0]])), _t([[1.0]]), _t([[1.0]]))
    assert isinstance(PartsOnly(_t([[1.0]])), LinearMap)


# ----------------------------------------------------------------------------- named composites
EXPECTED = {
    "epsilon_plus": (Epsilon(1e-3), ZPlus(), None),
    "epsilon_alpha2_beta1": (Epsilon(1e-3), AlphaBeta(2.0, -1.0), None),
    "epsilon_plus_flat": (Epsilon(1e-3), ZPlus(), Flat()),
    "epsilon_alpha2_beta1_flat": (Epsilon(1e-3), AlphaBeta(2.0, -1.0), Flat()),
    "epsilon_gamma_box": (Epsilon(1e-3), GeneralizedGamma(0.5), ZBox(-1.0, 2.0)),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_named_composites_are_zennits_definitions(name):
    kw = dict(epsilon=1e-3, gamma=0.5, low=-1.0, high=2.0, alpha=3.0, beta=-2.0)
    for spelling in (name, COMPOSITES[name], name.upper().replace("_", "-")):
        c = make_composite(spelling, **kw)
        assert (c.rule, c.conv_rule, c.input_rule, c.flat_depth) == (*EXPECTED[name], None)
    assert make_composite(name, flat_depth=2, **kw).flat_depth == 2


def test_make_composite_errors_list_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown rule or composite 'epsilon_gama_box'.*'zplus'.*epsilon_gamma_box"):
        make_composite("epsilon_gama_box")
    with pytest.raises(ValueError, match="conv_rule and input_rule cannot be given"):
        make_composite("epsilon_plus", conv_rule="z", input_rule="flat")
    assert make_composite("gamma", gamma=0.1).rule == Gamma(0.1)  # a rule name still names a rule


def vgg_like(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 3)).to(D).eval()


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_lrptransformer_composite_equals_lrp_with_make_composite(name):
    net = vgg_like()
    X = np.random.RandomState(0).rand(5, 3, 6, 6)
    lrp_ = sklrp.LRPTransformer(TorchModel(net, classes=[0, 1, 2]), composite=name, epsilon=1e-3, gamma=0.5,
                                low=0.0, high=1.0).fit(X)
    res = lrp(net, torch.as_tensor(X), make_composite(name, epsilon=1e-3, gamma=0.5, low=0.0, high=1.0))
    np.testing.assert_allclose(lrp_.transform(X), res.relevance.numpy(), rtol=1e-12, atol=1e-14)
    config = lrp_.get_chain().config
    assert config.composite == make_composite(name, epsilon=1e-3, gamma=0.5, low=0.0, high=1.0)
    assert composite_from_config(config) is config.composite and config.rule == Epsilon(1e-3)


def test_composite_parameter_is_searchable_and_checked():
    net = vgg_like()
    X = np.random.RandomState(1).rand(6, 3, 6, 6)
    base = sklrp.LRPTransformer(FrozenEstimator(TorchModel(net, classes=[0, 1, 2]).fit(X)),
                                composite="epsilon_gamma_box", epsilon=1e-3)
    assert clone(base).get_params()["composite"] == "epsilon_gamma_box"
    search = GridSearchCV(base, {"composite": ["epsilon_plus", "EpsilonGammaBox"], "gamma": [0.1, 1.0]},
                          scoring=sklrp.make_aopc_scorer(region_size=2, n_steps=2),
                          cv=[(np.arange(3), np.arange(3, 6))])
    search.fit(X)
    assert len(search.cv_results_["params"]) == 4 and np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    # gamma changes the explanation of epsilon_gamma_box only
    g1 = base.set_params(gamma=0.1).fit(X).transform(X)
    assert not np.allclose(g1, base.set_params(gamma=1.0).fit(X).transform(X))
    p1 = base.set_params(composite="epsilon_plus", gamma=0.1).fit(X).transform(X)
    np.testing.assert_allclose(p1, base.set_params(gamma=1.0).fit(X).transform(X))
    # flat_depth refines a named composite; a Composite instance is taken as is
    flat = base.set_params(composite="epsilon_plus", flat_depth=2).fit(X).get_chain().config.composite
    assert flat.flat_depth == 2
    own = Composite(Z(), conv_rule=ZPlus())
    assert base.set_params(composite=own, flat_depth=None).fit(X).get_chain().config.composite == own


@pytest.mark.parametrize("params, match", [
    (dict(composite="epsilon_gama_box"), r"unknown composite 'epsilon_gama_box'; expected one of epsilon_plus, "
                                         r"epsilon_alpha2_beta1, epsilon_plus_flat, epsilon_alpha2_beta1_flat, "
                                         r"epsilon_gamma_box"),
    (dict(composite="epsilon_plus", conv_rule="gamma"), r"composite='epsilon_plus' sets the rules of all layers; "
                                                        r"conv_rule cannot be given"),
    (dict(composite="epsilon_plus", rule="z"), "rule cannot be given"),
    (dict(composite=Composite(Z()), flat_depth=1), "a Composite sets the rules of all layers; flat_depth"),
    (dict(composite=3), "The 'composite' parameter of LRPTransformer must be"),
])
def test_composite_parameter_errors(params, match):
    X = np.random.RandomState(2).rand(3, 3, 6, 6)
    with pytest.raises(ValueError, match=match):
        sklrp.LRPTransformer(TorchModel(vgg_like(), classes=[0, 1, 2]), **params).fit(X)


def test_rule_config_composite_field_defaults_to_the_rules():
    cfg = RuleConfig(Epsilon(0.1), conv_rule=ZPlus(), flat_depth=1)
    assert cfg.composite is None
    assert composite_from_config(cfg) == Composite(Epsilon(0.1), ZPlus(), None, 1)

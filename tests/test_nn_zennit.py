"""Agreement of sklrp.nn with zennit (an independent LRP implementation) in float64.

zennit needs torchvision, which does not install beside the CPU torch of the
default environment; run these tests with ``make compare`` (it creates
``.venv-peers`` with zennit and runs this file). In the default environment they
are skipped.

Agreement is measured as ``max |R_sklrp - R_zennit| / max |R_zennit|`` per batch
and must be <= 1e-5. zennit's stabilisers (1e-6 by default) are set to 1e-30 so
that both implement the exact rules; sklrp uses 0/0 := 0 instead of a stabiliser.

Where the thesis and zennit differ, sklrp follows the thesis; the tests at the
end document each difference.

Also here, because torchvision is only installed in this environment: torchvision's
``resnet18`` and ``densenet121`` (random weights) explained as they are written, with
their ``x + identity``, ``torch.cat``, ``F.relu`` and functional pooling followed by
sklrp.nn.tracing: against zennit with its ``ResNetCanonizer`` (ResNet), against the same
network written with ``sklrp.nn.Add``, and against gradient x input, which LRP-0 equals
on ReLU networks without biases.
"""

import copy
import os

import numpy as np
import pytest
import torch
from torch import nn

if os.environ.get("SKLRP_REQUIRE_PEERS") == "1":  # make compare-test / CI: a missing zennit is a failure
    import zennit
else:
    zennit = pytest.importorskip(
        "zennit", reason="zennit (peer comparison) is not installed here: run `make compare` (.venv-peers)"
    )
from zennit import rules as zr
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    COMPOSITES as ZENNIT_COMPOSITES,
)
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.torchvision import ResNetCanonizer
from zennit.types import Convolution as ZConvolution
from zennit.types import Linear as ZLinear

from sklrp.nn import COMPOSITES, Add, Composite, fold_batchnorm, lrp, make_composite
from sklrp.nn.canonizers import batchnorm_pairs
from sklrp.rules import AlphaBeta, Epsilon, Gamma, GeneralizedGamma, Z, ZBox, ZPlus

D = torch.float64
TINY = 1e-30
EPS = 0.01
torch.set_num_threads(1)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 4)).to(D).eval()


def cnn():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 4),
    ).to(D).eval()


def bn_cnn(eps=1e-5):
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4),
    ).to(D)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.eps = eps
    return net.eval()


def inputs(net, n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 12) if isinstance(net[0], nn.Linear) else (n, 3, 16, 16)
    return torch.randn(*shape, generator=g, dtype=D)


def zennit_relevance(net, x, composite, weights):
    with Gradient(model=net, composite=composite) as attributor:
        _, rel = attributor(x, lambda out: out * weights)
    return rel.detach()


def predicted(net, x):
    with torch.no_grad():
        s = net(x)
    return torch.nn.functional.one_hot(s.argmax(1), s.shape[1]).to(D)


def rel_diff(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _eps_everywhere():
    return LayerMapComposite(layer_map_base(TINY) + [(ZLinear, zr.Epsilon(epsilon=EPS))])


def _zplus_everywhere():
    return LayerMapComposite(layer_map_base(TINY) + [(ZLinear, zr.ZPlus(stabilizer=TINY))])


CASES = {
    "epsilon": (lambda: Composite(Epsilon(EPS)), _eps_everywhere),
    "zplus": (lambda: Composite(ZPlus()), _zplus_everywhere),
    "eps+zplus": (lambda: Composite(Epsilon(EPS), conv_rule=ZPlus()),
                  lambda: EpsilonPlus(epsilon=EPS, stabilizer=TINY)),
    "eps+a2b1": (lambda: Composite(Epsilon(EPS), conv_rule=AlphaBeta(2.0, -1.0)),
                 lambda: EpsilonAlpha2Beta1(epsilon=EPS, stabilizer=TINY)),
    "eps+zplus+flat": (lambda: Composite(Epsilon(EPS), conv_rule=ZPlus(), flat_depth=1),
                       lambda: EpsilonPlusFlat(epsilon=EPS, stabilizer=TINY)),
    "eps+a2b1+flat": (lambda: Composite(Epsilon(EPS), conv_rule=AlphaBeta(2.0, -1.0), flat_depth=1),
                      lambda: EpsilonAlpha2Beta1Flat(epsilon=EPS, stabilizer=TINY)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("make_net", [mlp, cnn], ids=["mlp", "cnn"])
def test_agrees_with_zennit(make_net, case):
    net = make_net()
    x = inputs(net)
    ours, theirs = CASES[case]
    w = predicted(net, x)
    r_ours = lrp(net, x, ours(), target=w).relevance
    r_theirs = zennit_relevance(net, x, theirs(), w)
    assert rel_diff(r_ours, r_theirs) <= 1e-5


@pytest.mark.parametrize("case", ["eps+zplus", "eps+a2b1", "eps+a2b1+flat"])
def test_batchnorm_canonizer_agrees_with_zennit(case):
    """zennit's SequentialMergeBatchNorm vs sklrp.nn.fold_batchnorm (BN eps tiny, see below)."""
    net = bn_cnn(eps=1e-12)
    x = inputs(net)
    ours, theirs = CASES[case]
    w = predicted(net, x)
    r_ours = lrp(fold_batchnorm(net), x, ours(), target=w).relevance
    comp = theirs()
    comp.canonizers = [SequentialMergeBatchNorm()]
    r_theirs = zennit_relevance(net, x, comp, w)
    assert rel_diff(r_ours, r_theirs) <= 1e-5


def test_all_classes_at_once_agrees_with_zennit():
    net = cnn()
    x = inputs(net)
    w = torch.ones(x.shape[0], 4, dtype=D)
    ours, theirs = CASES["eps+a2b1"]
    assert rel_diff(lrp(net, x, ours(), target=w).relevance, zennit_relevance(net, x, theirs(), w)) <= 1e-5


# ----------------------------------------------------------------------------- documented differences
def test_difference_unfolded_batchnorm_thesis_eq_2_54_vs_zennit_pass():
    """Thesis Eq. (2.54): R_x = x s R_z / z, the mean and shift absorb relevance. zennit's
    composites pass relevance through an unfolded BatchNorm unchanged (``Pass``), so
    without the canonizer the two differ. With the z-rule sklrp's unfolded result equals
    the folded one (tested in test_nn.py); zennit's does not."""
    net = bn_cnn()
    x = inputs(net)
    w = predicted(net, x)
    r_ours = lrp(net, x, CASES["eps+a2b1"][0](), target=w).relevance
    r_theirs = zennit_relevance(net, x, CASES["eps+a2b1"][1](), w)
    assert rel_diff(r_ours, r_theirs) > 1e-3


def test_difference_alpha_beta_sign_convention():
    """Thesis: alpha + beta = 1 (a2b1 = AlphaBeta(2, -1)); zennit: alpha - beta = 1 (AlphaBeta(2, 1))."""
    with pytest.raises(ValueError, match="zennit"):
        AlphaBeta(2.0, 1.0)
    with pytest.raises(ValueError):
        zr.AlphaBeta(alpha=2.0, beta=-1.0)


def test_difference_default_stabiliser():
    """zennit adds a 1e-6 stabiliser to the z+/alpha-beta/flat/pooling denominators by
    default; sklrp divides exactly with 0/0 := 0. The maps still agree to ~1e-4."""
    net = cnn()
    x = inputs(net)
    w = predicted(net, x)
    r_ours = lrp(net, x, CASES["eps+a2b1"][0](), target=w).relevance
    r_default = zennit_relevance(net, x, EpsilonAlpha2Beta1(epsilon=EPS), w)
    assert rel_diff(r_ours, r_default) < 1e-2


def test_difference_zennit_merged_batchnorm_keeps_eps():
    """zennit's canonizer leaves each merged BatchNorm in place with weight 1, bias 0,
    mean 0, var 1, so it still divides by sqrt(1 + eps): every merged layer scales the
    output by ~(1 - eps/2). sklrp's fold_batchnorm replaces the layer by an Identity, so
    the folded net computes exactly the original function. With eps=1e-5 and three
    batch norms the maps differ by ~1.5e-5 (relative)."""
    net = bn_cnn(eps=1e-5)
    x = inputs(net)
    w = predicted(net, x)
    with torch.no_grad():
        np.testing.assert_allclose(fold_batchnorm(net)(x).numpy(), net(x).numpy(), rtol=1e-12, atol=1e-14)
    r_ours = lrp(fold_batchnorm(net), x, CASES["eps+a2b1"][0](), target=w).relevance
    comp = CASES["eps+a2b1"][1]()
    comp.canonizers = [SequentialMergeBatchNorm()]
    r_theirs = zennit_relevance(net, x, comp, w)
    assert 1e-6 < rel_diff(r_ours, r_theirs) < 1e-4


# ----------------------------------------------------------------------------- named composites, Gamma, ZBox
LOW, HIGH = -3.0, 3.0
GAMMA = 0.25

ZENNIT_NAMED = {
    "epsilon_plus": lambda **kw: EpsilonPlus(epsilon=EPS, stabilizer=TINY, **kw),
    "epsilon_alpha2_beta1": lambda **kw: EpsilonAlpha2Beta1(epsilon=EPS, stabilizer=TINY, **kw),
    "epsilon_plus_flat": lambda **kw: EpsilonPlusFlat(epsilon=EPS, stabilizer=TINY, **kw),
    "epsilon_alpha2_beta1_flat": lambda **kw: EpsilonAlpha2Beta1Flat(epsilon=EPS, stabilizer=TINY, **kw),
    "epsilon_gamma_box": lambda low=LOW, high=HIGH, **kw: EpsilonGammaBox(low=low, high=high, epsilon=EPS,
                                                                          gamma=GAMMA, stabilizer=TINY, **kw),
}


def ours_named(name, low=LOW, high=HIGH):
    return make_composite(name, epsilon=EPS, gamma=GAMMA, low=low, high=high)


def test_named_composites_are_zennits_registered_composites():
    for name, cls in COMPOSITES.items():
        assert ZENNIT_COMPOSITES[name].__name__ == cls


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_named_composite_agrees_with_zennit_on_a_vgg_like_cnn(name):
    net = cnn()
    x = inputs(net).clamp(LOW, HIGH)
    w = predicted(net, x)
    r_ours = lrp(net, x, ours_named(name), target=w).relevance
    assert rel_diff(r_ours, zennit_relevance(net, x, ZENNIT_NAMED[name](), w)) <= 1e-5


@pytest.mark.parametrize("name", [n for n in COMPOSITES if n != "epsilon_gamma_box"])
def test_named_composite_agrees_with_zennit_on_an_mlp(name):
    net = mlp()
    x = inputs(net)
    w = predicted(net, x)
    r_ours = lrp(net, x, ours_named(name), target=w).relevance
    assert rel_diff(r_ours, zennit_relevance(net, x, ZENNIT_NAMED[name](), w)) <= 1e-5


def test_epsilon_gamma_box_with_per_channel_bounds_agrees_with_zennit():
    net = cnn()
    x = inputs(net)
    low = torch.tensor([-3.0, -2.5, -4.0], dtype=D)[:, None, None]
    high = torch.tensor([3.0, 2.0, 4.0], dtype=D)[:, None, None]
    x = torch.maximum(torch.minimum(x, high), low)
    w = predicted(net, x)
    r_ours = lrp(net, x, ours_named("epsilon_gamma_box", low.numpy(), high.numpy()), target=w).relevance
    r_theirs = zennit_relevance(net, x, ZENNIT_NAMED["epsilon_gamma_box"](low=low[None], high=high[None]), w)
    assert rel_diff(r_ours, r_theirs) <= 1e-5


def _conv_rule_composite(zennit_rule):
    return LayerMapComposite(layer_map_base(TINY) + [(ZConvolution, zennit_rule),
                                                     (torch.nn.Linear, zr.Epsilon(epsilon=EPS))])


@pytest.mark.parametrize("gamma", [0.1, 0.25, 1.0])
def test_gamma_rule_agrees_with_zennit_on_non_negative_inputs(gamma):
    """sklrp.rules.Gamma (Montavon et al. 2019) is zennit's Gamma wherever inputs are >= 0 and relevance flows
    only through units with z_j > 0 (ReLU networks without residual sums)."""
    net = cnn()
    x = inputs(net).abs()
    w = predicted(net, x)
    theirs = zennit_relevance(net, x, _conv_rule_composite(zr.Gamma(gamma=gamma, stabilizer=TINY)), w)
    for rule in (Gamma(gamma), GeneralizedGamma(gamma)):
        r_ours = lrp(net, x, Composite(Epsilon(EPS), conv_rule=rule), target=w).relevance
        assert rel_diff(r_ours, theirs) <= 1e-5


def test_generalized_gamma_agrees_with_zennit_on_inputs_of_both_signs():
    net = cnn()
    x = inputs(net)
    w = predicted(net, x)
    theirs = zennit_relevance(net, x, _conv_rule_composite(zr.Gamma(gamma=GAMMA, stabilizer=TINY)), w)
    r_ours = lrp(net, x, Composite(Epsilon(EPS), conv_rule=GeneralizedGamma(GAMMA)), target=w).relevance
    assert rel_diff(r_ours, theirs) <= 1e-5


@pytest.mark.parametrize("make_net", [mlp, cnn], ids=["mlp", "cnn"])
def test_zbox_rule_agrees_with_zennit(make_net):
    net = make_net()
    x = inputs(net).clamp(LOW, HIGH)
    w = predicted(net, x)
    theirs = SpecialFirstLayerMapComposite(layer_map=layer_map_base(TINY) + [(ZLinear, zr.Epsilon(epsilon=EPS))],
                                           first_map=[(ZLinear, zr.ZBox(low=LOW, high=HIGH, stabilizer=TINY))])
    r_ours = lrp(net, x, Composite(Epsilon(EPS), input_rule=ZBox(LOW, HIGH)), target=w).relevance
    assert rel_diff(r_ours, zennit_relevance(net, x, theirs, w)) <= 1e-5


def test_difference_gamma_with_inputs_of_both_signs():
    """Gamma on a layer whose inputs take both signs: sklrp.rules.Gamma multiplies every input by
    w + gamma w+; zennit (and GeneralizedGamma) use w + gamma w- for negative inputs."""
    net = cnn()
    x = inputs(net)
    w = predicted(net, x)
    theirs = zennit_relevance(net, x, _conv_rule_composite(zr.Gamma(gamma=GAMMA, stabilizer=TINY)), w)
    r_ours = lrp(net, x, Composite(Epsilon(EPS), conv_rule=Gamma(GAMMA)), target=w).relevance
    assert rel_diff(r_ours, theirs) > 1e-3


def test_difference_epsilon_gamma_box_first_dense_layer():
    """zennit's EpsilonGammaBox gives the box rule to the first convolution; sklrp to the first linear-type
    layer. In a network that starts with a dense layer, zennit keeps epsilon there."""
    net = mlp()
    x = inputs(net).clamp(LOW, HIGH)
    w = predicted(net, x)
    theirs = zennit_relevance(net, x, ZENNIT_NAMED["epsilon_gamma_box"](), w)
    assert rel_diff(lrp(net, x, ours_named("epsilon_gamma_box"), target=w).relevance, theirs) > 1e-3
    assert rel_diff(lrp(net, x, Composite(Epsilon(EPS)), target=w).relevance, theirs) <= 1e-5


# ----------------------------------------------------------------------------- torchvision networks, unmodified
tv = pytest.importorskip("torchvision") if os.environ.get("SKLRP_REQUIRE_PEERS") != "1" else __import__("torchvision")


def _random_bn(net, shifts=True, eps=1e-12):
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_var.copy_(torch.rand(c, generator=g, dtype=D) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g, dtype=D) + 0.5)
            m.running_mean.copy_((torch.rand(c, generator=g, dtype=D) - 0.5) * 0.4 if shifts else torch.zeros(c))
            m.bias.data.copy_((torch.rand(c, generator=g, dtype=D) - 0.5) * 0.4 if shifts else torch.zeros(c))
            m.eps = eps  # zennit's merged batch norm still divides by sqrt(1 + eps) (see the difference test)
    return net.eval()


def resnet18(shifts=True):
    torch.manual_seed(4)
    return _random_bn(tv.models.resnet18(num_classes=10).to(D), shifts)


def image(n=2, size=64, seed=5):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_unmodified_resnet18_agrees_with_zennit_resnet_canonizer(name):
    """x + identity in torchvision's BasicBlock is Eq. (2.39) (zennit's canonizer inserts a Sum for it); batch
    norms folded into their convolutions by sklrp.nn.fold_batchnorm (zennit: the canonizer's merge)."""
    net = resnet18()
    x = image()
    w = predicted(net, x)
    r_ours = lrp(fold_batchnorm(net), x, make_composite(name, epsilon=EPS, gamma=GAMMA, low=0.0, high=1.0),
                 target=w).relevance
    theirs = ZENNIT_NAMED[name](**({"low": 0.0, "high": 1.0} if name == "epsilon_gamma_box" else {}),
                                canonizers=[ResNetCanonizer()])
    assert rel_diff(r_ours, zennit_relevance(net, x, theirs, w)) <= 1e-5


def test_unmodified_resnet18_equals_resnet18_written_with_add_modules():
    net, x = resnet18(), image()
    marked = copy.deepcopy(net)

    def forward(self, x):  # torchvision's BasicBlock.forward with its sum as an sklrp.nn.Add module
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.merge(out, identity))

    for block in marked.modules():
        if isinstance(block, tv.models.resnet.BasicBlock):
            block.merge = Add()
            block.forward = forward.__get__(block)
    for comp in (make_composite("epsilon_gamma_box", epsilon=EPS, low=0.0, high=1.0), Composite(Z())):
        a, b = lrp(net, x, comp), lrp(marked, x, comp)
        np.testing.assert_allclose(a.relevance.numpy(), b.relevance.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(a.bias.numpy(), b.bias.numpy(), rtol=1e-10, atol=1e-14)


def _gradient_times_input(net, x, w):
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((net(xg) * w).sum(), xg)
    return g * x


def _without_biases(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.zero_()
    return net


@pytest.mark.parametrize("make_net, size", [(lambda: resnet18(shifts=False), 64),
                                            (lambda: _densenet121(shifts=False), 32)], ids=["resnet18", "densenet121"])
def test_unmodified_torchvision_net_lrp0_equals_gradient_times_input(make_net, size):
    """LRP-0 of a ReLU network without biases is gradient x input: any functional merge, pooling or activation
    handled as a gradient instead of its LRP step would break the equality."""
    net = _without_biases(make_net())
    x = image(size=size)
    w = predicted(net, x)
    res = lrp(net, x, Composite(Z()), target=w)
    ref = _gradient_times_input(net, x, w)
    assert rel_diff(res.relevance, ref) <= 1e-9
    np.testing.assert_allclose(res.bias.numpy(), 0.0, atol=1e-12 * float(res.output.abs().max()))


def _densenet121(shifts=True):
    torch.manual_seed(6)
    return _random_bn(tv.models.densenet121(num_classes=10).to(D), shifts)


def test_unmodified_densenet121_conserves_and_folds_only_batch_norms_after_convolutions():
    """DenseNet: torch.cat routes (Eq. (2.41)), F.relu and F.adaptive_avg_pool2d in its forward get their steps,
    batch norms after a concatenation stay (Eq. (2.54)). zennit has no DenseNet canonizer (its sequential merge
    would fold a block's first batch norm into the previous block's last convolution, which does not feed it)."""
    net = _densenet121()
    x = image(size=32)
    w = predicted(net, x)
    res = lrp(net, x, Composite(Z()), target=w)
    np.testing.assert_allclose((res.relevance.flatten(1).sum(1) + res.bias).numpy(), res.output.numpy(),
                               rtol=1e-9, atol=1e-12)
    pairs = batchnorm_pairs(net)
    assert len(pairs) == 1 + 58 and all(bn.endswith(("norm0", "norm2")) for _, bn in pairs)
    folded = fold_batchnorm(net)
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), net(x).numpy(), rtol=1e-10, atol=1e-12)
    comp = make_composite("epsilon_gamma_box", epsilon=EPS, low=0.0, high=1.0)
    r = lrp(folded, x, comp, target=w).relevance
    assert torch.isfinite(r).all() and r.abs().max() > 0

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
"""

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
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.types import Linear as ZLinear

from sklrp.nn import Composite, fold_batchnorm, lrp
from sklrp.rules import AlphaBeta, Epsilon, ZPlus

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

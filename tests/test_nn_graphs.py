"""sklrp.nn.GraphedLRP: lrp replayed from CUDA graphs equals eager lrp, and falls back where it must."""

import numpy as np
import pytest
import torch
from torch import nn

from sklrp.nn import Composite, GraphedLRP, lrp
from sklrp.rules import AlphaBeta, Epsilon, Z, ZPlus

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

COMPOSITES = {
    "epsilon": Composite(Epsilon(0.01)),
    "eps+a2b1": Composite(Epsilon(0.01), conv_rule=AlphaBeta(2.0, -1.0)),
    "z+ flat bottom": Composite(Z(), conv_rule=ZPlus(), flat_depth=1),
}


def cnn(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(16, 5)).to(dtype).train()  # training mode on purpose


def assert_same(a, b, rtol=1e-12):
    for name in ("relevance", "bias", "output", "scores"):
        np.testing.assert_allclose(getattr(a, name).cpu().numpy(), getattr(b, name).cpu().numpy(), rtol=rtol,
                                   atol=1e-14, err_msg=name)


def test_cpu_inputs_are_explained_eagerly():
    net, x = cnn(), torch.randn(4, 3, 16, 16, dtype=torch.float64)
    for comp in COMPOSITES.values():
        assert_same(GraphedLRP(net, comp)(x), lrp(net, x, comp))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        GraphedLRP("net", Composite(Z()))
    with pytest.raises(TypeError, match="Composite"):
        GraphedLRP(cnn(), Epsilon(0.1))
    with pytest.raises(ValueError, match="warmup"):
        GraphedLRP(cnn(), Composite(Z()), warmup=0)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"target indices must lie in \[0, 5\); got values from 0 to 9"):
        lrp(cnn(), x, Composite(Z()), target=torch.tensor([0, 9, 1, 1]))


@cuda
@pytest.mark.parametrize("name", list(COMPOSITES))
@pytest.mark.parametrize("target", [None, 3, "all", "indices", "weights"])
def test_replay_equals_eager_lrp(name, target):
    """Several batches of one shape through one graph: each equals sklrp.nn.lrp on it (float64)."""
    net, comp = cnn().cuda(), COMPOSITES[name]
    explain = GraphedLRP(net, comp)
    gen = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 16, 16, dtype=torch.float64, device="cuda", generator=gen)
        t = target
        if target == "indices":
            t = torch.tensor([0, 4, 2, 2], device="cuda")
        elif target == "weights":
            t = torch.randn(4, 5, dtype=torch.float64, device="cuda", generator=gen)
        assert_same(explain(x, t), lrp(net, x, comp, t))
    assert len(explain._recordings) == 1
    # the model is as it was: training mode, no hooks
    assert net.training and all(not m._forward_hooks for m in net.modules())


@cuda
def test_new_shapes_in_place_updates_and_replaced_parameters():
    net, comp = cnn().cuda(), COMPOSITES["eps+a2b1"]
    explain = GraphedLRP(net, comp)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, device="cuda")
    explain(x)
    x2 = torch.randn(7, 3, 16, 16, dtype=torch.float64, device="cuda")
    assert_same(explain(x2), lrp(net, x2, comp))  # a second graph for the new shape
    assert len(explain._recordings) == 2
    with torch.no_grad():
        net[0].weight.mul_(-2.0)  # in place: the replay reads the new values
    assert_same(explain(x), lrp(net, x, comp))
    net[3].weight = nn.Parameter(net[3].weight.detach() * 0.5)  # a new tensor: recorded again
    assert_same(explain(x), lrp(net, x, comp))


@cuda
def test_alpha_beta_layer_recorded_non_negative_falls_back_when_inputs_turn_negative():
    """The first batch is non-negative (the input layer recorded without the x- terms of Eq. (2.25));
    a later batch with negative entries must still give the exact relevance."""
    net, comp = cnn().cuda(), Composite(AlphaBeta(2.0, -1.0))
    explain = GraphedLRP(net, comp)
    x_pos = torch.rand(4, 3, 16, 16, dtype=torch.float64, device="cuda")
    assert_same(explain(x_pos), lrp(net, x_pos, comp))
    assert explain._recordings[next(iter(explain._recordings))].mixed[0] is False
    x_mixed = torch.randn(4, 3, 16, 16, dtype=torch.float64, device="cuda")
    assert_same(explain(x_mixed), lrp(net, x_mixed, comp))


@cuda
def test_non_finite_input_raises_and_bad_indices_are_named():
    net, comp = cnn().cuda(), COMPOSITES["epsilon"]
    explain = GraphedLRP(net, comp)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, device="cuda")
    explain(x)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity"):
        explain(x)
    with pytest.raises(ValueError, match=r"target indices must lie in \[0, 5\)"):
        explain(torch.randn(4, 3, 16, 16, dtype=torch.float64, device="cuda"), torch.tensor([0, 1, 9, 2]).cuda())


@cuda
def test_float32_replay_matches_eager():
    net, comp = cnn(torch.float32).cuda(), COMPOSITES["eps+a2b1"]
    explain = GraphedLRP(net, comp)
    for _ in range(2):
        x = torch.randn(8, 3, 16, 16, device="cuda")
        a, b = explain(x), lrp(net, x, comp)
        scale = b.relevance.abs().max().item()
        assert (a.relevance - b.relevance).abs().max().item() <= 1e-5 * scale

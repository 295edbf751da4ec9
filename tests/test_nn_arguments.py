"""sklrp.nn.lrp refuses bad arguments with messages that name the argument and the fix."""

import numpy as np
import pytest
import torch

from sklrp.nn import Composite, lrp
from sklrp.rules import Epsilon, Z


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()


X = torch.randn(5, 3, dtype=torch.float64)
C = Composite(Epsilon())


@pytest.mark.parametrize("args, err, match", [
    ((lambda x: x, X, C), TypeError, "model must be a torch.nn.Module"),
    ((_net(), X.numpy(), C), TypeError, r"x must be a torch.Tensor .*torch.as_tensor"),
    ((_net(), X.float(), C), ValueError, "x is torch.float32 .* parameters are torch.float64"),
    ((_net(), X.long(), C), ValueError, "floating-point tensor"),
    ((_net(), X[:0], C), ValueError, r"n >= 1"),
    ((_net(), torch.randn(5, 7, dtype=torch.float64), C), ValueError, r"network failed on x of shape \(5, 7\)"),
    ((_net(), X, Z()), TypeError, r"composite must be an sklrp.nn.Composite.*Composite\(Z\(\)\)"),
    ((_net(), X, None), TypeError, "composite must be an sklrp.nn.Composite"),
])
def test_bad_arguments(args, err, match):
    with pytest.raises(err, match=match):
        lrp(*args)


@pytest.mark.parametrize("target, err, match", [
    (-1, ValueError, r"target index must lie in \[0, 2\)"),
    (2, ValueError, r"target index must lie in \[0, 2\)"),
    (1.5, TypeError, "target must be None, an integer output index"),
    ("foo", ValueError, "target must be None, an output index, 'all'"),
    (True, TypeError, "target must be None, an integer output index"),
    (torch.tensor([0.5, 1, 0, 1, 0]), ValueError, "target indices must be integers"),
    (torch.tensor([0, 1]), ValueError, "target has 2 rows but x has 5 samples"),
    (torch.ones(5, 3), ValueError, r"target weights must have shape \(n, 2\)"),
    (torch.tensor([0, 5, 0, 0, 0]), ValueError, r"target indices must lie in \[0, 2\)"),
])
def test_bad_targets(target, err, match):
    with pytest.raises(err, match=match):
        lrp(_net(), X, C, target=target)


def test_good_targets_agree():
    net = _net()
    by_index = lrp(net, X, C, target=1).relevance
    np.testing.assert_allclose(lrp(net, X, C, target=torch.ones(5, dtype=torch.long)).relevance, by_index)
    np.testing.assert_allclose(lrp(net, X, C, target=np.int64(1)).relevance, by_index)


def test_unsupported_layer_is_named():
    net = torch.nn.Sequential(torch.nn.Embedding(10, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2)).double()
    with pytest.raises(TypeError, match="cannot explain the layer Embedding"):
        lrp(net, torch.zeros(4, 2, dtype=torch.float64), C)

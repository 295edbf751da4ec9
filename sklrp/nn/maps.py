"""Layer adapters that present torch layers to :mod:`sklrp.rules` as linear mappings.

The rules of :mod:`sklrp.rules` work on flat ``(n_samples, n_features)`` tensors
against the :class:`~sklrp.rules.LinearMap` interface (``x @ f(W)`` and its
transpose for the weight views ``w``, ``pos``, ``neg``, ``sq``, ``mask``). The maps
here keep a layer's input/output shapes, reshape internally and run the layer's
own operator (a convolution, a pooling) with modified weights, so every rule is
written once for dense, convolutional and pooling layers alike (Eq. (2.29):
convolutions and pooling are linear mappings with shared weights, Section 2.3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn import grad as nn_grad

from ..rules import LinearMap, _view

__all__ = ["ConvMap", "DenseLayerMap", "FlatDiagonalMap", "PoolMap"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_INPUT = {1: nn_grad.conv1d_input, 2: nn_grad.conv2d_input, 3: nn_grad.conv3d_input}


class _LayerMap(LinearMap):
    """A torch layer's map: weight views computed once, the layer's own output reused.

    Subclasses set ``weight``, ``_x``, ``_out`` (the input the map is used with and the
    layer's output for it, or None) and ``_views = {}``.
    """

    def _w(self, view):
        if view not in self._views:
            self._views[view] = _view(self.weight, view)
        return self._views[view]

    def output(self, x):
        if self._out is not None and x is self._x:
            return self._out
        return super().output(x)


class ConvMap(_LayerMap):
    """A ``ConvNd`` layer as a linear map on flattened tensors (Eq. (2.29)).

    ``forward(x, view)`` is the convolution with the weight view ``f(W)`` (no
    bias); ``backward(s, view)`` its transpose (the gradient of the convolution
    with respect to its input). The bias is expanded over the output positions so
    that the rules' per-unit bias terms (Eq. (2.16)) apply unchanged.

    Parameters
    ----------
    module : torch.nn.Conv1d, Conv2d or Conv3d
    in_shape, out_shape : tuple of int
        Per-sample input and output shapes ``(C, *spatial)``.
    out : torch.Tensor, optional
        The layer's output for the input the map will be used with; reused by
        :meth:`output` instead of recomputing the convolution.
    """

    def __init__(self, module, in_shape, out_shape, x=None, out=None):
        self.module = module
        self.dim = len(in_shape) - 1
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.weight = module.weight
        b = module.bias
        if b is not None:
            b = b.view(-1, *([1] * self.dim)).expand(self.out_shape).reshape(-1)
        self.bias = b
        self._x, self._out = x, out
        self._views: dict[str, torch.Tensor] = {}

    def forward(self, x, view="w"):
        m = self.module
        y = _CONV[self.dim](x.view(-1, *self.in_shape), self._w(view), None, m.stride, m.padding, m.dilation,
                            m.groups)
        return y.reshape(x.shape[0], -1)

    def backward(self, s, view="w"):
        m = self.module
        s = s.view(-1, *self.out_shape)
        if isinstance(m.padding, str):
            # 'same'/'valid' may pad asymmetrically; let autograd transpose the convolution
            with torch.enable_grad():
                x0 = torch.zeros((s.shape[0], *self.in_shape), dtype=s.dtype, device=s.device, requires_grad=True)
                y = _CONV[self.dim](x0, self._w(view), None, m.stride, m.padding, m.dilation, m.groups)
                (g,) = torch.autograd.grad(y, x0, s)
        elif self._x is not None and self._x.shape[0] == s.shape[0] and self._x.is_contiguous():
            # the layer input stands in for the input shape: torch.nn.grad.convNd_input would
            # materialise an expanded dummy (a copy of input size) on every call
            d = self.dim
            g = torch.ops.aten.convolution_backward(
                s, self._x.view(-1, *self.in_shape), self._w(view), None, _tuple(m.stride, d), _tuple(m.padding, d),
                _tuple(m.dilation, d), False, [0] * d, m.groups, (True, False, False))[0]
        else:
            g = _CONV_INPUT[self.dim]((s.shape[0], *self.in_shape), self._w(view), s, m.stride, m.padding,
                                      m.dilation, m.groups)
        return g.reshape(s.shape[0], -1)


class PoolMap(LinearMap):
    """Average pooling as a linear map with non-negative weights (Section 2.3.1).

    Average pooling is a convolution with ``w_ij = 1/n`` inside each window (the
    divisor ``n`` may vary at borders and for adaptive pooling). Only the weight
    views the z/epsilon rules need are defined: ``"w"`` and ``"pos"`` (the pooling
    itself) and ``"neg"`` (zero). The flat rule is obtained by evaluating the
    z-rule at an all-ones input (see :func:`sklrp.nn.layers`).
    """

    def __init__(self, fn, in_shape, out_shape, x=None, out=None):
        self.fn = fn
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.bias = None
        self._x, self._out = x, out

    def output(self, x):
        if self._out is not None and x is self._x:
            return self._out
        return self.forward(x)

    def forward(self, x, view="w"):
        if view == "neg":
            return x.new_zeros((x.shape[0], _numel(self.out_shape)))
        if view not in ("w", "pos"):
            raise ValueError(f"pooling layers do not support the weight view {view!r}")
        return self.fn(x.view(-1, *self.in_shape)).reshape(x.shape[0], -1)

    def backward(self, s, view="w"):
        if view == "neg":
            return s.new_zeros((s.shape[0], _numel(self.in_shape)))
        if view not in ("w", "pos"):
            raise ValueError(f"pooling layers do not support the weight view {view!r}")
        with torch.enable_grad():
            x0 = torch.zeros((s.shape[0], *self.in_shape), dtype=s.dtype, device=s.device, requires_grad=True)
            (g,) = torch.autograd.grad(self.fn(x0), x0, s.view(-1, *self.out_shape))
        return g.reshape(s.shape[0], -1)


class FlatDiagonalMap(LinearMap):
    """Channel-wise affine map ``z = x * w_c + b_c`` on flattened ``(n, C, *spatial)`` tensors.

    Used for batch normalisation at inference (Eqs. (2.47)-(2.50)).
    """

    def __init__(self, scale, shift, in_shape):
        d = len(in_shape) - 1
        self.weight = scale.view(-1, *([1] * d)).expand(in_shape).reshape(-1)
        self.bias = shift.view(-1, *([1] * d)).expand(in_shape).reshape(-1)

    def forward(self, x, view="w"):
        return x * _view(self.weight, view)

    def backward(self, s, view="w"):
        return s * _view(self.weight, view)


def _tuple(v, d):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class DenseLayerMap(_LayerMap):
    """A ``torch.nn.Linear`` layer as ``z = x @ W.T + b`` that reuses the layer's output."""

    def __init__(self, module, x=None, out=None):
        self.weight = module.weight.T  # (n_in, n_out), as DenseMap expects
        self.bias = module.bias
        self._x, self._out = x, out
        self._views: dict[str, torch.Tensor] = {}

    def forward(self, x, view="w"):
        return x @ self._w(view)

    def backward(self, s, view="w"):
        return s @ self._w(view).T

"""Layer adapters that present torch layers to :mod:`sklrp.rules` as linear mappings.

The rules of :mod:`sklrp.rules` are written once against the
:class:`~sklrp.rules.LinearMap` interface (``a @ f(W)`` and its transpose for the weight
views a rule asks for). The maps here run a layer's own operator (a dense product, a
convolution, a pooling) with modified weights, so every rule serves dense,
convolutional and pooling layers alike (Eq. (2.29): convolutions and pooling are linear
mappings with shared weights, Section 2.3.1).

* :class:`LayerMap` works on a ``Linear`` / ``ConvNd`` layer's own tensor shapes and
  supplies what the rules' generic evaluation can use to be fast: the layer's output
  as ``z_j`` (Eqs. (2.13), (2.22)), the bias fused into the product, several transposed
  products in one call with the weight views stacked along the output units (alpha-beta:
  ``alpha w+ s+ + beta w- s-`` at once), and the engine's knowledge of the input's sign
  (no host synchronisation).
* :class:`ConvMap` presents a convolution on flattened ``(n, features)`` tensors, the
  contract of :class:`~sklrp.rules.LinearMap`, for rules that override ``propagate``
  instead of describing their parts.
* :class:`PoolMap` and :class:`FlatDiagonalMap`: average pooling and batch normalisation.

On CPUs torch's comparison, ``where`` and ``masked_fill`` kernels run several times slower
than plain arithmetic (boolean tensors are not vectorised), and every fresh
activation-sized tensor costs page faults: the maps avoid both on their hot paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn import grad as nn_grad

from ..rules import LinearMap, _view, signed_parts

__all__ = ["ConvMap", "FlatDiagonalMap", "LayerMap", "PoolMap"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_INPUT = {1: nn_grad.conv1d_input, 2: nn_grad.conv2d_input, 3: nn_grad.conv3d_input}



def _tuple(v, d):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class LayerMap(LinearMap):
    """A ``Linear`` or ``ConvNd`` layer as a linear map on the layer's own tensor shapes.

    ``forward(a, view)`` runs the layer's operator with the weight view ``f(W)`` on a
    tensor shaped like the input (any batch size: the rules pass one sample of ones
    for input-invariant shares); ``backward(s, view)`` is its transpose (the input
    gradient of ``a -> op(a, f(W))``) on a tensor shaped like the output. A ``Linear``
    layer works on ``(rows, features)``. The connectivity view ``"conn"`` is a kernel of
    ones: a convolution's receptive field is the kernel's footprint in the input,
    without the zero padding (padded positions are not inputs, Eq. (2.27)).

    Parameters
    ----------
    module : torch.nn.Linear, Conv1d, Conv2d or Conv3d
    x, out : torch.Tensor
        The layer's input and output of the forward pass; ``output(x)`` returns ``out``.
    mixed : bool or None
        Whether ``x`` has negative entries; None: look when a rule asks (a host
        synchronisation on GPUs; :mod:`sklrp.nn.engine` looks for all layers at once).
    """

    description = "torch Linear/ConvNd layers"

    def __init__(self, module, x, out, mixed=None):
        self.module = module
        self.conv = isinstance(module, torch.nn.modules.conv._ConvNd)
        self.groups = module.groups if self.conv else 1
        self.weight, self.bias = module.weight, module.bias
        self._x, self._out, self._mixed = x, out, mixed
        self._views: dict = {}
        self._buffer = None

    def _w(self, view):
        if view not in self._views:
            if view == "pos" or view == "neg":  # both sign parts with two clamps into one buffer
                g = self.groups
                w = self.weight.unflatten(0, (g, -1))
                both = w.new_empty((g, 2, *w.shape[1:]))
                torch.clamp(w, min=0, out=both[:, 0])
                torch.clamp(w, max=0, out=both[:, 1])
                self._views["pos"], self._views["neg"] = both[:, 0].flatten(0, 1), both[:, 1].flatten(0, 1)
                self._views["both"] = both
            else:
                self._views[view] = _view(self.weight, view)
        return self._views[view]

    def _b(self, view):
        key = ("bias", view)
        if key not in self._views:
            self._views[key] = _view(self.bias, view)
        return self._views[key]

    def _op(self, a, w, b=None):
        m = self.module
        if not self.conv:
            return F.linear(a, w, b)
        return _CONV[a.ndim - 2](a, w, b, m.stride, m.padding, m.dilation, m.groups)

    def _transpose(self, s, w):
        """``sum_j w_ij s_j`` for ``s`` shaped like the output (``w`` may have stacked output units)."""
        m = self.module
        if not self.conv:
            return s @ w
        x = self._x
        if isinstance(m.padding, str) or x.shape[0] != s.shape[0]:
            # 'same'/'valid' may pad asymmetrically: let autograd transpose the convolution
            with torch.enable_grad():
                x0 = s.new_zeros((s.shape[0], *x.shape[1:]), requires_grad=True)
                (g,) = torch.autograd.grad(self._op(x0, w), x0, s)
            return g
        d = s.ndim - 2
        # the layer input stands in for the input shape (its values are not used): torch.nn.grad's
        # convNd_input would materialise an expanded dummy, a copy of input size, on every call
        return torch.ops.aten.convolution_backward(
            s, x, w, None, _tuple(m.stride, d), _tuple(m.padding, d), _tuple(m.dilation, d), False, [0] * d,
            m.groups, (True, False, False))[0]

    def output(self, x):
        return self._out if x is self._x else super().output(x)

    def forward(self, x, view="w"):
        return self._op(x, self._w(view))

    def affine(self, x, view, bias_view):
        return self._op(x, self._w(view), None if self.bias is None or bias_view is None else self._b(bias_view))

    def bias_view(self, view):
        if self.bias is None or view is None:
            return None
        return self._b(view).view(-1, *([1] * (self._out.ndim - 2))) if self.conv else self._b(view)

    def backward(self, s, view="w"):
        return self._transpose(s, self._w(view))

    def scale_buffers(self, k, like):
        """Views ``[:, p]`` of one ``(n, k, *like.shape[1:])`` buffer: stacked along the output units as
        :meth:`backward_many` needs them (ungrouped layers; grouped convolutions stack by copying)."""
        if self.groups != 1:
            return None
        self._buffer = like.new_empty((like.shape[0], k, *like.shape[1:]))
        self._buffer_views = [self._buffer[:, p] for p in range(k)]
        return self._buffer_views

    def backward_many(self, pairs):
        """One transposed product for all pairs: the ``s_k`` and ``c_k f_k(W)`` stacked along the output
        units (per group for grouped convolutions, so that unit ``(g, k, j)`` is unit ``j`` of group ``g``
        in pair ``k``): the FLOPs of separate products in one kernel call, and no sum of their results."""
        if len(pairs) == 1:
            s, view, coef = pairs[0]
            g = self.backward(s, view)
            return g if coef == 1 else g.mul_(coef)
        g = self.groups
        key = tuple((view, coef) for _, view, coef in pairs)
        if key not in self._views:
            views = [view for _, view, _ in pairs]
            coefs = [coef for _, _, coef in pairs]
            if views in (["pos", "neg"], ["neg", "pos"]) and coefs == [1.0, 1.0]:  # the sign parts' buffer
                self._w("pos")
                stacked = self._views["both"] if views[0] == "pos" else self._views["both"].flip(1)
            else:
                stacked = torch.stack([self._w(v).unflatten(0, (g, -1)) * c for v, c in zip(views, coefs)], dim=1)
            self._views[key] = stacked.flatten(0, 2)
        buf = self._stacked(pairs)
        s = buf.flatten(1, 2) if buf is not None else \
            torch.stack([p[0].unflatten(1, (g, -1)) for p in pairs], dim=2).flatten(1, 3)
        return self._transpose(s, self._views[key])

    def _stacked(self, pairs):
        """The buffer of :meth:`scale_buffers` when the pairs' relevances are its slices in order, else None."""
        buf = self._buffer
        if buf is None or buf.shape[1] != len(pairs):
            return None
        views = self._buffer_views
        return buf if all(p[0] is v for p, v in zip(pairs, views)) else None

    def bias_relevance_many(self, pairs):
        buf = self._stacked(pairs) if self.bias is not None else None
        if buf is None:
            return super().bias_relevance_many(pairs)
        sums = buf.flatten(3).sum(dim=3) if buf.ndim > 3 else buf  # (n, k, K): one reduction for all parts
        key = ("bias",) + tuple((view, coef) for _, view, coef in pairs)
        if key not in self._views:
            self._views[key] = torch.stack([self._b(view) if coef == 1 else self._b(view) * coef
                                            for _, view, coef in pairs])
        return (sums * self._views[key]).sum(dim=(1, 2))

    def bias_relevance(self, s, view):
        if self.bias is None or view is None:
            return s.new_zeros(s.shape[0])
        if s.ndim > 2:
            s = s.flatten(2).sum(dim=2)
        return s @ self._b(view)

    def input_has_negatives(self, x):
        if self._mixed is not None and x is self._x:
            return self._mixed
        return super().input_has_negatives(x)


class ConvMap(LinearMap):
    """A ``ConvNd`` layer as a linear map on flattened ``(n, features)`` tensors (Eq. (2.29)).

    The :class:`~sklrp.rules.LinearMap` contract for rules that override ``propagate``
    instead of describing their parts (:class:`LayerMap` serves all others).
    ``forward(x, view)`` is the convolution with the weight view ``f(W)`` (no bias);
    ``backward(s, view)`` its transpose. The bias is expanded over the output positions
    so that per-unit bias terms (Eq. (2.16)) apply unchanged.

    Parameters
    ----------
    module : torch.nn.Conv1d, Conv2d or Conv3d
    in_shape, out_shape : tuple of int
        Per-sample input and output shapes ``(C, *spatial)``.
    x, out : torch.Tensor, optional
        The (flattened) layer input and output; ``output(x)`` reuses ``out``.
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
        self._views: dict = {}

    def _w(self, view):
        if view not in self._views:
            self._views[view] = _view(self.weight, view)
        return self._views[view]

    def output(self, x):
        if self._out is not None and x is self._x:
            return self._out
        return super().output(x)

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
        else:
            g = _CONV_INPUT[self.dim]((s.shape[0], *self.in_shape), self._w(view), s, m.stride, m.padding,
                                      m.dilation, m.groups)
        return g.reshape(s.shape[0], -1)


class PoolMap(LinearMap):
    """Average pooling as a linear map with non-negative weights (Section 2.3.1).

    Average pooling is a convolution with ``w_ij = 1/n`` inside each window (the
    divisor ``n`` may vary at borders and for adaptive pooling). Views: ``"w"``,
    ``"pos"``, ``"abs"`` (the pooling itself), ``"neg"`` (zero), signed views (a multiple
    of the pooling), and ``"conn"``, served by the pooling too: its weights are constant
    over each window, so the shares ``v_ij / sum_i' v_i'j`` of the flat rule are the
    same (``1 / #window``, padding excluded).
    """

    description = "average pooling layers"
    signed_views_only = True

    def __init__(self, fn, in_shape, out_shape, x=None, out=None):
        self.fn = fn
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.bias = None
        self._x, self._out = x, out

    def _factor(self, view):
        """The view as a multiple of the pooling (its weights are non-negative: ``p w+ + n w- = p w``)."""
        if not self.supports(view=view):
            raise ValueError(f"pooling layers do not support the weight view {view!r}")
        return 1.0 if view == "conn" else signed_parts(view)[0]

    def output(self, x):
        if self._out is not None and x is self._x:
            return self._out
        return self.forward(x)

    def forward(self, x, view="w"):
        c = self._factor(view)
        y = self.fn(x.view(-1, *self.in_shape)).reshape(x.shape[0], -1)
        return y if c == 1 else y.mul_(c)

    def backward(self, s, view="w"):
        c = self._factor(view)
        with torch.enable_grad():
            x0 = torch.zeros((s.shape[0], *self.in_shape), dtype=s.dtype, device=s.device, requires_grad=True)
            (g,) = torch.autograd.grad(self.fn(x0), x0, s.view(-1, *self.out_shape))
        g = g.reshape(s.shape[0], -1)
        return g if c == 1 else g.mul_(c)


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

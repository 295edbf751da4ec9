"""Backward relevance steps of the torch layers sklrp supports (Sections 2.2.6 and 2.3.1).

Each function maps the relevance at a layer's output to its input(s) and returns
the relevance absorbed by bias-like terms per sample. They are called from the
modified backward pass of :mod:`sklrp.nn.engine`; the layer's input ``x`` and
output ``out`` are those of the forward pass.

===========================  ===================================================
layer                        decomposition
===========================  ===================================================
Linear, Conv1d/2d/3d         the composite's rule (Table 2.1), via ``sklrp.rules``
AvgPool, AdaptiveAvgPool     z-rule as a linear map with ``w = 1/n`` (Section 2.3.1);
                             flat (uniform over the window) inside the flat region
MaxPool1d/2d/3d              winner-take-all, ties split evenly (Eqs. (2.33)-(2.35));
                             flat inside the flat region
activations, Dropout         identity (Eq. (2.37))
BatchNorm1d/2d/3d            Eq. (2.54): ``R_x = x s R_z / z``, mean and shift absorb
LocalResponseNorm            Taylor weights ``v_ij`` of Eq. (2.46), normalised (Eq. (2.11))
sklrp.nn.Add, ``a + b``      Eq. (2.39): ``R_k = x_k / sum_k' x_k' R``
sklrp.nn.Concat, Flatten     routing (Eq. (2.41))
===========================  ===================================================
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..rules import Flat, Z, _constant, safe_divide
from .maps import ConvMap, FlatDiagonalMap, LayerMap, PoolMap, _tuple

__all__ = [
    "add_backward",
    "avgpool_backward",
    "batchnorm_backward",
    "conv_backward",
    "linear_backward",
    "lrn_backward",
    "lrn_weights",
    "maxpool_backward",
]


def _flat(t):
    return t.reshape(t.shape[0], -1)


def linear_backward(module, rule, x, out, relevance, mixed=None):
    """``torch.nn.Linear`` (any leading dimensions) under ``rule``.

    ``mixed`` says whether ``x`` has negative entries (None: look if the rule asks).
    Every rule runs through :meth:`sklrp.rules.Rule.propagate` on the layer's own
    product (:class:`sklrp.nn.maps.LayerMap`).
    """
    n = x.shape[0]
    x2, o2 = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
    lr = rule.propagate(LayerMap(module, x2, o2, mixed), x2, relevance.reshape(o2.shape))
    return lr.input.reshape(x.shape), lr.bias.reshape(n, -1).sum(dim=1)


def conv_backward(module, rule, x, out, relevance, mixed=None):
    """``torch.nn.ConvNd`` (stride, padding, dilation, groups) under ``rule``; ``mixed`` as for :func:`linear_backward`.

    Rules described by parts run on the layer's own tensor shapes
    (:class:`sklrp.nn.maps.LayerMap`); a rule that only overrides ``propagate`` gets the
    flattened ``(n, features)`` map its :class:`~sklrp.rules.LinearMap` contract promises.
    """
    if rule.has_parts:
        return rule.propagate(LayerMap(module, x, out, mixed), x, relevance)
    x2 = _flat(x)
    lr = rule.propagate(ConvMap(module, x.shape[1:], out.shape[1:], x2, _flat(out)), x2, _flat(relevance))
    return lr.input.reshape(x.shape), lr.bias


def avgpool_backward(module, flat, x, out, relevance):
    """Average pooling as a linear layer: z-rule, or the flat rule inside the flat region.

    The flat rule spreads ``R_j`` evenly over the non-padded inputs of window ``j``
    (Eq. (2.27)), as it does for every linear layer.
    """
    x2 = _flat(x)
    rule = Flat() if flat else Z()
    lr = rule.propagate(PoolMap(module, x.shape[1:], out.shape[1:], x2, _flat(out)), x2, _flat(relevance))
    return lr.input.reshape(x.shape), x.new_zeros(x.shape[0])


def _pool_windows(x, module, out_spatial):
    """Windows of a max-pooling layer: ``(n, C, *out_spatial, *kernel)``, padding as -inf."""
    d = x.ndim - 2
    k, s = _tuple(module.kernel_size, d), _tuple(module.stride or module.kernel_size, d)
    p, dil = _tuple(module.padding, d), _tuple(module.dilation, d)
    pads = []
    for i in reversed(range(d)):  # F.pad takes the last dimension first
        span = dil[i] * (k[i] - 1) + 1
        needed = (out_spatial[i] - 1) * s[i] + span - (x.shape[2 + i] + 2 * p[i])
        pads += [p[i], p[i] + max(0, needed)]  # ceil_mode windows may run past the right edge
    xp = F.pad(x, pads, value=float("-inf"))
    for i in range(d):
        span = dil[i] * (k[i] - 1) + 1
        xp = xp.unfold(2 + i, span, s[i])
    index = [slice(None), slice(None)] + [slice(0, o) for o in out_spatial] + [slice(None, None, di) for di in dil]
    return xp[tuple(index)]


def _maxpool_tiled(module, flat, x, out, relevance, by_window=None):
    """Eq. (2.35) for non-overlapping windows (stride = kernel, no padding/dilation).

    The winners of a window are the elements equal to its maximum; ties split evenly.
    Two implementations, chosen by device (``by_window`` forces one):

    * GPUs (kernel launches dominate): the covered part of ``x`` viewed as
      ``(n, C, o_1, k_1, o_2, k_2, ...)`` is compared exactly with the output broadcast
      as ``(n, C, o_1, 1, ...)``: four whole-tensor operations and no host
      synchronisation, whatever the window size.
    * CPUs: offset by offset (``x[..., a::k]`` holds the ``a``-th element of every
      window, shaped like the output), by arithmetic only, ``sign(max - x)`` being 0 for
      a winner and 1 for a loser. Comparisons, ``where`` and broadcasts over short
      window axes run several times slower there. A window with an infinite or NaN
      maximum (``inf - inf`` is NaN) takes the exact comparison instead.

    Returns None when the pooling is not of that (most common) form.
    """
    d = x.ndim - 2
    k = _tuple(module.kernel_size, d)
    s = _tuple(module.stride or module.kernel_size, d)
    if s != k or any(_tuple(module.padding, d)) or any(v != 1 for v in _tuple(module.dilation, d)):
        return None
    o = out.shape[2:]
    cover = [o[i] * k[i] for i in range(d)]
    if any(cover[i] > x.shape[2 + i] for i in range(d)):
        return None  # ceil_mode windows hanging over the edge
    covered = all(cover[i] == x.shape[2 + i] for i in range(d))
    r_in = torch.empty_like(x) if covered else torch.zeros_like(x)
    size = 1
    for ki in k:
        size *= ki
    if flat:
        by_window = True
    elif by_window is None:
        by_window = x.is_cuda or not bool(torch.isfinite(out.sum()))

    if by_window:
        def windows(t):  # (n, C, o_1, k_1, ...) view of the covered part of t
            t = t[(slice(None), slice(None), *[slice(0, c) for c in cover])]
            for i in range(d):
                t = t.unflatten(2 + 2 * i, (o[i], k[i]))
            return t

        def spread(t):  # (n, C, o_1, 1, o_2, 1, ...) view of an output-shaped tensor
            for i in range(d):
                t = t.unsqueeze(3 + 2 * i)
            return t

        rw = windows(r_in)
        if flat:
            rw.copy_(spread(relevance / size).expand(rw.shape))
            return r_in
        winners = torch.eq(windows(x), spread(out))
        share = relevance / winners.sum(dim=tuple(3 + 2 * i for i in range(d)))  # 0 winners only at NaN
        torch.where(winners, spread(share), _constant(0.0, x), out=rw)
        return r_in

    def at(t, offset):  # the elements at ``offset`` of all windows, shaped like ``out``
        return t[(slice(None), slice(None), *[slice(a, a + o[i] * k[i], k[i]) for i, a in enumerate(offset)])]

    offsets = list(itertools.product(*[range(ki) for ki in k]))
    losers = [torch.sub(out, at(x, a)).sign_() for a in offsets]
    count = torch.rsub(losers[0], size)  # size - losers[0]
    for n in losers[1:]:
        count.sub_(n)
    share = torch.div(relevance, count, out=count)  # ties split evenly
    for i, a in enumerate(offsets):
        torch.addcmul(share, losers[i], share, value=-1, out=at(r_in, a))  # share, or exactly 0
    return r_in


def maxpool_backward(module, flat, x, out, relevance):
    """Max pooling: winner-take-all with ties split evenly (Eqs. (2.33)-(2.35)).

    Inside the flat region each ``R_j`` is spread evenly over the (non-padded)
    window instead (Eq. (2.27)). Exactly conservative: returns ``(R_in, None)``, nothing absorbed.
    """
    fast = _maxpool_tiled(module, flat, x, out, relevance)
    if fast is None:
        fast = _maxpool_general(module, flat, x, out, relevance)
    return fast, None


def _maxpool_general(module, flat, x, out, relevance):
    """Any max pooling (overlapping windows, padding, dilation, ceil mode) through unfolded windows."""
    d = x.ndim - 2
    out_spatial = out.shape[2:]
    with torch.enable_grad():
        x0 = x.detach().requires_grad_(True)
        win = _pool_windows(x0, module, out_spatial)
        expand = (...,) + (None,) * d
        if flat:
            chosen = torch.isfinite(win.detach())
        else:
            chosen = win.detach() == out.detach()[expand]
        count = chosen.sum(dim=tuple(range(-d, 0))).to(x.dtype)
        msg = chosen.to(x.dtype) * safe_divide(relevance, count)[expand]
        (r_in,) = torch.autograd.grad(win, x0, msg)
    return r_in


def batchnorm_backward(module, x, out, relevance):
    """Batch normalisation at inference, Eq. (2.54): ``R_x = x s R_z / z``.

    ``z = (x - mu) s + beta`` with ``s = gamma / sqrt(var + eps)``; the mean and the
    shift absorb ``(beta - mu s) R_z / z`` (Eqs. (2.51)-(2.53)). This is the z-rule
    on the element-wise affine map, so a batch norm folded into the preceding
    linear layer (:func:`sklrp.nn.fold_batchnorm`) gives the same relevance when
    that layer also uses the z-rule.
    """
    if module.running_mean is None or module.running_var is None:
        raise ValueError(
            f"{type(module).__name__} without running statistics (track_running_stats=False) normalises "
            "with batch statistics and cannot be explained per sample"
        )
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight
    shift = -module.running_mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    x2 = _flat(x)
    lr = Z().propagate(FlatDiagonalMap(scale, shift, x.shape[1:]), x2, _flat(relevance))
    return lr.input.reshape(x.shape), lr.bias


def _lrn_band(module, channels, like):
    # member[i, j] = 1 if channel i is in the normalisation window of channel j (as in F.local_response_norm)
    idx = torch.arange(channels, device=like.device)
    diff = idx[:, None] - idx[None, :]
    return ((diff >= -(module.size // 2)) & (diff <= (module.size - 1) // 2)).to(like.dtype)


def lrn_weights(module, x):
    """Per-position Taylor weights of Eq. (2.46) for ``torch.nn.LocalResponseNorm``.

    torch's layer is ``z_j = x_j (k + a S_j)^-beta`` with ``S_j = sum_{i in W_j} x_i^2``
    and ``a = alpha / size``; for ``k = 1`` this is Eq. (2.42) with ``b = a``,
    ``c = beta``. Returns ``(diag, off, band)`` with ``diag_j = x_j (k + a x_j^2)^-beta``
    (the expansion around ``x~2``, spread as ``1/n_j`` over the window) and
    ``off_j = 2 a beta x_j (k + a S_j)^(-beta - 1)`` so that ``v_ij = diag_j / n_j -
    x_i^2 off_j`` for ``i != j`` in the window and ``v_jj = diag_j / n_j``.
    """
    n, c = x.shape[:2]
    xs = x.reshape(n, c, -1)
    band = _lrn_band(module, c, x)
    a, beta, k = module.alpha / module.size, module.beta, module.k
    s_j = torch.einsum("nil,ij->njl", xs * xs, band)
    diag = xs * (k + a * xs * xs) ** (-beta)
    off = 2 * a * beta * xs * (k + a * s_j) ** (-beta - 1)
    return diag, off, band


def lrn_backward(module, x, out, relevance):
    """Local response normalisation by the Taylor weights of Eq. (2.46), Eq. (2.11).

    ``R_i = sum_j v_ij / (sum_i' v_i'j) R_j``; conservative up to units whose
    weights sum to zero (0/0 := 0).
    """
    n, c = x.shape[:2]
    xs = x.reshape(n, c, -1)
    diag, off, band = lrn_weights(module, x)
    count = band.sum(dim=0)[None, :, None]
    # sum_i v_ij = diag_j - off_j (S_j - x_j^2)   (Eq. (2.45))
    s_j = torch.einsum("nil,ij->njl", xs * xs, band)
    denom = diag - off * (s_j - xs * xs)
    scaled = safe_divide(relevance.reshape(n, c, -1), denom)
    spread = torch.einsum("njl,ij->nil", diag / count * scaled, band)
    inhibit = torch.einsum("njl,ij->nil", off * scaled, band) - off * scaled  # j != i only
    r_in = spread - xs * xs * inhibit
    return r_in.reshape(x.shape), x.new_zeros(n)


def add_backward(xs, out, relevance, coefficients=None, constants=()):
    """Merge by addition, Eq. (2.39): ``R_k = c_k x_k / z R`` for ``z = sum_k c_k x_k + sum_m c_m b_m`` (0/0 := 0).

    ``xs`` are the summands that carry relevance, with coefficients ``c_k`` (default 1; -1
    for a subtrahend); a summand broadcast to the output's shape gets the sum of the
    messages of its copies (Eq. (2.12)). ``constants`` are ``(b_m, c_m)`` pairs of summands
    that do not depend on the input (numbers or tensors): like a bias (Eq. (2.16)) they
    absorb ``c_m b_m / z R``, returned summed per sample.
    """
    scaled = safe_divide(relevance, out)
    rs = []
    for k, x in enumerate(xs):
        c = 1.0 if coefficients is None else coefficients[k]
        r = x * scaled if c == 1 else (x * c) * scaled
        rs.append(r if r.shape == x.shape else r.sum_to_size(x.shape))
    absorbed = out.new_zeros(out.shape[0])
    for value, c in constants:
        part = scaled * (value * c)
        absorbed = absorbed + part.reshape(out.shape[0], -1).sum(dim=1)
    return rs, absorbed


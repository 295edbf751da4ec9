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
sklrp.nn.Add                 Eq. (2.39): ``R_k = x_k / sum_k' x_k' R``
sklrp.nn.Concat, Flatten     routing (Eq. (2.41))
===========================  ===================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..rules import AlphaBeta, Epsilon, LayerRelevance, Z, _safe_divide
from .maps import ConvMap, DenseLayerMap, FlatDiagonalMap, PoolMap

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


def _propagate(rule, lmap, x, relevance):
    """``rule.propagate`` with fewer tensor passes for the rules used most.

    * z and epsilon (Eqs. (2.13), (2.22)): the same formula with scalar-valued
      ``torch.where`` instead of helper tensors (the layer output ``z`` is reused).
    * alpha-beta on non-negative inputs (below a ReLU): the terms of Eq. (2.25)
      with ``x-`` vanish, so ``z+_j = sum_i x_i w+_ij + b+_j`` and ``z-_j = sum_i x_i
      w-_ij + b-_j``; this halves the convolutions (z+, ``beta = 0``: a quarter of them).

    Results are identical to ``rule.propagate`` (tested against loop references).
    """
    if type(rule) in (Z, Epsilon):
        z = lmap.output(x)
        if type(rule) is Epsilon and rule.epsilon > 0:
            s = torch.where(z >= 0, z + rule.epsilon, z - rule.epsilon)  # sign(0) = +1
            torch.div(relevance, s, out=s)  # in place: these tensors are the size of the activations
        else:
            s = torch.where(z == 0, 0.0, relevance / z)  # 0/0 := 0
        bias = lmap.bias
        r_bias = x.new_zeros(x.shape[0]) if bias is None else s @ bias
        return LayerRelevance(lmap.backward(s).mul_(x), r_bias)
    if not isinstance(rule, AlphaBeta) or bool((x < 0).any()):
        return rule.propagate(lmap, x, relevance)
    bias = lmap.bias
    bp, bn = (None, None) if bias is None else (bias.clamp(min=0), bias.clamp(max=0))
    r_in, r_bias = None, x.new_zeros(x.shape[0])
    for coef, view, b in ((rule.alpha, "pos", bp), (rule.beta, "neg", bn)):
        if coef == 0:  # z+ (beta = 0): the negative part carries no relevance; skip its convolutions
            continue
        zpart = lmap.forward(x, view)
        if b is not None:
            zpart = zpart + b
        spart = torch.where(zpart == 0, 0.0, relevance * coef / zpart)  # 0/0 := 0
        back = lmap.backward(spart, view)
        r_in = back if r_in is None else r_in + back
        if b is not None:
            r_bias = r_bias + spart @ b
    r_in = torch.zeros_like(x) if r_in is None else r_in.mul_(x)
    return LayerRelevance(r_in, r_bias)


def linear_backward(module, rule, x, out, relevance):
    """``torch.nn.Linear`` (any leading dimensions) under ``rule``."""
    n = x.shape[0]
    x2, o2 = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
    lr = _propagate(rule, DenseLayerMap(module, x2, o2), x2, relevance.reshape(o2.shape))
    return lr.input.reshape(x.shape), lr.bias.reshape(n, -1).sum(dim=1)


def conv_backward(module, rule, x, out, relevance):
    """``torch.nn.ConvNd`` (stride, padding, dilation, groups) under ``rule``."""
    x2 = _flat(x)
    lmap = ConvMap(module, x.shape[1:], out.shape[1:], x2, _flat(out))
    lr = _propagate(rule, lmap, x2, _flat(relevance))
    return lr.input.reshape(x.shape), lr.bias


def avgpool_backward(module, flat, x, out, relevance):
    """Average pooling as a linear layer: z-rule, or the flat rule inside the flat region.

    The flat rule on a layer with equal weights per window is the z-rule at an
    all-ones input, which spreads ``R_j`` evenly over the non-padded inputs of
    window ``j`` (Eq. (2.27)).
    """
    x2 = _flat(x)
    if flat:
        ones = torch.ones_like(x2)
        lr = Z().propagate(PoolMap(module, x.shape[1:], out.shape[1:]), ones, _flat(relevance))
    else:
        lr = Z().propagate(PoolMap(module, x.shape[1:], out.shape[1:], x2, _flat(out)), x2, _flat(relevance))
    return lr.input.reshape(x.shape), x.new_zeros(x.shape[0])


def _tuple(v, d):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


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


def _maxpool_tiled(module, flat, x, out, relevance):
    """Eq. (2.35) for non-overlapping windows (stride = kernel, no padding/dilation) by reshaping.

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
    xc = x[(..., *[slice(0, c) for c in cover])]
    tiled = [v for i in range(d) for v in (o[i], k[i])]
    win = xc.reshape(*x.shape[:2], *tiled)
    kdims = tuple(3 + 2 * i for i in range(d))
    expand = [v for i in range(d) for v in (o[i], 1)]
    if flat:
        msg = (relevance / float(torch.tensor(k).prod())).reshape(*x.shape[:2], *expand).expand_as(win)
    else:
        chosen = win == out.reshape(*x.shape[:2], *expand)
        count = chosen.sum(dim=kdims, keepdim=True)
        msg = torch.where(chosen, relevance.reshape(*x.shape[:2], *expand) / count, 0.0)
    r_in = msg.reshape(xc.shape)
    if list(xc.shape) != list(x.shape):
        r_in = torch.nn.functional.pad(r_in, [v for i in reversed(range(d)) for v in (0, x.shape[2 + i] - cover[i])])
    return r_in


def maxpool_backward(module, flat, x, out, relevance):
    """Max pooling: winner-take-all with ties split evenly (Eqs. (2.33)-(2.35)).

    Inside the flat region each ``R_j`` is spread evenly over the (non-padded)
    window instead (Eq. (2.27)). Exactly conservative.
    """
    fast = _maxpool_tiled(module, flat, x, out, relevance)
    if fast is not None:
        return fast, x.new_zeros(x.shape[0])
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
        msg = chosen.to(x.dtype) * _safe_divide(relevance, count)[expand]
        (r_in,) = torch.autograd.grad(win, x0, msg)
    return r_in, x.new_zeros(x.shape[0])


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
    scaled = _safe_divide(relevance.reshape(n, c, -1), denom)
    spread = torch.einsum("njl,ij->nil", diag / count * scaled, band)
    inhibit = torch.einsum("njl,ij->nil", off * scaled, band) - off * scaled  # j != i only
    r_in = spread - xs * xs * inhibit
    return r_in.reshape(x.shape), x.new_zeros(n)


def add_backward(xs, out, relevance):
    """Merge by addition, Eq. (2.39): ``R_k = x_k / (sum_k' x_k') R`` (0/0 := 0)."""
    scaled = _safe_divide(relevance, out)
    return [x * scaled for x in xs], out.new_zeros(out.shape[0])


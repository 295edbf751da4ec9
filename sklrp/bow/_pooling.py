"""Decomposition of a pooled mapping layer: BoW / FV dimensions -> local descriptors.

A pooling layer computes ``z_d = sum_l z_ld`` from per-descriptor contributions
``z_ld`` (Eq. (2.77); ``z_ld = m_d(l)^p / |L|`` for p-means pooling, Eq. (2.82);
``z_ld = Psi(l)_d / |L|`` for Fisher vectors, Eqs. (4.9)-(4.10)). Relevance goes back by
the configured rule with the empty-dimension fallback of Eq. (2.79): a dimension no
descriptor reaches (``z_ld = 0`` for all ``l`` of its bag) gives ``R_d / |bag|`` to
every descriptor of its bag, so nothing is lost to empty histogram bins.

The ``(n_descriptors x n_dims)`` matrix is never held at once: contributions come in
chunks of descriptors from a callable and three passes are made (the scale ``max_l |z_ld|``, statistics of
``z_d``, then ``R_l = sum_d z_ld R_d / stab(z_d)``).
"""

from __future__ import annotations

import torch

from ..rules import AlphaBeta, Epsilon, Flat, Z, _safe_divide

__all__ = ["decompose_pool", "SUPPORTED_POOL_RULES"]

SUPPORTED_POOL_RULES = (Z, Epsilon, AlphaBeta, Flat)


def check_pool_rule(rule, where):
    if not isinstance(rule, SUPPORTED_POOL_RULES):
        raise TypeError(
            f"{where}: the {type(rule).__name__} rule is not defined for pooled descriptor mappings; use "
            "rule='z', 'epsilon' (Eqs. (2.78)-(2.79)), 'alphabeta' or 'flat'"
        )


def decompose_pool(zfn, n_desc, relevance, rule, bag_of_dim, members, chunk=4096):
    """Relevance of each descriptor of one image.

    Parameters
    ----------
    zfn : callable (lo, hi) -> tensor of shape (hi - lo, n_dims)
        Contributions ``z_ld`` of descriptors ``lo:hi``.
    n_desc : int
    relevance : tensor of shape (n_dims,)
        ``R_d``.
    rule : Z, Epsilon, AlphaBeta or Flat
    bag_of_dim : long tensor of shape (n_dims,)
        Index of the bag (spatial-pyramid region) each dimension pools over.
    members : bool tensor of shape (n_desc, n_bags)
        Which descriptors belong to which bag.
    chunk : int
        Descriptors per chunk.

    Returns
    -------
    tensor of shape (n_desc,)
        ``R_l`` (Eqs. (2.79)-(2.80)).
    """
    check_pool_rule(rule, "decompose_pool")
    d = relevance.shape[0]
    top_p = relevance.new_zeros(d)
    top_n = relevance.new_zeros(d)
    for lo in range(0, n_desc, chunk):
        z = zfn(lo, min(lo + chunk, n_desc))
        top_p = torch.maximum(top_p, z.clamp(min=0).amax(0))
        top_n = torch.maximum(top_n, (-z).clamp(min=0).amax(0))
    # shares are scale-free, so work with z_ld / max_l |z_ld| (each sign part by its own maximum for
    # alpha-beta): tiny z_d (far GMM components, gamma ~ 1e-300) then cannot overflow R_d / z_d
    empty = (top_p == 0) & (top_n == 0)

    def unit(v):
        return torch.where(v > 0, v, torch.ones_like(v))

    if isinstance(rule, AlphaBeta):
        scale_p, scale_n = unit(top_p), unit(top_n)
    else:
        scale_p = scale_n = unit(torch.maximum(top_p, top_n))

    def scaled(lo, hi):
        z = zfn(lo, hi)
        return z.clamp(min=0) / scale_p, z.clamp(max=0) / scale_n

    zp = relevance.new_zeros(d)
    zn = relevance.new_zeros(d)
    nnz = relevance.new_zeros(d)
    for lo in range(0, n_desc, chunk):
        p, n = scaled(lo, min(lo + chunk, n_desc))
        zp += p.sum(0)
        zn += n.sum(0)
        nnz += ((p != 0) | (n != 0)).sum(0).to(p.dtype)
    r_live = torch.where(empty, torch.zeros_like(relevance), relevance)
    if isinstance(rule, Z):
        sp = sn = _safe_divide(r_live, zp + zn)
    elif isinstance(rule, Epsilon):
        zd = zp + zn
        sign = torch.where(zd >= 0, torch.ones_like(zd), -torch.ones_like(zd))
        sp = sn = _safe_divide(r_live, zd + rule.epsilon / scale_p * sign)
    elif isinstance(rule, AlphaBeta):
        sp, sn = _safe_divide(rule.alpha * r_live, zp), _safe_divide(rule.beta * r_live, zn)
    else:  # Flat
        sp = sn = _safe_divide(r_live, nnz)
    out = relevance.new_zeros(n_desc)
    for lo in range(0, n_desc, chunk):
        p, n = scaled(lo, min(lo + chunk, n_desc))
        if isinstance(rule, Flat):
            out[lo:lo + p.shape[0]] = ((p != 0) | (n != 0)).to(p.dtype) @ sp
        else:
            out[lo:lo + p.shape[0]] = p @ sp + n @ sn
    if bool(empty.any()):
        out += fallback(relevance, empty, bag_of_dim, members)
    return out


def fallback(relevance, empty, bag_of_dim, members):
    """Eq. (2.79), second case: ``R_d / |bag|`` to each descriptor of the dimension's bag.

    A bag without descriptors (an empty pyramid region) hands its relevance to all
    descriptors of the image, so the layer stays conservative.
    """
    n_bags = members.shape[1]
    m = members.to(relevance.dtype)
    size = m.sum(0)
    per_bag = relevance.new_zeros(n_bags).index_add_(0, bag_of_dim, torch.where(empty, relevance, 0.0))
    share = _safe_divide(per_bag, size)
    out = m @ share
    orphan = per_bag[size == 0].sum()
    return out + orphan / members.shape[0]

"""Decomposition of a pooled mapping layer: BoW / FV dimensions -> local descriptors.

A pooling layer computes ``z_d = sum_l z_ld`` from per-descriptor contributions
``z_ld`` (Eq. (2.77); ``z_ld = m_d(l)^p / |L|`` for p-means pooling, Eq. (2.82);
``z_ld = Psi(l)_d / |L|`` for Fisher vectors, Eqs. (4.9)-(4.10)). It is a linear mapping
(:class:`PooledMap`) whose inputs are the descriptors (``x_l = 1``) and whose weights are
the contributions, so relevance goes back by the configured rule's own arithmetic
(:meth:`sklrp.rules.Rule.propagate`), with the empty-dimension fallback of Eq. (2.79):
a dimension no descriptor reaches (``z_ld = 0`` for all ``l`` of its bag) gives
``R_d / |bag|`` to every descriptor of its bag, so nothing is lost to empty histogram bins.

The ``(n_descriptors x n_dims)`` matrix is never held at once: contributions come in
chunks of descriptors from a callable, and each product of the rule is one pass over
the chunks.
"""

from __future__ import annotations

import torch

from ..rules import LinearMap, _view, check_rule, safe_divide, signed_parts

__all__ = ["PooledMap", "check_pool_rule", "decompose_pool"]


class PooledMap(LinearMap):
    """A pooling ``z_d = sum_l z_ld`` as a linear map with inputs ``x_l = 1`` and weights ``z_ld``.

    Each weight view ``v`` is held as ``v(z)_ld / m_vd`` with ``m_vd = max_l |v(z)_ld|``
    (1 where that is 0): the shares ``v(z)_ld / sum_l' v(z)_l'd`` of a rule's part are
    scale-free, and dividing by the largest contribution keeps ``R_d / z_d`` from
    overflowing where ``z_d`` is tiny (a far GMM component has posteriors ~ 1e-300; the
    positive and negative parts of one dimension may differ by as much). A stabiliser
    still acts on the true scale: :meth:`unit_for` gives ``m_v`` times ``factor``. The
    receptive field of dimension ``d`` (the connectivity view ``"conn"``, Eq. (2.27)) is
    its bag: all descriptors of its pyramid region.

    Weight views: the signed views (``"w"``, ``"pos"``, ``"neg"``, ``"abs"``, ...) and
    ``"conn"``. ``"sq"`` is refused: the w^2 rule squares model parameters, and a pooling
    has none (its "weights" are the data's contributions). Term inputs: those of
    :data:`sklrp.rules.TERM_INPUTS` (the descriptors are all-ones inputs); a rule's own
    inputs, such as input-domain bounds, are refused.

    Parameters
    ----------
    zfn : callable (lo, hi) -> tensor of shape (hi - lo, n_dims)
        Contributions ``z_ld`` of descriptors ``lo:hi``.
    n_desc : int
    top_pos, top_neg : tensor of shape (n_dims,)
        ``max_l z+_ld`` and ``max_l (-z-_ld)``.
    bag_of_dim : long tensor of shape (n_dims,)
    members : bool tensor of shape (n_desc, n_bags)
    factor : tensor of shape (n_dims,) or None
        Factor from the contributions given to the thesis' scale (e.g. ``|L|`` for
        Fisher vectors, whose ``z_ld`` of Eq. (4.10) carries no ``1/|L|``).
    chunk : int
    """

    description = "pooled descriptor mappings (Bag of Words, Fisher vectors)"
    signed_views_only = True
    own_inputs = False
    requires_parts = True
    per_view_units = True

    def __init__(self, zfn, n_desc, top_pos, top_neg, bag_of_dim, members, factor=None, chunk=4096):
        self.zfn, self.n_desc, self.chunk = zfn, n_desc, chunk
        self.top_pos, self.top_neg, self.factor = top_pos, top_neg, factor
        self.bag_of_dim, self.members = bag_of_dim, members
        self.bias = None
        self._scales: dict = {}
        self._units: dict = {}

    def _scale(self, view):
        """``m_v``: the largest ``|v(z)_ld|`` per dimension (1 where it is 0, and for "conn")."""
        if view not in self._scales:
            if view == "conn":
                self._scales[view] = None
            else:
                p, n = signed_parts(view)
                m = torch.maximum(abs(p) * self.top_pos, abs(n) * self.top_neg)
                self._scales[view] = torch.where(m > 0, m, torch.ones_like(m))
        return self._scales[view]

    def unit_for(self, view):
        if view not in self._units:
            m = self._scale(view)
            self._units[view] = m if self.factor is None or m is None else m * self.factor
        return self._units[view]

    def input_has_negatives(self, x):
        return False  # the descriptors enter as x_l = 1

    def _chunks(self):
        for lo in range(0, self.n_desc, self.chunk):
            yield lo, min(lo + self.chunk, self.n_desc)

    def _weights(self, lo, hi, view, cache):
        if view == "conn":
            return self.members[lo:hi][:, self.bag_of_dim].to(self.top_pos.dtype)
        if view not in cache:
            if "z" not in cache:
                cache["z"] = self.zfn(lo, hi)
            cache[view] = _view(cache["z"], view) / self._scale(view)
        return cache[view]

    def forward(self, x, view="w"):
        out = x.new_zeros((x.shape[0], self.top_pos.shape[0]))
        for lo, hi in self._chunks():
            out += x[:, lo:hi] @ self._weights(lo, hi, view, {})
        return out

    def backward(self, s, view="w"):
        return self.backward_many([(s, view, 1.0)])

    def backward_many(self, pairs):
        """All transposed products in one pass over the chunks (each chunk's contributions computed once)."""
        out = pairs[0][0].new_zeros((pairs[0][0].shape[0], self.n_desc))
        for lo, hi in self._chunks():
            cache = {}
            for s, view, coef in pairs:
                out[:, lo:hi].add_(s @ self._weights(lo, hi, view, cache).T, alpha=coef)
        return out


def check_pool_rule(rule, where):
    """``TypeError`` naming the rule and the stage when the rule is not defined for pooled mappings."""
    check_rule(rule, PooledMap, where)


def decompose_pool(zfn, n_desc, relevance, rule, bag_of_dim, members, chunk=4096, unit=None):
    """Relevance of each descriptor of one image.

    Parameters
    ----------
    zfn : callable (lo, hi) -> tensor of shape (hi - lo, n_dims)
        Contributions ``z_ld`` of descriptors ``lo:hi``.
    n_desc : int
    relevance : tensor of shape (n_dims,)
        ``R_d``.
    rule : Rule
        Any rule the pooled mapping can evaluate (:func:`check_pool_rule`).
    bag_of_dim : long tensor of shape (n_dims,)
        Index of the bag (spatial-pyramid region) each dimension pools over.
    members : bool tensor of shape (n_desc, n_bags)
        Which descriptors belong to which bag.
    chunk : int
        Descriptors per chunk.
    unit : tensor of shape (n_dims,), optional
        Factor from the contributions given to the thesis' scale of ``z_ld`` (where
        stabilisers act); None: the contributions are on that scale.

    Returns
    -------
    tensor of shape (n_desc,)
        ``R_l`` (Eqs. (2.79)-(2.80)).
    """
    check_pool_rule(rule, "decompose_pool")
    top_p = relevance.new_zeros(relevance.shape[0])
    top_n = relevance.new_zeros(relevance.shape[0])
    for lo in range(0, n_desc, chunk):
        z = zfn(lo, min(lo + chunk, n_desc))
        top_p = torch.maximum(top_p, z.clamp(min=0).amax(0))
        top_n = torch.maximum(top_n, (-z).clamp(min=0).amax(0))
    empty = (top_p == 0) & (top_n == 0)
    lmap = PooledMap(zfn, n_desc, top_p, top_n, bag_of_dim, members, unit, chunk)
    r_live = torch.where(empty, torch.zeros_like(relevance), relevance)
    out = rule.propagate(lmap, relevance.new_ones((1, n_desc)), r_live[None]).input[0]
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
    share = safe_divide(per_bag, size)
    out = m @ share
    orphan = per_bag[size == 0].sum()
    return out + orphan / members.shape[0]

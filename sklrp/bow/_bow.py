"""Bag-of-Words encoding of local descriptors and its LRP propagator (Section 2.4.2).

Pipeline stage: descriptors (from :class:`DenseSIFT`) -> visual-word mapping (hard or
soft rank, Eq. (2.86)) -> p-means pooling per spatial-pyramid region (Eq. (2.65)) ->
l1/l2 normalisation. The backward pass decomposes each BoW dimension onto the
descriptors by Eqs. (2.78)-(2.83).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..propagators import Propagator, RuleConfig, register
from ..rules import LayerRelevance
from ._geometry import N_GEOMETRY
from ._pooling import check_pool_rule, decompose_pool
from ._pyramid import ThreeDInputMixin, check_descriptor_array, check_pyramid, region_members

__all__ = ["BoWEncoder", "BoWEncoderPropagator", "normalise_rows"]


def normalise_rows(x, norm):
    """``x / ||x||`` per row for ``norm`` in {"l1", "l2"}; rows of norm 0 stay 0; None is identity."""
    if norm is None:
        return x
    n = x.abs().sum(-1, keepdim=True) if norm == "l1" else x.pow(2).sum(-1, keepdim=True).sqrt()
    return torch.where(n > 0, x / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(x))


class BoWEncoder(ThreeDInputMixin, TransformerMixin, BaseEstimator):
    """Bag-of-Words histograms over a k-means vocabulary, with spatial pyramid.

    Each descriptor ``l`` is mapped onto the visual words ``d`` by ``m_d(l)``: hard
    assignment (1 for the nearest word) or the soft rank mapping
    ``m_d(l) = base^{-rk_d(l)}`` for the ``n_nearest`` nearest words (Eq. (2.86), rank 1 =
    nearest; Binder et al. 2013 use base 2 and 4 words). Mappings are pooled per
    region by the p-means ``x_d = (1/|L| sum_l m_d(l)^p)^{1/p}`` (Eq. (2.65): ``p=1`` is
    mean/sum pooling, ``p=inf`` max pooling), every pyramid region giving its own block
    of ``n_words`` dimensions, and the concatenation is l1- or l2-normalised.

    Parameters
    ----------
    n_words : int, default=128
        Vocabulary size ``k`` of k-means.
    mapping : {"soft_rank", "hard"}, default="soft_rank"
    n_nearest : int, default=4
        Words receiving a soft rank mapping.
    rank_base : float, default=2.0
        Base ``p`` of the rank mapping (Eq. (2.86)).
    pooling : float, default=1.0
        Exponent ``p > 0`` of the p-means; ``numpy.inf`` for max pooling. Eq. (2.82) is
        defined for non-negative mappings and any ``p`` (``0 < p < 1`` included), and for
        mappings of either sign when ``p`` is a natural number: a non-integer ``p`` with a
        negative mapping value raises ``ValueError``.
    normalize : {"l1", "l2", None}, default="l1"
    pyramid : sequence of (rows, cols), default=((1, 1),)
        Spatial pyramid, e.g. ``((1, 1), (2, 2), (3, 1))``; regions are assigned by
        descriptor centre.
    per_scale : bool, default=False
        One vocabulary and one block of dimensions per descriptor scale (bin size), as
        Section 2.4.3 does ("for each local descriptor scale separately"); blocks are
        ordered scale by scale (increasing bin size), then pyramid region.
    kmeans : {"minibatch", "full"}, default="minibatch"
        ``MiniBatchKMeans`` or ``KMeans``.
    max_descriptors : int, default=50000
        Descriptors sampled (uniformly) from the training images for k-means.
    random_state : int, RandomState or None, default=None

    Attributes
    ----------
    codebook_ : ndarray of shape (n_scales_ * n_words, n_dims)
        Cluster centres (visual words), the scales' vocabularies stacked.
    codebooks_ : list of ndarray of shape (n_words, n_dims)
        One vocabulary per scale (a single one unless ``per_scale``).
    scale_bins_ : ndarray
        Bin size of each vocabulary's descriptors (NaN: all descriptors).
    kmeans_ : list of KMeans or MiniBatchKMeans
        The fitted clusterings.
    n_regions_ : int
        Number of spatial-pyramid regions; the output has
        ``len(codebooks_) * n_regions_ * n_words`` columns.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklrp.bow import DenseSIFT, BoWEncoder
    >>> X = np.random.RandomState(0).rand(4, 40, 40)
    >>> pipe = make_pipeline(DenseSIFT(backend="numpy"), BoWEncoder(n_words=8, random_state=0))
    >>> H = pipe.fit_transform(X)
    >>> H.shape, bool(np.allclose(H.sum(1), 1))
    ((4, 8), True)
    """

    def __init__(self, n_words=128, *, mapping="soft_rank", n_nearest=4, rank_base=2.0, pooling=1.0,
                 normalize="l1", pyramid=((1, 1),), per_scale=False, kmeans="minibatch", max_descriptors=50000,
                 random_state=None):
        self.n_words = n_words
        self.mapping = mapping
        self.n_nearest = n_nearest
        self.rank_base = rank_base
        self.pooling = pooling
        self.normalize = normalize
        self.pyramid = pyramid
        self.per_scale = per_scale
        self.kmeans = kmeans
        self.max_descriptors = max_descriptors
        self.random_state = random_state

    def _check_params(self):
        name = "BoWEncoder"
        if not isinstance(self.n_words, numbers.Integral) or self.n_words < 1:
            raise ValueError(f"{name}: n_words must be a positive integer, got {self.n_words!r}")
        if self.mapping not in ("soft_rank", "hard"):
            raise ValueError(f"{name}: mapping must be 'soft_rank' or 'hard', got {self.mapping!r}")
        if not isinstance(self.n_nearest, numbers.Integral) or self.n_nearest < 1:
            raise ValueError(f"{name}: n_nearest must be a positive integer, got {self.n_nearest!r}")
        if not isinstance(self.rank_base, numbers.Real) or not self.rank_base > 1:
            raise ValueError(f"{name}: rank_base must be a number > 1, got {self.rank_base!r}")
        if not isinstance(self.pooling, numbers.Real) or np.isnan(self.pooling) or self.pooling <= 0:
            raise ValueError(f"{name}: pooling must be a p-means exponent > 0 or numpy.inf, got {self.pooling!r}")
        if self.normalize not in ("l1", "l2", None):
            raise ValueError(f"{name}: normalize must be 'l1', 'l2' or None, got {self.normalize!r}")
        if self.kmeans not in ("minibatch", "full"):
            raise ValueError(f"{name}: kmeans must be 'minibatch' or 'full', got {self.kmeans!r}")
        if not isinstance(self.max_descriptors, numbers.Integral) or self.max_descriptors < 1:
            raise ValueError(f"{name}: max_descriptors must be a positive integer, got {self.max_descriptors!r}")
        return check_pyramid(self.pyramid, name)

    def fit(self, X, y=None):
        """Learn the vocabulary by k-means over (a sample of) the training descriptors.

        Parameters
        ----------
        X : array-like of shape (n_images, n_descriptors, 5 + n_dims)
            Output of :class:`DenseSIFT`.
        y : ignored

        Returns
        -------
        self : BoWEncoder
        """
        levels = self._check_params()
        X = check_descriptor_array(X, "BoWEncoder")
        rng = check_random_state(self.random_state)
        bins = np.unique(X[..., 2]) if self.per_scale else np.array([np.nan])
        self.kmeans_, self.codebooks_ = [], []
        for b in bins:
            desc = X[..., N_GEOMETRY:] if np.isnan(b) else X[..., N_GEOMETRY:][X[..., 2] == b]
            desc = desc.reshape(-1, X.shape[2] - N_GEOMETRY)
            if len(desc) > self.max_descriptors:
                desc = desc[rng.choice(len(desc), self.max_descriptors, replace=False)]
            if len(desc) < self.n_words:
                raise ValueError(f"BoWEncoder: {len(desc)} descriptors are too few for n_words={self.n_words}")
            seed = rng.randint(np.iinfo(np.int32).max)
            if self.kmeans == "full":
                km = KMeans(self.n_words, n_init=1, random_state=seed)
            else:
                km = MiniBatchKMeans(self.n_words, n_init=3, random_state=seed, batch_size=2048)
            self.kmeans_.append(km.fit(desc))
            self.codebooks_.append(np.asarray(km.cluster_centers_, dtype=float))
        self.scale_bins_ = bins
        self.codebook_ = np.concatenate(self.codebooks_)
        self.levels_ = levels
        self.n_regions_ = sum(r * c for r, c in levels)
        self.n_features_in_ = X.shape[1]
        return self

    # -- forward pieces, shared by transform and the propagator ------------------------
    def _map(self, desc, codebook):
        """``m_d(l)`` for the descriptors of one image: (n_desc, n_words)."""
        dist = torch.cdist(desc, codebook)
        n = 1 if self.mapping == "hard" else min(self.n_nearest, codebook.shape[0])
        idx = dist.topk(n, dim=1, largest=False).indices
        ranks = torch.arange(1, n + 1, dtype=desc.dtype, device=desc.device)
        values = torch.ones_like(ranks) if self.mapping == "hard" else self.rank_base ** -ranks
        values = values.expand(desc.shape[0], n)
        return desc.new_zeros(desc.shape[0], codebook.shape[0]).scatter_(1, idx, values.contiguous())

    def _pool(self, m, members):
        """Pooled, unnormalised histogram (n_regions * n_words,) of one image (Eq. (2.65))."""
        mem = members.to(m.dtype)
        if np.isinf(self.pooling):
            vals = torch.where(members[:, :, None], m[:, None, :], torch.zeros_like(m[:, None, :]))
            return vals.amax(0).reshape(-1)
        count = mem.sum(0).clamp(min=1)[:, None]
        p = float(self.pooling)
        return ((mem.T @ self._power(m)) / count).pow(1.0 / p).reshape(-1)

    def _power(self, m):
        """``m_d(l)^p`` of the p-means (Eq. (2.82)), where it is defined."""
        p = float(self.pooling)
        if not p.is_integer() and bool((m < 0).any()):
            raise ValueError(
                f"BoWEncoder: p-means pooling with the non-integer exponent p={p:g} is defined for non-negative "
                "mappings only (Eq. (2.82)), and the mapping has negative values; use a natural number p or a "
                "non-negative mapping"
            )
        return m.pow(p)

    def _scales(self, geo, config):
        """(descriptor selector, codebook tensor) per vocabulary for one image's geometry."""
        for b, cb in zip(self.scale_bins_, self.codebooks_):
            sel = slice(None) if np.isnan(b) else torch.nonzero(geo[:, 2] == float(b)).flatten()
            yield sel, config.tensor(cb)

    def _encode(self, x, config):
        geo, desc = x[..., :N_GEOMETRY], x[..., N_GEOMETRY:]
        out = []
        for i in range(x.shape[0]):
            blocks = [self._pool(self._map(desc[i][sel], cb), region_members(geo[i][sel], self.levels_))
                      for sel, cb in self._scales(geo[i], config)]
            out.append(torch.cat(blocks))
        return normalise_rows(torch.stack(out), self.normalize)

    def transform(self, X):
        """BoW vectors of the images' descriptors.

        Parameters
        ----------
        X : array-like of shape (n_images, n_descriptors, 5 + n_dims)

        Returns
        -------
        ndarray of shape (n_images, len(codebooks_) * n_regions_ * n_words)
        """
        check_is_fitted(self, "codebook_")
        X = check_descriptor_array(X, "BoWEncoder", self.codebook_.shape[1])
        cfg = RuleConfig(None)
        return self._encode(cfg.tensor(X), cfg).numpy()


@register(BoWEncoder)
class BoWEncoderPropagator(Propagator):
    """BoW dimensions -> descriptors (Eqs. (2.78)-(2.83)).

    The normalisation is component-wise and part of the kernel's feature map
    (Eqs. (4.6), (4.8)), so relevance passes it unchanged. The pooling is decomposed
    with ``z_ld = m_d(l)^p / |L_r|`` over the descriptors of the dimension's pyramid
    region (Eq. (2.82); ``p = 1`` is Eq. (2.77)), by the configured rule ("z" is
    Eq. (2.78), "epsilon" adds the stabiliser of Eq. (2.21)), with the empty-dimension
    fallback of Eq. (2.79). For max pooling the share is the argmax indicator, the
    limit of Eq. (2.83); ties share equally. The relevance ``R_l`` of a descriptor is
    spread evenly over its dimensions (the word assignment has no per-dimension
    decomposition); :class:`DenseSIFTPropagator` sums it back.

    With the z-rule the layer is exactly conservative: ``sum_l R_l = sum_d R_d``.
    """

    accepts_nd = True

    def forward(self, x, config):
        return self.step._encode(x, config)

    def _contributions(self, m, members, n_words):
        """z_ld callable over descriptor chunks, its bag index and member mask."""
        st = self.step
        mem = members.to(m.dtype)
        count = mem.sum(0).clamp(min=1)
        if np.isinf(st.pooling):
            vals = torch.where(members[:, :, None], m[:, None, :], torch.zeros_like(m[:, None, :]))
            top = vals.amax(0)  # (n_regions, n_words)
            winner = (vals == top[None]) & (top[None] > 0) & members[:, :, None]
            ties = winner.sum(0).clamp(min=1).to(m.dtype)
            z_full = (winner.to(m.dtype) * (top / ties)[None]).reshape(m.shape[0], -1)

            def zfn(lo, hi):
                return z_full[lo:hi]
        else:
            mp = st._power(m)

            def zfn(lo, hi):
                return (mem[lo:hi, :, None] * mp[lo:hi, None, :] / count[None, :, None]).reshape(hi - lo, -1)

        bag = torch.arange(members.shape[1], device=m.device).repeat_interleave(n_words)
        return zfn, bag

    def backward(self, x, relevance, config):
        check_pool_rule(config.rule, "BoWEncoder")
        st = self.step
        geo, desc = x[..., :N_GEOMETRY], x[..., N_GEOMETRY:]
        out = torch.zeros_like(x)
        for i in range(x.shape[0]):
            offset = 0
            for sel, cb in st._scales(geo[i], config):
                m = st._map(desc[i][sel], cb)
                members = region_members(geo[i][sel], st.levels_)
                width = members.shape[1] * cb.shape[0]
                if m.shape[0]:  # an image without descriptors of this scale has nothing to give relevance to
                    zfn, bag = self._contributions(m, members, cb.shape[0])
                    r_l = decompose_pool(zfn, m.shape[0], relevance[i, offset:offset + width], config.rule, bag,
                                         members)
                    out[i, sel, N_GEOMETRY:] = (r_l / desc.shape[2])[:, None]
                offset += width
        return LayerRelevance(out, x.new_zeros(x.shape[0]))

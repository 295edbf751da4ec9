"""Spectral Relevance Analysis (SpRAy).

SpRAy (thesis Chapter 6, Appendix E, Algorithm 3) screens a whole set of relevance maps
for distinct prediction strategies: the maps are preprocessed (channel sum, sum pooling onto
a coarse grid, optional low-pass filter), a sparse k-nearest-neighbour affinity graph is built
(Eq. (6.1)), its graph Laplacian (Eq. (6.2), or the symmetric normalised L_sym recommended in
Section 6.3) is eigendecomposed, the eigengap suggests the number of strategies, k-means on the
spectral embedding assigns them, and t-SNE on distances derived from the affinity
(Section 6.2, DIST = 1 / (W + eps)) gives a 2-D picture.

All graph objects are :mod:`scipy.sparse` matrices and only the smallest ``n_eigenvalues``
eigenpairs are computed, so SpRAy scales to many thousands of maps without an N x N dense
eigendecomposition.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors, sort_graph_by_row_values
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

__all__ = ["SpRAy", "spray_spectra", "pool_maps"]

# Eigenvalues below this (relative to the spectral scale) count as exact zeros, i.e. as
# connected components; ARPACK and LAPACK both resolve them far below this level.
_ZERO_TOL = 1e-8
# Components up to this size are eigendecomposed densely (cheap, and exact for the
# tiny components that ARPACK cannot handle: it needs k < n).
_DENSE_COMPONENT_SIZE = 300
# ARPACK relative tolerance: eigenvalues to ~1e-12, well below _ZERO_TOL.
_EIGEN_TOL = 1e-12


def _pool_matrix(n_in, n_out):
    """Fractional-overlap sum-pooling matrix of shape (n_out, n_in).

    Pixel ``i`` covers ``[i, i + 1)``, output cell ``a`` covers
    ``[a n_in / n_out, (a + 1) n_in / n_out)``; the entry is the length of their overlap.
    Every column sums to one, so pooling conserves the total relevance exactly, and sizes not
    divisible by the grid (or smaller than it) are handled without dropping pixels.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None)


def pool_maps(maps, pool_shape):
    """Sum-pool maps of shape (n, H, W) onto a regular ``pool_shape`` grid.

    Relevance of pixels straddling a grid-cell border is split by area, so
    ``pool_maps(R, s).sum((1, 2)) == R.sum((1, 2))`` for any H, W and grid (Section 6.3).

    Parameters
    ----------
    maps : ndarray of shape (n_samples, H, W)
        Relevance maps (channels already summed).
    pool_shape : tuple of int (h, w)
        Output grid.

    Returns
    -------
    pooled : ndarray of shape (n_samples, h, w)

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.spray import pool_maps
    >>> pool_maps(np.ones((1, 4, 4)), (2, 2))[0]
    array([[4., 4.],
           [4., 4.]])
    """
    maps = np.asarray(maps, dtype=float)
    ph = _pool_matrix(maps.shape[1], pool_shape[0])
    pw = _pool_matrix(maps.shape[2], pool_shape[1])
    return np.matmul(np.matmul(ph, maps), pw.T)


def _scale_aware_gaps(eigenvalues, zero_tol):
    """Scale-aware eigengaps g_k for k = 1 .. m-1 (1-based k at index k-1).

    With c the number of (numerically) zero eigenvalues, i.e. of connected components, and
    lambda_{c+1} the smallest non-zero one,

        g_k = (lambda_{k+1} - lambda_k) / (lambda_{k+1} + lambda_{c+1})   for k >= c,
        g_k = 0                                                           for k < c.

    The thesis' eigengap |lambda_{k+1} - lambda_k| (Section 6.2) is divided by lambda_{k+1}, so
    it measures how much lambda_{k+1} stands out over the "near-zero" eigenvalues below it;
    lambda_{c+1} regularises the ratio so that relative fluctuations among tiny eigenvalues do
    not count. On kNN graphs the smallest eigenvalues of a homogeneous point cloud rise slowly
    (lambda_{k+1} / lambda_k <= ~2), and their absolute gaps grow further up the spectrum, which
    makes the plain absolute gap choose a meaningless large k. Here g_c = 1/2 exactly, and a
    k > c wins only if lambda_{k+1} > 2 lambda_k + lambda_{c+1}, i.e. for weakly connected groups.
    """
    lam = np.where(eigenvalues <= zero_tol, 0.0, eigenvalues)
    m = lam.shape[0]
    gaps = np.zeros(max(m - 1, 0))
    c = int(np.count_nonzero(lam == 0.0))
    if c >= m:  # all computed eigenvalues are zero: at least m components
        return gaps, c
    tau = lam[c]
    for k in range(max(c, 1), m):
        gaps[k - 1] = (lam[k] - lam[k - 1]) / (lam[k] + tau)
    return gaps, c


class SpRAy(ClusterMixin, BaseEstimator):
    """Spectral Relevance Analysis of a set of relevance maps (Algorithm 3).

    Steps (thesis Section 6.2, 6.3 and Appendix E): (1) preprocess each map -- sum over
    channels, optional Gaussian low-pass, sum pooling onto ``pool_shape``, optional per-map
    normalisation; (2) sparse kNN affinity ``W`` (Eq. (6.1)), symmetrised as
    ``w_ij = max(w_ij, w_ji)``; (3) graph Laplacian ``L = D - W`` (Eq. (6.2)) or
    ``L_sym = I - D^{-1/2} W D^{-1/2}``; (4) its ``n_eigenvalues`` smallest eigenpairs by a
    sparse eigensolver; (5) number of clusters from the eigengap; (6) k-means on the spectral
    embedding; (7) t-SNE on ``DIST = 1 / (W + eps)``.

    Parameters
    ----------
    n_clusters : "eigengap" or int, default="eigengap"
        Number of clusters. ``"eigengap"`` picks the k with the largest *scale-aware* eigengap
        ``g_k = (lambda_{k+1} - lambda_k) / (lambda_{k+1} + lambda_{c+1})`` among the first
        ``n_eigenvalues - 1`` candidates, where c is the number of connected components
        (zero eigenvalues) and ``lambda_{c+1}`` the first non-zero eigenvalue. Unlike the
        plain gap ``|lambda_{k+1} - lambda_k|`` of Section 6.2 it does not split a
        homogeneous point cloud, whose small eigenvalues rise slowly but with growing
        absolute gaps; ``g_c = 1/2``, and more clusters are chosen only where
        ``lambda_{k+1} > 2 lambda_k + lambda_{c+1}``. On point clouds that are genuinely
        one-dimensional (chains) the spectrum grows quadratically and may be split.
    n_neighbors : int or None, default=None
        k of the kNN graph; ``None`` means ``ceil(log(n_samples))`` (Section 6.3), at least 1.
        Must be smaller than ``n_samples``.
    affinity : {"knn", "knn_distance", "rbf"}, default="knn"
        Edge weights on the kNN graph. ``"knn"``: binary, Eq. (6.1). ``"knn_distance"``:
        ``exp(-d_ij^2 / (s_i s_j))`` with ``s_i`` the distance of i to its k-th neighbour
        (locally scaled; Section 6.2 reports near-identical spectra to the binary graph).
        ``"rbf"``: ``exp(-gamma d_ij^2)`` on the same sparse kNN edges (the dense, fully
        connected RBF graph would need N^2 memory).
    gamma : float or None, default=None
        RBF width for ``affinity="rbf"``; ``None`` uses 1 / median squared kNN distance.
    laplacian : {"sym", "unnormalized"}, default="sym"
        ``"sym"``: ``L_sym`` (Ng et al., recommended in Section 6.3; eigenvalues in [0, 2],
        comparable across classes of different size). ``"unnormalized"``: ``L = D - W``,
        Eq. (6.2).
    n_eigenvalues : int, default=20
        Number of smallest eigenvalues / eigenvectors computed (Fig. 6.3 shows 20).
        Clipped to ``n_samples``.
    pool_shape : tuple of int or None, default=(20, 20)
        Sum-pooling grid for maps (Section 6.3); sizes not divisible by the grid are handled
        by splitting border pixels by area. ``None`` keeps the resolution. Ignored for flat
        (n_samples, n_features) input without ``map_shape``.
    map_shape : tuple of int or None, default=None
        Reshape flat input rows to ``(H, W)`` or ``(H, W, C)`` maps (e.g. the output of
        :class:`sklrp.LRPTransformer` on flattened images). ``None``: 3-D input is
        (n, H, W), 4-D input is (n, H, W, C) (see ``channel_axis``), 2-D input is used as
        feature vectors without spatial preprocessing.
    channel_axis : int, default=-1
        Channel axis of 4-D maps (``-1`` for (n, H, W, C), ``1`` for (n, C, H, W)); channels
        are summed.
    smoothing_sigma : float or None, default=None
        Standard deviation (input pixels) of a Gaussian low-pass applied to each map before
        pooling (Appendix E). Needs spatial maps.
    normalize : {None, "l1", "l2", "max"}, default=None
        Per-map normalisation after pooling by the sum of absolute values, the Euclidean norm
        or the maximum absolute value. All-zero maps are left as zeros.
    embedding : {"tsne", "umap"} or None, default="tsne"
        2-D embedding for visualisation. ``"tsne"`` runs t-SNE on the sparse distance graph
        ``1 / (W + distance_eps)`` (Section 6.2, Algorithm 3 lines 12-13); ``"umap"`` (needs
        ``umap-learn``) embeds the preprocessed maps with the same number of neighbours;
        ``None`` skips the step (``embedding_`` is then None).
    perplexity : float, default=7
        t-SNE perplexity (Section 6.3); clipped to ``(n_samples - 1) / 3``.
    early_exaggeration : float, default=6
        t-SNE early exaggeration (Section 6.3).
    distance_eps : float, default=1e-2
        The eps of ``DIST = 1 / (W + eps)``; unconnected pairs get distance ``1 / eps``.
    random_state : int, RandomState instance or None, default=None
        Seeds the eigensolver start vector, k-means and t-SNE.
    verbose : bool, default=False
        Show a tqdm progress bar over the steps.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster label of each map.
    eigenvalues_ : ndarray of shape (n_eigenvalues,)
        Smallest eigenvalues of the Laplacian, ascending.
    eigenvectors_ : ndarray of shape (n_samples, n_eigenvalues)
        Corresponding eigenvectors (unit norm, sign fixed so the largest entry is positive).
    gap_scores_ : ndarray of shape (n_eigenvalues - 1,)
        Scale-aware eigengap ``g_k`` for k = 1, 2, ... (see ``n_clusters``).
    eigengap_ : float
        ``g_k`` at ``k = n_clusters_``: 0.5 when the graph's connected components are the
        best explanation, towards 1 for a clear gap after weakly connected groups.
    n_components_ : int
        Number of connected components of the affinity graph.
    n_clusters_ : int
        Number of clusters used.
    affinity_matrix_ : scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Symmetric affinity ``W``.
    embedding_ : ndarray of shape (n_samples, 2) or None
        t-SNE / UMAP coordinates.
    n_neighbors_ : int
        The k actually used.
    preprocessed_ : ndarray of shape (n_samples, n_features_pooled)
        The preprocessed maps, flattened.
    n_features_in_ : int
        Size of the second input axis.

    See Also
    --------
    spray_spectra : SpRAy per class and a ranking of classes (Fig. 6.5).

    Notes
    -----
    Eigenpairs are computed per connected component of ``W`` (the Laplacian is block
    diagonal), with ARPACK's Lanczos method (sparse mat-vecs only) for large components and
    a dense solver for components of at most 300 nodes; this resolves repeated zero
    eigenvalues exactly.
    k-means runs on the first ``n_clusters_`` eigenvectors; for ``laplacian="sym"`` their rows
    are first normalised to unit length (Ng, Jordan and Weiss).

    Bad input: NaN / inf raise ``ValueError``; fewer than 2 samples, ``n_neighbors >=
    n_samples`` and data whose maps are all identical after preprocessing raise
    ``ValueError``; single constant maps are fine.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp import SpRAy
    >>> rng = np.random.default_rng(0)
    >>> maps = np.concatenate([rng.normal(0, 1, (40, 8, 8)),
    ...                        rng.normal(0, 1, (20, 8, 8)) + 10 * (np.arange(64) == 7).reshape(8, 8)])
    >>> spray = SpRAy(pool_shape=None, embedding=None, random_state=0).fit(maps)
    >>> spray.n_clusters_
    2
    >>> np.bincount(spray.labels_).tolist()
    [40, 20]
    """

    _parameter_constraints = {
        "n_clusters": [StrOptions({"eigengap"}), Interval(numbers.Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "affinity": [StrOptions({"knn", "knn_distance", "rbf"})],
        "gamma": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "laplacian": [StrOptions({"sym", "unnormalized"})],
        "n_eigenvalues": [Interval(numbers.Integral, 2, None, closed="left")],
        "pool_shape": [tuple, list, None],
        "map_shape": [tuple, list, None],
        "channel_axis": [numbers.Integral],
        "smoothing_sigma": [Interval(numbers.Real, 0, None, closed="left"), None],
        "normalize": [StrOptions({"l1", "l2", "max"}), None],
        "embedding": [StrOptions({"tsne", "umap"}), None],
        "perplexity": [Interval(numbers.Real, 0, None, closed="neither")],
        "early_exaggeration": [Interval(numbers.Real, 1, None, closed="left")],
        "distance_eps": [Interval(numbers.Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_clusters="eigengap",
        *,
        n_neighbors=None,
        affinity="knn",
        gamma=None,
        laplacian="sym",
        n_eigenvalues=20,
        pool_shape=(20, 20),
        map_shape=None,
        channel_axis=-1,
        smoothing_sigma=None,
        normalize=None,
        embedding="tsne",
        perplexity=7.0,
        early_exaggeration=6.0,
        distance_eps=1e-2,
        random_state=None,
        verbose=False,
    ):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.affinity = affinity
        self.gamma = gamma
        self.laplacian = laplacian
        self.n_eigenvalues = n_eigenvalues
        self.pool_shape = pool_shape
        self.map_shape = map_shape
        self.channel_axis = channel_axis
        self.smoothing_sigma = smoothing_sigma
        self.normalize = normalize
        self.embedding = embedding
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.distance_eps = distance_eps
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ steps
    def _preprocess(self, X):
        """Algorithm 3, lines 6-8: maps -> flat feature rows."""
        n = X.shape[0]
        maps = None
        if self.map_shape is not None:
            shape = tuple(int(s) for s in self.map_shape)
            if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
                raise ValueError(
                    f"map_shape={shape} does not match {int(np.prod(X.shape[1:]))} values per sample."
                )
            maps = X.reshape((n,) + shape)
        elif X.ndim >= 3:
            maps = X
        if maps is None:
            if self.smoothing_sigma is not None:
                raise ValueError(
                    "smoothing_sigma needs spatial maps: pass (n, H, W[, C]) input or set map_shape."
                )
            feats = X.reshape(n, -1).astype(float, copy=True)
        else:
            if maps.ndim == 4:
                axis = self.channel_axis
                if axis not in (-1, 1, 3):
                    raise ValueError(f"channel_axis must be -1, 1 or 3, got {axis}.")
                maps = maps.sum(axis=axis)  # channel sum (Section 6.3)
            elif maps.ndim != 3:
                raise ValueError(
                    f"Maps must be (n, H, W) or (n, H, W, C); got shape {maps.shape}."
                )
            maps = maps.astype(float, copy=False)
            if self.smoothing_sigma:
                maps = gaussian_filter(maps, sigma=(0, self.smoothing_sigma, self.smoothing_sigma))
            if self.pool_shape is not None:
                pool_shape = tuple(int(s) for s in self.pool_shape)
                if len(pool_shape) != 2 or min(pool_shape) < 1:
                    raise ValueError(f"pool_shape must be two positive ints, got {self.pool_shape}.")
                maps = pool_maps(maps, pool_shape)
            feats = maps.reshape(n, -1)
        if self.normalize is not None:
            if self.normalize == "l1":
                norm = np.abs(feats).sum(axis=1)
            elif self.normalize == "l2":
                norm = np.sqrt((feats**2).sum(axis=1))
            else:
                norm = np.abs(feats).max(axis=1)
            norm[norm == 0] = 1.0  # all-zero maps stay zero
            feats = feats / norm[:, None]
        return feats

    def _affinity(self, feats, k, n_query):
        """Eq. (6.1) kNN affinity (binary or weighted), symmetrised with max; sparse."""
        n = feats.shape[0]
        nn = NearestNeighbors(n_neighbors=n_query).fit(feats)
        dist, ind = nn.kneighbors()  # excludes each point itself
        d, i = dist[:, :k], ind[:, :k]
        if self.affinity == "knn":
            w = np.ones_like(d)
        elif self.affinity == "knn_distance":
            scale = d[:, -1].copy()
            scale = np.maximum(scale, np.finfo(float).tiny)
            denom = scale[:, None] * scale[i]
            w = np.exp(-(d**2) / denom)
        else:
            gamma = self.gamma
            if gamma is None:
                med = np.median(d**2)
                positive = d[d > 0]
                if med <= 0:
                    med = np.mean(positive**2) if positive.size else 1.0
                gamma = 1.0 / med
            w = np.exp(-gamma * d**2)
        rows = np.repeat(np.arange(n), k)
        W = sp.csr_matrix((w.ravel(), (rows, i.ravel())), shape=(n, n))
        W = W.maximum(W.T).tocsr()  # w_ij = max(w_ij, w_ji), von Luxburg (2007)
        W.sort_indices()
        return W, ind

    def _laplacian(self, W):
        """Eq. (6.2): L = D - W, or L_sym = I - D^{-1/2} W D^{-1/2}."""
        deg = np.asarray(W.sum(axis=1)).ravel()
        if self.laplacian == "unnormalized":
            return (sp.diags(deg) - W).tocsr()
        inv_sqrt = np.zeros_like(deg)
        nz = deg > 0
        inv_sqrt[nz] = 1.0 / np.sqrt(deg[nz])
        S = sp.diags(inv_sqrt) @ W @ sp.diags(inv_sqrt)
        # isolated nodes (possible only if all their weights underflowed) get L_ii = 0,
        # i.e. their own zero eigenvalue, like a connected component of size one.
        return (sp.diags(nz.astype(float)) - S).tocsr()

    def _spectrum(self, L, W, m, random_state):
        """Smallest m eigenpairs of the block-diagonal L, component by component."""
        n = L.shape[0]
        n_comp, comp = connected_components(W, directed=False)
        scale = max(float(L.diagonal().max()), 1e-300)
        vals, vecs = [], []
        for c in range(n_comp):
            idx = np.flatnonzero(comp == c)
            Lc = L[idx][:, idx]
            mc = min(m, idx.size)
            if idx.size <= max(_DENSE_COMPONENT_SIZE, 2 * m + 1):
                lc, vc = np.linalg.eigh(Lc.toarray())
                lc, vc = lc[:mc], vc[:, :mc]
            else:
                # Lanczos on the largest eigenvalues of (scale I - L), i.e. the smallest of L:
                # only sparse mat-vecs. (Shift-invert needs an LU of L, whose fill-in on kNN
                # graphs of high-dimensional data is nearly dense.)
                v0 = random_state.uniform(-1, 1, idx.size)
                M = sp.identity(idx.size, format="csr") * (2.0 * scale) - Lc
                lc, vc = eigsh(M, k=mc, which="LA", v0=v0, tol=_EIGEN_TOL)
                lc = 2.0 * scale - lc
                order = np.argsort(lc)
                lc, vc = lc[order], vc[:, order]
            full = np.zeros((n, mc))
            full[idx] = vc
            vals.append(lc)
            vecs.append(full)
        vals = np.concatenate(vals)
        vecs = np.concatenate(vecs, axis=1)
        order = np.argsort(vals, kind="stable")[:m]
        vals = np.clip(vals[order], 0.0, None)  # L is PSD; clip round-off below zero
        vecs = vecs[:, order]
        # deterministic signs: largest |entry| of each eigenvector positive
        pick = np.argmax(np.abs(vecs), axis=0)
        signs = np.sign(vecs[pick, np.arange(vecs.shape[1])])
        signs[signs == 0] = 1.0
        return vals, vecs * signs, n_comp, scale

    def _tsne(self, W, ind, n, random_state):
        """Algorithm 3, lines 12-13: t-SNE on the sparse graph DIST = 1 / (W + eps)."""
        perplexity = min(float(self.perplexity), max((n - 1) / 3.0, 1e-3))
        n_tsne = min(n - 1, int(3.0 * perplexity + 1))
        # pattern: the n_tsne nearest neighbours in feature space plus every graph edge, so
        # each row has enough entries; pairs not connected in W get distance 1 / eps.
        rows = np.repeat(np.arange(n), n_tsne)
        P = sp.csr_matrix((np.ones(rows.size), (rows, ind[:, :n_tsne].ravel())), shape=(n, n))
        P = (P + (W != 0).astype(float)).tocoo()
        r, c = P.row, P.col
        w = np.asarray(W[r, c]).ravel()
        # explicit zero self-distances: sklearn's neighbour search on a precomputed graph
        # counts each sample as its own first neighbour.
        r = np.concatenate([r, np.arange(n)])
        c = np.concatenate([c, np.arange(n)])
        d = np.concatenate([1.0 / (w + self.distance_eps), np.zeros(n)])
        D = sp.csr_matrix((d, (r, c)), shape=(n, n))
        D = sort_graph_by_row_values(D, copy=False, warn_when_not_sorted=False)
        tsne = TSNE(
            n_components=2,
            perplexity=perplexity,
            early_exaggeration=self.early_exaggeration,
            metric="precomputed",
            init="random",
            random_state=random_state.randint(np.iinfo(np.int32).max),
        )
        return tsne.fit_transform(D)

    def _umap(self, feats, k, random_state):
        try:
            import umap  # optional dependency
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                'embedding="umap" needs the optional package umap-learn (pip install umap-learn).'
            ) from exc
        reducer = umap.UMAP(
            n_neighbors=max(k + 1, 2),
            n_components=2,
            random_state=random_state.randint(np.iinfo(np.int32).max),
        )
        return reducer.fit_transform(feats)

    # ------------------------------------------------------------------ API
    def fit(self, X, y=None):
        """Run Algorithm 3 on relevance maps ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n_samples, H, W) or (n_samples, H, W, C)
            Relevance maps (or any maps / feature vectors).
        y : None
            Ignored.

        Returns
        -------
        self : SpRAy
        """
        self._validate_params()
        X = validate_data(self, X, allow_nd=True, ensure_min_samples=2, dtype=[np.float64, np.float32])
        n = X.shape[0]
        rs = check_random_state(self.random_state)
        steps = ["preprocess", "affinity", "laplacian", "spectrum", "clustering", "embedding"]
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(steps), desc="SpRAy", leave=False)

        def advance(step):
            if bar is not None:
                bar.set_postfix_str(step)
                bar.update(1)

        feats = self._preprocess(X)
        if not np.all(np.isfinite(feats)):
            raise ValueError("Preprocessing produced NaN or infinite values.")
        if np.ptp(feats, axis=0).max() == 0:
            raise ValueError(
                "All maps are identical after preprocessing: there is nothing to cluster."
            )
        self.preprocessed_ = feats
        advance("preprocess")

        k = self.n_neighbors if self.n_neighbors is not None else max(1, math.ceil(math.log(n)))
        if k >= n:
            raise ValueError(
                f"n_neighbors={k} must be smaller than n_samples={n}; pass fewer neighbours "
                "or more maps."
            )
        self.n_neighbors_ = int(k)
        n_query = k
        if self.embedding == "tsne":
            perplexity = min(float(self.perplexity), max((n - 1) / 3.0, 1e-3))
            n_query = max(k, min(n - 1, int(3.0 * perplexity + 1)))
        W, ind = self._affinity(feats, k, n_query)
        self.affinity_matrix_ = W
        advance("affinity")

        L = self._laplacian(W)
        advance("laplacian")

        m = min(int(self.n_eigenvalues), n)
        vals, vecs, n_comp, scale = self._spectrum(L, W, m, rs)
        self.eigenvalues_, self.eigenvectors_, self.n_components_ = vals, vecs, int(n_comp)
        self.gap_scores_, _ = _scale_aware_gaps(vals, _ZERO_TOL * scale)
        advance("spectrum")

        if self.n_clusters == "eigengap":
            if self.gap_scores_.size == 0 or not np.any(self.gap_scores_ > 0):
                n_clusters = min(self.n_components_, m)
            else:
                n_clusters = int(np.argmax(self.gap_scores_)) + 1
        else:
            n_clusters = int(self.n_clusters)
            if n_clusters > n:
                raise ValueError(f"n_clusters={n_clusters} exceeds n_samples={n}.")
            if n_clusters > m:
                raise ValueError(
                    f"n_clusters={n_clusters} needs at least as many eigenvectors; "
                    f"increase n_eigenvalues (now {m})."
                )
        self.n_clusters_ = n_clusters
        self.eigengap_ = (
            float(self.gap_scores_[n_clusters - 1]) if n_clusters <= self.gap_scores_.size else 0.0
        )

        if n_clusters == 1:
            self.labels_ = np.zeros(n, dtype=np.int64)
        else:
            U = vecs[:, :n_clusters]
            if self.laplacian == "sym":
                norms = np.linalg.norm(U, axis=1)
                norms[norms == 0] = 1.0
                U = U / norms[:, None]
            km = KMeans(n_clusters=n_clusters, n_init=10, random_state=rs.randint(np.iinfo(np.int32).max))
            self.labels_ = km.fit_predict(U).astype(np.int64)
        advance("clustering")

        if self.embedding == "tsne":
            self.embedding_ = self._tsne(W, ind, n, rs)
        elif self.embedding == "umap":
            self.embedding_ = self._umap(feats, k, rs)
        else:
            self.embedding_ = None
        advance("embedding")
        if bar is not None:
            bar.close()
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the cluster labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n_samples, H, W) or (n_samples, H, W, C)
            Relevance maps.
        y : None
            Ignored.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X).labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def spray_spectra(relevance_by_class, y=None, *, spray=None, sort_by="lambda2", verbose=False):
    """Run SpRAy per class and rank the classes, like Fig. 6.5.

    Fig. 6.5 orders classes by lambda_2 of ``L_sym``: a small lambda_2 means a weakly
    connected sub-group of relevance maps, i.e. a separate prediction strategy worth a look.

    Parameters
    ----------
    relevance_by_class : dict or array-like
        Either a mapping ``class -> maps`` or an array of maps together with ``y``.
    y : array-like of shape (n_samples,) or None
        Class of each map when ``relevance_by_class`` is an array.
    spray : SpRAy or None
        Template estimator (cloned per class); default ``SpRAy(embedding=None)``. Keep
        ``laplacian="sym"`` so that spectra of classes of different size are comparable.
    sort_by : {"lambda2", "eigengap"}, default="lambda2"
        Rank by ascending lambda_2 (Fig. 6.5) or by descending scale-aware eigengap.
    verbose : bool, default=False
        Progress bar over classes.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``classes`` (ranked, most suspicious first), ``eigenvalues`` (n_classes, n_eigenvalues;
        NaN-padded if a class has fewer maps), ``lambda2``, ``eigengap``, ``n_clusters``,
        ``n_samples`` (all in ranked order) and ``estimators`` (dict class -> fitted SpRAy).

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp import SpRAy, spray_spectra
    >>> rng = np.random.default_rng(0)
    >>> R = rng.normal(size=(120, 6, 6))
    >>> y = np.repeat([0, 1], 60)
    >>> R[60:90, 0, 0] += 20  # class 1 has two strategies
    >>> res = spray_spectra(R, y, spray=SpRAy(pool_shape=None, embedding=None, random_state=0))
    >>> res.classes.tolist()
    [1, 0]
    >>> res.n_clusters.tolist()
    [2, 1]
    """
    if sort_by not in ("lambda2", "eigengap"):
        raise ValueError(f'sort_by must be "lambda2" or "eigengap", got {sort_by!r}.')
    if isinstance(relevance_by_class, dict):
        if y is not None:
            raise ValueError("Pass y only with an array of maps, not with a dict.")
        groups = {c: np.asarray(r) for c, r in relevance_by_class.items()}
    else:
        if y is None:
            raise ValueError("y is required when relevance_by_class is an array.")
        R = np.asarray(relevance_by_class)
        y = np.asarray(y)
        if y.shape[0] != R.shape[0]:
            raise ValueError(f"y has {y.shape[0]} entries for {R.shape[0]} maps.")
        groups = {c: R[y == c] for c in np.unique(y)}
    if not groups:
        raise ValueError("No classes given.")
    template = SpRAy(embedding=None) if spray is None else spray
    classes = list(groups)
    it = classes
    if verbose:
        from tqdm.auto import tqdm

        it = tqdm(classes, desc="SpRAy per class", leave=False)
    fitted = {}
    for c in it:
        fitted[c] = clone(template).fit(groups[c])
    m = max(est.eigenvalues_.size for est in fitted.values())
    eig = np.full((len(classes), m), np.nan)
    for r, c in enumerate(classes):
        ev = fitted[c].eigenvalues_
        eig[r, : ev.size] = ev
    lam2 = eig[:, 1]
    gap = np.array([fitted[c].eigengap_ for c in classes])
    ncl = np.array([fitted[c].n_clusters_ for c in classes])
    if sort_by == "lambda2":
        order = np.lexsort((-gap, lam2))
    else:
        order = np.lexsort((lam2, -gap))
    cls_arr = np.empty(len(classes), dtype=object)
    cls_arr[:] = classes
    try:
        cls_arr = np.asarray(classes)[order]
    except Exception:  # heterogeneous labels: keep an object array
        cls_arr = cls_arr[order]
    return Bunch(
        classes=cls_arr,
        eigenvalues=eig[order],
        lambda2=lam2[order],
        eigengap=gap[order],
        n_clusters=ncl[order],
        n_samples=np.array([groups[c].shape[0] for c in classes])[order],
        estimators=fitted,
    )

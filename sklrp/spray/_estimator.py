"""The SpRAy estimator (Algorithm 3) and the per-class spectra of Fig. 6.5."""

from __future__ import annotations

import math
import numbers
import os
import time
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context, clone
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data
from threadpoolctl import threadpool_limits

from .. import _blockwise
from . import _embedding, _graph, _spectrum
from ._preprocess import preprocess

# clustering="auto" runs mini-batch k-means from this many maps on
MINIBATCH_MIN_SAMPLES = 100_000


def _n_threads(n_jobs):
    """joblib's convention: None -> 1, -1 -> all cores, -2 -> all but one."""
    cpus = os.cpu_count() or 1
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, cpus + 1 + n_jobs)
    return max(1, int(n_jobs))


class _Steps:
    """Per-step wall time and a tqdm bar over the steps (plus sub-bars) when verbose."""

    def __init__(self, names, verbose):
        self.times = {}
        self.verbose = bool(verbose)
        self.bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.bar = tqdm(total=len(names), desc="SpRAy", unit="step")

    @contextmanager
    def step(self, name):
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        t = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t
        if self.bar is not None:
            self.bar.update(1)

    def sub(self, desc, total, unit):
        """A callable advancing a nested bar (or None when quiet) and a closer."""
        if self.bar is None:
            return None, lambda: None
        bar = self._tqdm(total=total, desc=desc, unit=unit, leave=False, position=1)
        return bar.update, bar.close

    def close(self):
        if self.bar is not None:
            self.bar.close()


class SpRAy(ClusterMixin, BaseEstimator):
    """Spectral Relevance Analysis of a set of relevance maps (Algorithm 3).

    Steps (thesis Section 6.2, 6.3 and Appendix E): (1) preprocess each map -- sum over
    channels, optional Gaussian low-pass, sum pooling onto ``pool_shape``, optional per-map
    normalisation; (2) sparse kNN affinity ``W`` (Eq. (6.1)), symmetrised as
    ``w_ij = max(w_ij, w_ji)``; (3) graph Laplacian ``L = D - W`` (Eq. (6.2)) or
    ``L_sym = I - D^{-1/2} W D^{-1/2}``; (4) its ``n_eigenvalues`` smallest eigenpairs by a
    sparse eigensolver; (5) number of clusters from the eigengap; (6) k-means on the spectral
    embedding; (7) t-SNE on ``DIST = 1 / (W + eps)``.

    Every step keeps memory O(N k) beyond the maps themselves; for large N the neighbour
    search can be approximate (``knn``), the spectrum comes from one deflated sparse solve
    (``eigen_solver``), k-means runs in mini-batches (``clustering``) and t-SNE is FFT-accelerated
    (openTSNE). The optional packages come with ``pip install "sklrp[scale]"``.

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
        SpRAy needs at least ``2 (k + 1)`` maps (``n_clusters (k + 1)`` for an integer
        ``n_clusters``): each strategy needs ``k + 1`` maps to be a neighbourhood of its own.
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
        ``1 / (W + distance_eps)`` (Section 6.2, Algorithm 3 lines 12-13), started from the
        first two non-trivial Laplacian eigenvectors: with openTSNE installed its optimiser
        (Barnes-Hut below 10,000 maps, FFT-accelerated interpolation above), otherwise
        scikit-learn's Barnes-Hut t-SNE (``embedding_method_`` says which ran). ``"umap"``
        (needs ``umap-learn``) embeds the preprocessed maps with the same number of
        neighbours; ``None`` skips the step (``embedding_`` is then None), the fastest
        choice when only labels and spectra are needed.
    perplexity : float, default=7
        t-SNE perplexity (Section 6.3); clipped to ``(n_samples - 1) / 3``.
    early_exaggeration : float, default=6
        t-SNE early exaggeration (Section 6.3).
    distance_eps : float, default=1e-2
        The eps of ``DIST = 1 / (W + eps)``; unconnected pairs get distance ``1 / eps``.
    knn : {"auto", "exact", "approximate"}, default="auto"
        Nearest-neighbour search for the graph. ``"exact"``: scikit-learn's brute-force /
        tree search, time O(N^2 d). ``"approximate"`` (faiss-cpu, extra ``scale``): the maps
        are partitioned into cells of about 64 maps by a two-level k-means on their 32 leading
        principal components, and each map is compared, by exact distances in the full space,
        with the maps of the ``knn_probes`` cells nearest its own; time about
        O(N (knn_probes 64 d + sqrt(N / 64) 32)). Only the choice of candidates is approximate:
        a neighbour can be missed, never mis-measured (see the user guide for the measured
        share of exact neighbours found and the agreement with the exact path). ``"auto"``:
        exact below 20,000 maps, approximate from there on -- or exact with a ``UserWarning``
        when faiss-cpu is not installed; ``"approximate"`` without faiss-cpu raises
        ``ImportError``.
    knn_probes : int, default=64
        ``knn="approximate"``: number of cells (of about 64 maps) each map is compared with:
        its own and the nearest others by centroid; more when these hold fewer maps than the
        neighbours asked for. Time grows in proportion, and so does the share of the exact
        neighbours found (on a million planted maps: 0.86 with 32, 0.95 with 64, 0.99 with
        128; see the user guide). When ``knn_probes`` reaches the number of cells (about
        n_samples / 64) the search is exact. Validated, but unused, by the exact search.
    eigen_solver : {"auto", "arpack", "amg"}, default="auto"
        Sparse eigensolver for components of more than 300 maps (smaller ones are solved
        densely). ``"arpack"``: Lanczos on ``c I - L`` (sparse mat-vecs only). ``"amg"``:
        LOBPCG preconditioned by smoothed-aggregation algebraic multigrid (pyamg, extra
        ``scale``; ``ImportError`` without it), falling back to ARPACK with a warning if it
        does not converge. ``"auto"`` is ARPACK, which was faster on SpRAy's kNN graphs
        (100,000 planted maps: 4.9 against 10.2 CPU seconds, eigenvalues equal to 4e-10).
    clustering : {"auto", "kmeans", "minibatch"}, default="auto"
        k-means on the spectral embedding: ``"kmeans"`` (10 restarts), ``"minibatch"``
        (:class:`~sklearn.cluster.MiniBatchKMeans`, 3 restarts), ``"auto"``: mini-batch from
        100,000 maps on.
    n_jobs : int or None, default=None
        Threads for every step (neighbour search, linear algebra, k-means, t-SNE). ``None``
        means 1: reproducible, and fastest where other work shares the cores (several threads
        spin-waiting on a busy 2-core machine made a 183-map fit 20x slower); ``-1`` uses all
        cores. With ``knn="approximate"`` and more than one thread the k-means partition may
        differ slightly between runs (parallel sums), and with it a few neighbour lists.
    random_state : int, RandomState instance or None, default=None
        Seeds the partition of the approximate neighbour search, the eigensolver start vector,
        k-means and t-SNE.
    verbose : bool, default=False
        Show tqdm progress bars: one over the steps, and nested ones over the neighbour
        search and the t-SNE iterations.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster label of each map.
    eigenvalues_ : ndarray of shape (n_eigenvalues,)
        Smallest eigenvalues of the Laplacian, ascending; one exact zero per connected
        component.
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
        The preprocessed maps, flattened (float32 for float32 input).
    knn_method_ : {"exact", "approximate"}
        The neighbour search that ran.
    eigen_solver_ : {"arpack", "amg"}
        The sparse eigensolver chosen (used only for components of more than 300 maps).
    embedding_method_ : str or None
        ``"openTSNE-bh"``, ``"openTSNE-fft"``, ``"sklearn-bh"``, ``"umap"`` or None.
    timings_ : dict
        Wall time in seconds of each step: ``preprocess``, ``neighbors``, ``affinity``,
        ``laplacian``, ``spectrum``, ``clustering``, ``embedding``.
    n_features_in_ : int
        Size of the second input axis.

    See Also
    --------
    spray_spectra : SpRAy per class and a ranking of classes (Fig. 6.5).

    Notes
    -----
    Each connected component of ``W`` contributes one exact zero eigenvalue with a known
    eigenvector (``D^{1/2} 1`` for ``L_sym``, constant for ``L``), so repeated zeros are
    resolved structurally. The non-zero eigenvalues come from a dense solver for components
    of at most 300 maps and from one sparse solve over all larger components with those null
    vectors projected out.
    k-means runs on the first ``n_clusters_`` eigenvectors; for ``laplacian="sym"`` their rows
    are first normalised to unit length (Ng, Jordan and Weiss).

    Bad input: NaN / inf raise ``ValueError``; fewer than 2 samples, ``n_neighbors >=
    n_samples``, fewer maps than the clusters need (see ``n_neighbors``) and data whose maps
    are all identical after preprocessing raise ``ValueError``; single constant maps are fine.

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
        "knn": [StrOptions({"auto", "exact", "approximate"})],
        "knn_probes": [Interval(numbers.Integral, 1, None, closed="left")],
        "eigen_solver": [StrOptions({"auto", "arpack", "amg"})],
        "clustering": [StrOptions({"auto", "kmeans", "minibatch"})],
        "n_jobs": [numbers.Integral, None],
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
        knn="auto",
        knn_probes=64,
        eigen_solver="auto",
        clustering="auto",
        n_jobs=None,
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
        self.knn = knn
        self.knn_probes = knn_probes
        self.eigen_solver = eigen_solver
        self.clustering = clustering
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _check_sizes(self, n):
        """k, m and n_clusters against the number of maps; clear errors before any work."""
        k = self.n_neighbors if self.n_neighbors is not None else max(1, math.ceil(math.log(n)))
        if k >= n:
            raise ValueError(
                f"n_neighbors={k} must be smaller than n_samples={n}; pass fewer neighbours "
                "or more maps."
            )
        m = min(int(self.n_eigenvalues), n)
        if self.n_clusters != "eigengap":
            c = int(self.n_clusters)
            if c > n:
                raise ValueError(f"n_clusters={c} exceeds n_samples={n}.")
            if c > m:
                raise ValueError(
                    f"n_clusters={c} needs at least as many eigenvectors; "
                    f"increase n_eigenvalues (now {m})."
                )
        groups = 2 if self.n_clusters == "eigengap" else int(self.n_clusters)
        need = max(groups, 1) * (k + 1)
        if n < need:
            which = "two strategies" if self.n_clusters == "eigengap" else f"n_clusters={groups} strategies"
            fix = "a smaller n_neighbors" + ("" if self.n_clusters == "eigengap" else " or fewer clusters")
            raise ValueError(
                f"SpRAy needs at least {need} maps here, got {n}: to tell {which} apart, each needs "
                f"n_neighbors + 1 = {k + 1} maps (n_neighbors={k}"
                f"{' = ceil(log(n_samples))' if self.n_neighbors is None else ''}) to form a "
                f"neighbourhood of its own. Pass more maps, or {fix}."
            )
        return int(k), m

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Run Algorithm 3 on relevance maps ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n_samples, H, W) or (n_samples, H, W, C)
            Relevance maps (or any maps / feature vectors). A Dask array (chunked along the
            maps) is preprocessed block by block on the cluster (channel sum, smoothing,
            pooling, normalisation) and only the pooled rows are gathered into memory, where
            the neighbourhood graph and the spectrum, which couple all maps, are computed
            (:func:`sklrp.dask.spray_preprocess`).
        y : None
            Ignored.

        Returns
        -------
        self : SpRAy
        """
        preprocessing = dict(map_shape=self.map_shape, channel_axis=self.channel_axis,
                             smoothing_sigma=self.smoothing_sigma, pool_shape=self.pool_shape,
                             normalize=self.normalize)
        if _blockwise.is_lazy(X):
            # the per-map steps (Algorithm 3, lines 6-8) run on the cluster; the graph couples
            # all maps, so the pooled rows (N x pool size) are gathered here
            feats = _blockwise.handler("spray_preprocess")(X, **preprocessing)
            self.n_features_in_ = int(X.shape[1])
            n = feats.shape[0]
            if n < 2:
                raise ValueError(f"Found array with {n} sample(s) (shape={X.shape}) while a minimum of 2 is required.")
        else:
            X = validate_data(self, X, allow_nd=True, ensure_min_samples=2, dtype=[np.float64, np.float32])
            feats, n = None, X.shape[0]
        k, m = self._check_sizes(n)
        self.n_neighbors_ = k
        rs = check_random_state(self.random_state)
        n_threads = _n_threads(self.n_jobs)
        names = ["preprocess", "neighbors", "affinity", "laplacian", "spectrum", "clustering", "embedding"]
        steps = _Steps(names, self.verbose)
        try:
            with threadpool_limits(limits=n_threads):
                self._fit_steps(X, feats, preprocessing, n, k, m, rs, n_threads, steps)
        finally:
            steps.close()
        self.timings_ = steps.times
        return self

    def _fit_steps(self, X, feats, preprocessing, n, k, m, rs, n_threads, steps):
        with steps.step("preprocess"):
            if feats is None:  # in memory (Dask maps arrive preprocessed)
                feats = preprocess(X, **preprocessing)
            if not np.all(np.isfinite(feats)):
                raise ValueError("Preprocessing produced NaN or infinite values.")
            if np.all(feats == feats[0]):
                raise ValueError("All maps are identical after preprocessing: there is nothing to cluster.")
            self.preprocessed_ = feats

        with steps.step("neighbors"):
            n_query = k
            if self.embedding == "tsne":
                n_query = max(k, _embedding.n_tsne_neighbors(self.perplexity, n))
            self.knn_method_ = _graph.resolve_knn(self.knn, n)
            # the exact search draws nothing from random_state, so its results do not change
            knn_seed = rs.randint(np.iinfo(np.int32).max) if self.knn_method_ == "approximate" else None
            advance, done = steps.sub("SpRAy neighbours", n, "map")
            try:
                dist, ind = _graph.kneighbors(feats, n_query, method=self.knn_method_, n_threads=n_threads,
                                              n_probes=self.knn_probes, random_state=knn_seed, progress=advance)
            finally:
                done()

        with steps.step("affinity"):
            W = _graph.affinity_matrix(dist, ind, k, affinity=self.affinity, gamma=self.gamma)
            del dist
            self.affinity_matrix_ = W

        with steps.step("laplacian"):
            L, deg = _graph.laplacian(W, self.laplacian)

        with steps.step("spectrum"):
            self.eigen_solver_ = _spectrum.resolve_solver(self.eigen_solver, n)
            vals, vecs, n_comp, scale = _spectrum.spectrum(L, W, deg, m, kind=self.laplacian,
                                                           solver=self.eigen_solver_, random_state=rs)
            del L
            self.eigenvalues_, self.eigenvectors_, self.n_components_ = vals, vecs, int(n_comp)
            self.gap_scores_, _ = _spectrum.scale_aware_gaps(vals, _spectrum.ZERO_TOL * scale)

        with steps.step("clustering"):
            if self.n_clusters == "eigengap":
                if self.gap_scores_.size == 0 or not np.any(self.gap_scores_ > 0):
                    n_clusters = min(self.n_components_, m)
                else:
                    n_clusters = int(np.argmax(self.gap_scores_)) + 1
            else:
                n_clusters = int(self.n_clusters)
            self.n_clusters_ = n_clusters
            self.eigengap_ = (
                float(self.gap_scores_[n_clusters - 1]) if n_clusters <= self.gap_scores_.size else 0.0
            )
            seed = rs.randint(np.iinfo(np.int32).max)
            if n_clusters == 1:
                self.labels_ = np.zeros(n, dtype=np.int64)
            else:
                U = vecs[:, :n_clusters]
                if self.laplacian == "sym":
                    norms = np.linalg.norm(U, axis=1)
                    norms[norms == 0] = 1.0
                    U = U / norms[:, None]
                minibatch = self.clustering == "minibatch" or (
                    self.clustering == "auto" and n >= MINIBATCH_MIN_SAMPLES)
                if minibatch:
                    km = MiniBatchKMeans(n_clusters=n_clusters, n_init=3, batch_size=4096, random_state=seed)
                else:
                    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
                self.labels_ = km.fit_predict(U).astype(np.int64)

        with steps.step("embedding"):
            self.embedding_, self.embedding_method_ = None, None
            if self.embedding == "tsne":
                perplexity = _embedding.tsne_perplexity(self.perplexity, n)
                D = _embedding.distance_graph(W, ind, _embedding.n_tsne_neighbors(self.perplexity, n),
                                              self.distance_eps)
                init = (_embedding.spectral_init(vecs, deg, self.laplacian) if vecs.shape[1] >= 3
                        else 1e-4 * rs.standard_normal((n, 2)))
                advance, done = steps.sub("SpRAy t-SNE", _embedding.EXAGGERATION_ITER + _embedding.PLAIN_ITER,
                                          "iter")
                try:
                    self.embedding_, self.embedding_method_ = _embedding.tsne(
                        D, init, perplexity=perplexity, early_exaggeration=self.early_exaggeration,
                        random_state=rs, n_threads=n_threads, progress=advance)
                finally:
                    done()
            elif self.embedding == "umap":
                self.embedding_ = _embedding.umap_embedding(feats, k, rs, n_threads)
                self.embedding_method_ = "umap"

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

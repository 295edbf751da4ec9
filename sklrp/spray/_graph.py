"""SpRAy's neighbourhood graph: kNN search (exact or approximate), Eq. (6.1), Eq. (6.2)."""

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

# knn="auto" searches approximately from this many maps on (exact search costs O(N^2 d)).
APPROX_MIN_SAMPLES = 20_000
# HNSW graph (faiss.IndexHNSWFlat): links per node, build and search beam widths. On planted
# strategies (benchmarks/bench_spray.py) these keep every neighbour inside its strategy while
# the build stays O(N log N).
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 64
_HNSW_EF_SEARCH_MIN = 64
# queries per faiss search call: bounds the temporary (chunk, n_query) arrays and drives the bar
_QUERY_CHUNK = 65_536


def _import_faiss():
    try:
        import faiss  # optional dependency (extra "scale")
    except ImportError:
        return None
    return faiss


def resolve_knn(knn, n_samples):
    """The kNN search to run: "exact" or "approximate" (warns when "auto" cannot go approximate)."""
    if knn == "exact" or (knn == "auto" and n_samples < APPROX_MIN_SAMPLES):
        return "exact"
    if _import_faiss() is not None:
        return "approximate"
    if knn == "approximate":
        raise ImportError(
            'knn="approximate" needs the optional package faiss-cpu: pip install "sklrp[scale]" '
            '(or pip install faiss-cpu), or pass knn="exact".'
        )
    warnings.warn(
        f'SpRAy(knn="auto"): {n_samples} maps would use an approximate nearest-neighbour search, but '
        "faiss-cpu is not installed; falling back to the exact search, whose time grows as "
        'n_samples^2. Install it with pip install "sklrp[scale]", or pass knn="exact" to silence '
        "this warning.",
        UserWarning,
        stacklevel=3,
    )
    return "exact"


def kneighbors(feats, n_query, *, method, n_threads, progress=None):
    """The ``n_query`` nearest other samples of every sample, nearest first.

    Returns ``(dist, ind)`` of shape (n, n_query): Euclidean distances and indices; a sample is
    never its own neighbour. ``method="approximate"`` uses an HNSW index (faiss); it is built
    single-threaded when ``n_threads == 1`` and is then reproducible, while a parallel build
    may order insertions differently from run to run.
    """
    if method == "exact":
        nn = NearestNeighbors(n_neighbors=n_query, n_jobs=n_threads).fit(feats)
        dist, ind = nn.kneighbors()  # excludes each point itself
        if progress is not None:
            progress(feats.shape[0])
        return dist, ind
    return _hnsw_kneighbors(feats, n_query, n_threads, progress)


def _hnsw_kneighbors(feats, n_query, n_threads, progress):
    faiss = _import_faiss()
    n, d = feats.shape
    x = np.ascontiguousarray(feats, dtype=np.float32)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n_threads))
    try:
        index = faiss.IndexHNSWFlat(d, _HNSW_M)
        index.hnsw.efConstruction = _HNSW_EF_CONSTRUCTION
        index.add(x)
        index.hnsw.efSearch = max(_HNSW_EF_SEARCH_MIN, 2 * (n_query + 1))
        ind = np.empty((n, n_query), dtype=np.int64)
        dist = np.empty((n, n_query), dtype=np.float32)
        for start in range(0, n, _QUERY_CHUNK):
            stop = min(n, start + _QUERY_CHUNK)
            D, I = index.search(x[start:stop], n_query + 1)
            own = np.arange(start, stop)
            # drop the sample itself (usually first; anywhere among exact duplicates), or the
            # last hit when the search missed it, so every row keeps n_query neighbours
            drop = I == own[:, None]
            missed = ~drop.any(axis=1)
            drop[missed, -1] = True
            drop &= np.cumsum(drop, axis=1) == 1
            keep = ~drop
            I = I[keep].reshape(stop - start, n_query)
            D = D[keep].reshape(stop - start, n_query)
            bad = (I < 0).any(axis=1)
            if bad.any():  # too few results (tiny or degenerate data): answer those rows exactly
                rows = np.flatnonzero(bad) + start
                nn = NearestNeighbors(n_neighbors=n_query + 1).fit(feats)
                dd, ii = nn.kneighbors(feats[rows])
                for r, (drow, irow) in enumerate(zip(dd, ii)):
                    m = irow != rows[r]
                    I[rows[r] - start] = irow[m][:n_query]
                    D[rows[r] - start] = drow[m][:n_query] ** 2
            ind[start:stop] = I
            dist[start:stop] = np.sqrt(np.maximum(D, 0.0))  # faiss returns squared distances
            if progress is not None:
                progress(stop - start)
        del index
    finally:
        faiss.omp_set_num_threads(previous)
    return dist.astype(np.float64), ind


def affinity_matrix(dist, ind, k, *, affinity, gamma):
    """Eq. (6.1) kNN affinity (binary or weighted) on the k nearest, symmetrised with max; CSR."""
    n = ind.shape[0]
    d, i = dist[:, :k], ind[:, :k]
    if affinity == "knn":
        w = np.ones_like(d)
    elif affinity == "knn_distance":
        scale = np.maximum(d[:, -1], np.finfo(float).tiny)
        w = np.exp(-(d**2) / (scale[:, None] * scale[i]))
    else:
        if gamma is None:
            med = np.median(d**2)
            if med <= 0:
                positive = d[d > 0]
                med = np.mean(positive**2) if positive.size else 1.0
            gamma = 1.0 / med
        w = np.exp(-gamma * d**2)
    W = sp.csr_matrix((w.ravel(), i.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    W = W.maximum(W.T).tocsr()  # w_ij = max(w_ij, w_ji), von Luxburg (2007)
    W.eliminate_zeros()  # underflowed weights are no edges (components must be true components)
    W.sort_indices()
    return W


def laplacian(W, kind):
    """Eq. (6.2): L = D - W, or L_sym = I - D^{-1/2} W D^{-1/2}; returns (L, degrees)."""
    deg = np.asarray(W.sum(axis=1)).ravel()
    if kind == "unnormalized":
        return (sp.diags(deg) - W).tocsr(), deg
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = 1.0 / np.sqrt(deg[nz])
    S = sp.diags(inv_sqrt) @ W @ sp.diags(inv_sqrt)
    # isolated nodes (possible only if all their weights underflowed) get L_ii = 0,
    # i.e. their own zero eigenvalue, like a connected component of size one.
    return (sp.diags(nz.astype(float)) - S).tocsr(), deg

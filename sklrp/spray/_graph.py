"""SpRAy's neighbourhood graph: kNN search (exact or approximate), Eq. (6.1), Eq. (6.2)."""

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils.extmath import randomized_svd

# knn="auto" searches approximately from this many maps on (exact search costs O(N^2 d)).
APPROX_MIN_SAMPLES = 20_000
# knn="approximate": the maps are partitioned into cells of about _CELL_SIZE maps by a
# two-level k-means in the space of their leading _CELL_DIMS principal components (fitted on
# at most _PCA_SUBSAMPLE maps); every map is compared exactly, in the full space, with the maps
# of the n_probes cells nearest its own cell. Chosen on planted strategies
# (benchmarks/bench_spray.py, see the user guide): at a fixed number of candidates, smaller
# cells probed more widely find more of the exact neighbours; the partition only decides which
# maps are compared, so its dimension reduction does not change any distance.
_CELL_SIZE = 64
_CELL_DIMS = 32
_PCA_SUBSAMPLE = 20_000
_KMEANS_ITER = 20
_KMEANS_MAX_POINTS = 256  # training maps per centroid (faiss subsamples above)
# a cell of more than _SPLIT_FACTOR * _CELL_SIZE maps (repeated maps k-means cannot separate)
# is cut into random chunks, which bounds the work of every cell
_SPLIT_FACTOR = 2
# cells per task of the (threaded) search loop
_CELLS_PER_TASK = 64
# rows per block when projecting onto the principal components
_CHUNK = 65_536


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


def kneighbors(feats, n_query, *, method, n_threads, n_probes=64, random_state=None, progress=None):
    """The ``n_query`` nearest other samples of every sample, nearest first.

    Returns ``(dist, ind)`` of shape (n, n_query): Euclidean distances and indices; a sample is
    never its own neighbour. ``method="approximate"`` compares every sample with the samples of
    the ``n_probes`` partition cells nearest its own (:func:`_cell_kneighbors`); it is
    reproducible for a fixed ``random_state`` with one thread.
    """
    if method == "exact":
        nn = NearestNeighbors(n_neighbors=n_query, n_jobs=n_threads).fit(feats)
        dist, ind = nn.kneighbors()  # excludes each point itself
        if progress is not None:
            progress(feats.shape[0])
        return dist, ind
    return _cell_kneighbors(feats, n_query, n_probes, n_threads, check_random_state(random_state), progress)


def _principal_components(x, n_components, rng):
    """float32 scores of the rows of x on its leading principal components (fitted on a subsample).

    At most ``min(n_components, d, subsample size)`` components: low-dimensional data are only
    centred, and a handful of maps gives as many components as maps.
    """
    n, d = x.shape
    sub = x[np.sort(rng.choice(n, min(n, _PCA_SUBSAMPLE), replace=False))].astype(np.float64)
    mean = sub.mean(axis=0)
    if d <= n_components:
        return np.ascontiguousarray(x - mean.astype(x.dtype), dtype=np.float32)
    n_components = min(n_components, sub.shape[0])
    _, _, vt = randomized_svd(sub - mean, n_components, random_state=rng.randint(np.iinfo(np.int32).max))
    basis = np.ascontiguousarray(vt[:n_components].T, dtype=np.float32)
    mean = mean.astype(np.float32)
    out = np.empty((n, basis.shape[1]), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        out[start:stop] = (x[start:stop].astype(np.float32) - mean) @ basis
    return out


def _kmeans_labels(faiss, y, n_clusters, seed):
    """faiss k-means labels of the rows of y (all zeros for one cluster)."""
    if n_clusters <= 1:
        return np.zeros(y.shape[0], dtype=np.int64)
    km = faiss.Kmeans(y.shape[1], int(n_clusters), niter=_KMEANS_ITER, seed=int(seed), min_points_per_centroid=1,
                      max_points_per_centroid=_KMEANS_MAX_POINTS)
    km.train(y)
    _, labels = km.index.search(y, 1)
    return labels.ravel().astype(np.int64)


def _groups(labels, n_groups):
    """Members of each label (sorted indices) as a list of arrays."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_groups + 1))
    return [order[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def partition_cells(y, cell_size, rng, faiss):
    """Cells of about ``cell_size`` rows of y: two-level k-means, oversized cells cut at random.

    A first k-means splits the n rows into about sqrt(n / cell_size) groups, a second one each
    group into about size / cell_size cells (so the cost is O(n sqrt(n / cell_size)), not
    O(n^2 / cell_size)). Returns a list of index arrays, one per non-empty cell.
    """
    n = y.shape[0]
    seed = rng.randint(np.iinfo(np.int32).max)
    n_coarse = max(1, int(round(math.sqrt(n / cell_size))))
    cells = []
    for group in _groups(_kmeans_labels(faiss, y, n_coarse, seed), n_coarse):
        n_sub = max(1, int(round(group.size / cell_size)))
        for cell in _groups(_kmeans_labels(faiss, y[group], n_sub, seed), n_sub):
            if cell.size > _SPLIT_FACTOR * cell_size:
                cell = group[cell]
                chunks = math.ceil(cell.size / cell_size)
                cells.extend(np.sort(c) for c in np.array_split(rng.permutation(cell), chunks))
            elif cell.size:
                cells.append(group[cell])
    return cells


def probe_lists(centroids, sizes, n_probes, n_needed):
    """For every cell, the cells whose maps it is compared with: its own first, then the nearest.

    Each list holds the ``n_probes`` cells with the nearest centroids (all cells when there are
    fewer), widened when they hold fewer than ``n_needed`` maps, so that every map has enough
    candidates. The own cell is always searched (identical centroids tie in any order).
    """
    faiss = _import_faiss()
    n_cells = centroids.shape[0]
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    # room to widen without a second search in the usual case
    width = min(n_cells, max(int(n_probes), 2 * math.ceil(n_needed / max(1.0, float(np.median(sizes))))))
    _, near = index.search(centroids, width)
    lists = []
    for c in range(n_cells):
        order = near[c]
        if not np.any(order == c):
            order = np.concatenate([[c], order[:-1]])
        else:
            order = np.concatenate([[c], order[order != c]])
        csum = np.cumsum(sizes[order])
        if csum[-1] < n_needed:  # rare (tiny cells near each other): search every cell for this one
            _, order = index.search(centroids[c:c + 1], n_cells)
            order = np.concatenate([[c], order[0][order[0] != c]])
            csum = np.cumsum(sizes[order])
        take = max(min(int(n_probes), order.size), int(np.searchsorted(csum, n_needed)) + 1)
        lists.append(order[:take])
    return lists


def _cell_kneighbors(feats, n_query, n_probes, n_threads, rng, progress):
    """Approximate kNN: exact distances to the maps of the ``n_probes`` cells nearest each map's cell.

    The cells (:func:`partition_cells`) are computed on the leading principal components; the
    distances are computed by faiss (BLAS) in the full space, so the approximation lies only in
    which maps are candidates. Cells are probed by the distance between cell centroids
    (:func:`probe_lists`); with ``n_probes`` at least the number of cells the search is exact.
    Beyond the thesis, which builds the kNN graph of Eq. (6.1) by exact search: an engineering
    approximation for very many maps, measured against the exact graph in the user guide.
    """
    faiss = _import_faiss()
    n = feats.shape[0]
    x = np.ascontiguousarray(feats, dtype=np.float32)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n_threads))
    try:
        y = _principal_components(x, _CELL_DIMS, rng)
        cells = partition_cells(y, _CELL_SIZE, rng, faiss)
        sizes = np.array([c.size for c in cells])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        centroids = np.add.reduceat(y[np.concatenate(cells)].astype(np.float64), starts, axis=0)
        centroids = np.ascontiguousarray(centroids / sizes[:, None], dtype=np.float32)
        del y
        probes = probe_lists(centroids, sizes, n_probes, n_query + 1)
        ind = np.empty((n, n_query), dtype=np.int64)
        dist = np.empty((n, n_query), dtype=np.float32)

        def search(batch):  # cells of one task; rows of different cells never overlap
            faiss.omp_set_num_threads(1)  # per OS thread: one BLAS thread per task
            done = 0
            for c in batch:
                members = cells[c]
                cand = np.concatenate([cells[j] for j in probes[c]])  # >= n_query + 1 maps, own cell included
                D, J = faiss.knn(x[members], x[cand], n_query + 1)
                I, D = _drop_self(cand[J], D, members, n_query)
                ind[members] = I
                dist[members] = np.sqrt(np.maximum(D, 0.0))  # faiss returns squared distances
                done += members.size
            return done

        batches = [range(s, min(len(cells), s + _CELLS_PER_TASK)) for s in range(0, len(cells), _CELLS_PER_TASK)]
        pool = None
        if n_threads == 1:
            results = map(search, batches)
        else:  # faiss releases the GIL: one cell batch per thread, no nested OpenMP teams
            pool = ThreadPoolExecutor(max_workers=int(n_threads))
            results = pool.map(search, batches)
        try:
            for done in results:
                if progress is not None:
                    progress(done)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    finally:
        faiss.omp_set_num_threads(previous)
    return dist.astype(np.float64), ind


def _drop_self(I, D, own, n_query):
    """Remove each row's own index (usually first; anywhere among exact duplicates), or the last hit."""
    drop = I == own[:, None]
    missed = ~drop.any(axis=1)
    drop[missed, -1] = True
    drop &= np.cumsum(drop, axis=1) == 1
    keep = ~drop
    return I[keep].reshape(-1, n_query), D[keep].reshape(-1, n_query)


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

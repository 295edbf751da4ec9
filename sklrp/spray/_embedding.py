"""SpRAy's 2-D picture (Algorithm 3, lines 12-13): t-SNE on DIST = 1 / (W + eps) (Section 6.2)."""

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.manifold import TSNE
from sklearn.neighbors import sort_graph_by_row_values

# t-SNE iterations: early exaggeration, then the plain phase (openTSNE's and sklearn's defaults
# minus the 250 iterations a spectral initialisation saves over a random one)
EXAGGERATION_ITER = 250
PLAIN_ITER = 500
# progress-bar granularity of the openTSNE optimiser
_CHUNK_ITER = 50
# without openTSNE, warn from this many maps on (sklearn's Barnes-Hut t-SNE: ~5 ms per map)
_SLOW_SKLEARN_TSNE = 20_000


def _import_opentsne():
    try:
        import openTSNE  # optional dependency (extra "scale")
    except ImportError:
        return None
    return openTSNE


def tsne_perplexity(perplexity, n):
    """The thesis' perplexity (Section 6.3), clipped to (n - 1) / 3 for small sets."""
    return min(float(perplexity), max((n - 1) / 3.0, 1e-3))


def n_tsne_neighbors(perplexity, n):
    """Entries per row of the distance graph: 3 perplexity + 1, as scikit-learn's t-SNE uses."""
    return min(n - 1, int(3.0 * tsne_perplexity(perplexity, n) + 1))


def distance_graph(W, ind, n_tsne, distance_eps):
    """DIST = 1 / (W + eps) on the n_tsne nearest neighbours and every graph edge (CSR, no diagonal).

    Pairs not connected in W get distance 1 / eps (Section 6.2), so each row has enough
    entries for the perplexity calibration.
    """
    n = W.shape[0]
    pattern = sp.csr_matrix(
        (np.ones(n * n_tsne), ind[:, :n_tsne].ravel(), np.arange(0, n * n_tsne + 1, n_tsne)), shape=(n, n)
    )
    pattern = (pattern + (W != 0).astype(float)).tocsr()
    pattern.sort_indices()
    # W's values on the pattern (zero where W has no edge; the pattern contains W's edges),
    # aligned through sorted (row, column) keys
    w = np.zeros(pattern.nnz)
    key_p = np.repeat(np.arange(n), np.diff(pattern.indptr)).astype(np.int64) * n + pattern.indices
    Wc = W.tocoo()
    key_w = Wc.row.astype(np.int64) * n + Wc.col
    pos = np.searchsorted(key_p, key_w)
    w[pos] = Wc.data
    D = sp.csr_matrix((1.0 / (w + distance_eps), pattern.indices.copy(), pattern.indptr.copy()), shape=(n, n))
    return D


def joint_probabilities(D, perplexity, n_steps=100, tol=1e-5):
    """t-SNE's symmetric P from a sparse distance graph (van der Maaten and Hinton, 2008).

    Row i: p_{j|i} = exp(-beta_i d_ij) / sum_j exp(-beta_i d_ij) over the stored entries, with
    beta_i found by bisection so that the entropy is log(perplexity) (distances used as given,
    like scikit-learn's t-SNE on a precomputed graph); then P = (P + P^T) / sum. All rows are
    calibrated at once. When more than ``perplexity`` entries tie at a row's smallest distance
    (binary W), the entropy cannot fall to the target and p_{.|i} is uniform over the ties.
    """
    D = D.tocsr()
    n = D.shape[0]
    counts = np.diff(D.indptr)
    rows = np.repeat(np.arange(n), counts)
    d = D.data - np.minimum.reduceat(D.data, D.indptr[:-1])[rows]  # row minimum at 0: no underflow
    target = np.log(perplexity)
    beta = np.ones(n)
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    for _ in range(n_steps):
        e = np.exp(-d * beta[rows])
        s = np.bincount(rows, weights=e, minlength=n)
        H = np.log(s) + beta * np.bincount(rows, weights=d * e, minlength=n) / s
        if np.all(np.abs(H - target) < tol):
            break
        up = H > target  # too flat: sharpen
        lo = np.where(up, beta, lo)
        hi = np.where(up, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2.0, (lo + hi) / 2.0)
    e = np.exp(-d * beta[rows])
    s = np.bincount(rows, weights=e, minlength=n)
    P = sp.csr_matrix((e / s[rows], D.indices, D.indptr), shape=(n, n))
    P = (P + P.T).tocsr()
    P.data /= max(P.data.sum(), np.finfo(float).eps)
    return P


def spectral_init(eigenvectors, deg, kind):
    """2-D start from the first non-trivial Laplacian eigenvectors, std 1e-4 (openTSNE's advice)."""
    U = eigenvectors[:, 1:3].astype(float, copy=True)
    if kind == "sym":
        U = U / np.sqrt(np.where(deg > 0, deg, 1.0))[:, None]  # random-walk eigenvectors
    std = U[:, 0].std()
    return U / (std if std > 0 else 1.0) * 1e-4


def tsne(D, init, *, perplexity, early_exaggeration, random_state, n_threads, progress=None):
    """Run t-SNE on the distance graph D; returns (embedding, method name).

    With openTSNE installed: openTSNE's optimiser on P from :func:`joint_probabilities`
    (Barnes-Hut below 10,000 maps, FFT-accelerated interpolation above). Otherwise
    scikit-learn's Barnes-Hut t-SNE on D (the same P).
    """
    n = D.shape[0]
    seed = int(random_state.randint(np.iinfo(np.int32).max))
    openTSNE = _import_opentsne()
    if openTSNE is not None:
        P = joint_probabilities(D, perplexity)
        method = "fft" if n >= 10_000 else "bh"
        est = openTSNE.TSNE(n_components=2, n_jobs=int(n_threads), random_state=seed,
                            negative_gradient_method=method)
        emb = est.prepare_initial(affinities=openTSNE.affinity.PrecomputedAffinities(P, normalize=False),
                                  initialization=init)
        schedule = [(EXAGGERATION_ITER, early_exaggeration, 0.5), (PLAIN_ITER, None, 0.8)]
        for n_iter, exaggeration, momentum in schedule:
            done = 0
            while done < n_iter:
                step = min(_CHUNK_ITER, n_iter - done)
                emb.optimize(n_iter=step, exaggeration=exaggeration, momentum=momentum, inplace=True,
                             negative_gradient_method=method, n_jobs=int(n_threads), propagate_exception=True)
                done += step
                if progress is not None:
                    progress(step)
        return np.asarray(emb, dtype=float).copy(), f"openTSNE-{method}"
    if n >= _SLOW_SKLEARN_TSNE:
        warnings.warn(
            f"SpRAy t-SNE on {n} maps with scikit-learn's Barnes-Hut t-SNE is slow (minutes); "
            'pip install "sklrp[scale]" (openTSNE, FFT-accelerated) or pass embedding=None.',
            UserWarning,
            stacklevel=3,
        )
    # scikit-learn counts each sample as its own first neighbour on a precomputed graph
    coo = D.tocoo()
    Ds = sp.csr_matrix(
        (np.concatenate([coo.data, np.zeros(n)]),
         (np.concatenate([coo.row, np.arange(n)]), np.concatenate([coo.col, np.arange(n)]))),
        shape=(n, n),
    )
    Ds = sort_graph_by_row_values(Ds, copy=False, warn_when_not_sorted=False)
    est = TSNE(n_components=2, perplexity=perplexity, early_exaggeration=early_exaggeration,
               metric="precomputed", init=init, random_state=seed, n_jobs=int(n_threads))
    emb = est.fit_transform(Ds)
    if progress is not None:
        progress(EXAGGERATION_ITER + PLAIN_ITER)
    return emb, "sklearn-bh"


def umap_embedding(feats, k, random_state, n_threads):
    try:
        import umap  # optional dependency
    except ImportError as exc:
        raise ImportError(
            'embedding="umap" needs the optional package umap-learn (pip install umap-learn).'
        ) from exc
    reducer = umap.UMAP(n_neighbors=max(k + 1, 2), n_components=2,
                        random_state=random_state.randint(np.iinfo(np.int32).max))
    return reducer.fit_transform(feats)

"""SpRAy at scale and its usability: approximate kNN, sparse eigensolvers, t-SNE, errors, progress.

The scale path (faiss-cpu, pyamg, openTSNE) is the optional extra ``scale``; ``make install``
installs it with ``dev``. Fallbacks when a package is absent are tested by making its import
fail (``sys.modules[name] = None``), not by replacing the package.
"""

import math
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import brentq
from sklearn.metrics import adjusted_rand_score

from sklrp import SpRAy
from sklrp.spray import _embedding, _graph, _spectrum, pool_maps



def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def needs(*modules):
    missing = [m for m in modules if not _has(m)]
    return pytest.mark.skipif(bool(missing), reason=f'needs {missing}: pip install "sklrp[scale]"')


def planted(n, n_strategies=3, seed=0, noise=1.6):
    """Relevance maps with planted strategies: a bump per strategy (jittered, scaled) + noise, 20x20."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:64, 0:64]
    centres = [(16, 16), (48, 40), (20, 50), (46, 12)][:n_strategies]
    labels = rng.integers(0, n_strategies, n)
    maps = np.empty((n, 20, 20))
    for i, lab in enumerate(labels):
        cy, cx = centres[lab]
        dy, dx = rng.integers(-3, 4, 2)
        bump = 3.0 * rng.lognormal(0, 0.25) * np.exp(-((rr - cy - dy) ** 2 + (cc - cx - dx) ** 2) / 72.0)
        maps[i] = pool_maps(bump[None], (20, 20))[0]
    return maps + noise * rng.standard_normal(maps.shape), labels


@pytest.fixture(scope="module")
def maps3():
    return planted(600, 3, seed=0)


# ----------------------------------------------------------------- approximate vs exact
@needs("faiss")
@pytest.mark.parametrize("seed", [0, 5])
def test_approximate_knn_agrees_with_exact(seed):
    X, truth = planted(600, 3, seed=seed)
    kw = dict(pool_shape=None, embedding=None, random_state=0)
    ex = SpRAy(knn="exact", **kw).fit(X)
    ap = SpRAy(knn="approximate", **kw).fit(X)
    assert ex.knn_method_ == "exact" and ap.knn_method_ == "approximate"
    assert ap.n_clusters_ == ex.n_clusters_ == 3
    assert adjusted_rand_score(ex.labels_, ap.labels_) >= 0.99
    assert adjusted_rand_score(truth, ap.labels_) >= 0.99
    np.testing.assert_allclose(ap.eigenvalues_, ex.eigenvalues_, atol=1e-3)
    # at this size the partition search finds (nearly) every exact neighbour
    overlap = ex.affinity_matrix_.multiply(ap.affinity_matrix_).nnz / ex.affinity_matrix_.nnz
    assert overlap > 0.99


@needs("faiss")
def test_approximate_neighbours_exclude_self_with_duplicate_maps():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6))
    X[:30] = X[0]  # 30 identical maps: the search may return another copy before the sample itself
    dist, ind = _graph.kneighbors(X, 8, method="approximate", n_threads=1)
    assert ind.shape == (400, 8)
    assert not np.any(ind == np.arange(400)[:, None])
    assert np.all(np.diff(dist, axis=1) >= -1e-5)  # nearest first
    ex_dist, _ = _graph.kneighbors(X, 8, method="exact", n_threads=1)
    np.testing.assert_allclose(dist, ex_dist, atol=1e-4)  # exact at this size (float32 distances)


def _recall(ind, ref):
    k = ref.shape[1]
    return np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(ind, ref)])


@needs("faiss")
def test_approximate_search_with_every_cell_probed_is_exact():
    from sklearn.neighbors import NearestNeighbors

    X, _ = planted(900, 3, seed=2)
    X = X.reshape(900, -1)
    n_cells = len(_graph.partition_cells(_graph._principal_components(X, 32, np.random.RandomState(0)), 64,
                                         np.random.RandomState(0), _graph._import_faiss()))
    assert n_cells > 4
    ref_dist, ref_ind = NearestNeighbors(n_neighbors=7, algorithm="brute").fit(X).kneighbors()
    for n_probes in (n_cells, 10 * n_cells):  # every cell probed, and more probes than cells
        dist, ind = _graph.kneighbors(X, 7, method="approximate", n_threads=1, n_probes=n_probes, random_state=0)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)  # float32 distances
        assert _recall(ind, ref_ind) > 0.999  # only near-ties may swap


@needs("faiss")
@pytest.mark.parametrize("n, n_query", [(3, 1), (40, 20), (130, 60)])
def test_approximate_search_with_fewer_maps_than_a_cell_or_than_needed(n, n_query):
    # fewer maps than a cell (one cell: exact), and one probe holding fewer maps than the query
    # asks for: the probe list is widened, so every map still gets n_query neighbours
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(n).standard_normal((n, 400))
    dist, ind = _graph.kneighbors(X, n_query, method="approximate", n_threads=1, n_probes=1, random_state=0)
    assert ind.shape == (n, n_query) and not np.any(ind == np.arange(n)[:, None])
    assert all(len(set(row)) == n_query for row in ind)
    assert np.all(np.diff(dist, axis=1) >= 0)
    np.testing.assert_allclose(dist, np.linalg.norm(X[ind] - X[:, None], axis=2), rtol=1e-5)
    if n <= 64:
        ref_dist, _ = NearestNeighbors(n_neighbors=n_query).fit(X).kneighbors()
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)


@needs("faiss")
def test_approximate_search_is_reproducible_and_reports_progress():
    X, _ = planted(2000, 4, seed=4)
    X = X.reshape(2000, -1)
    seen = []
    a = _graph.kneighbors(X, 9, method="approximate", n_threads=1, n_probes=4, random_state=3, progress=seen.append)
    b = _graph.kneighbors(X, 9, method="approximate", n_threads=1, n_probes=4, random_state=3)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert sum(seen) == 2000 and len(seen) >= 1
    c = _graph.kneighbors(X, 9, method="approximate", n_threads=2, n_probes=4, random_state=3)
    assert _recall(c[1], a[1]) > 0.95  # threads may move a few cells, not the result


@needs("faiss")
@pytest.mark.parametrize("seed", [0, 11])  # 0: the data the cell size was chosen on, 11: never looked at
def test_partition_search_keeps_the_exact_neighbours_of_planted_maps(seed):
    # 3000 maps of 400 dims: ~47 cells, so 8 probes compare each map with a sixth of the data;
    # the cells come from 32 principal components, the distances from all 400 dimensions
    X, truth = planted(3000, 4, seed=seed)
    X = X.reshape(3000, -1).astype(np.float32)
    dist, ind = _graph.kneighbors(X, 9, method="approximate", n_threads=1, n_probes=8, random_state=0)
    ex_dist, ex_ind = _graph.kneighbors(X, 9, method="exact", n_threads=1)
    assert _recall(ind, ex_ind) > 0.98
    assert np.all(truth[ind] == truth[:, None])  # no neighbour from another strategy
    # a missed neighbour is replaced by a slightly farther one: distances never undercut the exact ones
    assert np.all(dist >= ex_dist - 1e-3 * ex_dist.max())
    assert np.all(np.diff(dist, axis=1) >= 0)


@needs("faiss")
def test_principal_components_match_pca_and_keep_low_dimensional_data():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 40)) * np.geomspace(10, 0.01, 40)  # well-separated variances
    Y = _graph._principal_components(X, 6, np.random.RandomState(0))
    ref = PCA(6).fit_transform(X)
    np.testing.assert_allclose(np.abs(Y), np.abs(ref), atol=1e-3 * np.abs(ref).max())
    low = rng.standard_normal((300, 5))
    np.testing.assert_allclose(_graph._principal_components(low, 32, np.random.RandomState(0)),
                               low - low.mean(0), atol=1e-5)


@needs("faiss")
def test_partition_covers_every_map_once_and_bounds_cells_of_repeated_maps():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((3000, 4)).astype(np.float32)
    y[:1500] = y[0]  # half the maps identical: k-means cannot split them
    cells = _graph.partition_cells(y, 64, np.random.RandomState(0), _graph._import_faiss())
    members = np.concatenate(cells)
    np.testing.assert_array_equal(np.sort(members), np.arange(3000))
    assert max(c.size for c in cells) <= 2 * 64
    X = np.repeat(y, 10, axis=1)
    dist, ind = _graph.kneighbors(X, 8, method="approximate", n_threads=2, n_probes=8, random_state=0)
    assert not np.any(ind == np.arange(3000)[:, None])
    assert np.all(dist[:1500] == 0)  # each repeated map finds 8 copies of itself


@needs("faiss")
def test_knn_probes_is_validated_and_used(maps3):
    X, truth = maps3
    with pytest.raises(ValueError, match="knn_probes"):
        SpRAy(knn="approximate", knn_probes=0).fit(X)
    with pytest.raises(ValueError, match="knn_probes"):
        SpRAy(knn="approximate", knn_probes=2.5).fit(X)
    with pytest.raises(ValueError, match="knn_probes"):
        SpRAy(knn="exact", knn_probes=-3).fit(X)  # validated whatever the search
    kw = dict(pool_shape=None, knn="approximate", embedding=None, random_state=0)
    one = SpRAy(knn_probes=1, **kw).fit(X)  # each map sees only its own cell of ~64 maps
    full = SpRAy(knn_probes=64, **kw).fit(X)
    ex = SpRAy(knn="exact", pool_shape=None, embedding=None, random_state=0).fit(X)
    assert (one.affinity_matrix_ != ex.affinity_matrix_).nnz > 0
    assert (full.affinity_matrix_ != ex.affinity_matrix_).nnz == 0
    assert adjusted_rand_score(truth, full.labels_) == 1.0


@needs("faiss", "pyamg")
def test_approximate_path_eigengap_components_and_blob():
    # disconnected components: three far-apart groups -> three exact zeros, three clusters
    rng = np.random.default_rng(0)
    centres = [np.zeros(20), np.full(20, 8.0), np.r_[np.full(10, -8.0), np.zeros(10)]]
    X = np.concatenate([rng.standard_normal((300, 20)) + c for c in centres])
    truth = np.repeat([0, 1, 2], 300)
    est = SpRAy(knn="approximate", eigen_solver="amg", embedding=None, random_state=0).fit(X)
    assert est.n_components_ == 3 and est.n_clusters_ == 3
    assert np.all(est.eigenvalues_[:3] == 0) and est.eigenvalues_[3] > 1e-3
    assert adjusted_rand_score(truth, est.labels_) == 1.0
    # one homogeneous blob must not be split, whichever search and solver
    blob = np.random.default_rng(1).standard_normal((900, 10))
    for knn, solver in [("approximate", "arpack"), ("approximate", "amg"), ("exact", "amg")]:
        est = SpRAy(knn=knn, eigen_solver=solver, embedding=None, random_state=0).fit(blob)
        assert est.n_clusters_ == 1, (knn, solver)
        assert np.all(est.labels_ == 0)


# ----------------------------------------------------------------- eigensolvers
def _dense_smallest(W, m):
    d = np.asarray(W.sum(1)).ravel()
    dm = np.diag(d**-0.5)
    return np.linalg.eigvalsh(np.eye(W.shape[0]) - dm @ W.toarray() @ dm)[:m]


@pytest.mark.parametrize("solver", ["arpack", pytest.param("amg", marks=needs("pyamg"))])
def test_sparse_solvers_match_dense_with_several_large_components(solver):
    # two components of 350 maps each (> 300: the sparse solver) plus a small one (dense)
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.standard_normal((350, 4)), rng.standard_normal((350, 4)) + 30,
                        rng.standard_normal((40, 4)) - 30])
    est = SpRAy(eigen_solver=solver, embedding=None, random_state=0).fit(X)
    assert est.eigen_solver_ == solver
    ref = _dense_smallest(est.affinity_matrix_, 20)
    np.testing.assert_allclose(est.eigenvalues_, ref, atol=1e-8)
    assert np.all(est.eigenvalues_[:3] == 0.0)  # structural zeros, one per component
    W = est.affinity_matrix_.toarray()
    dm = np.diag(W.sum(1) ** -0.5)
    L = np.eye(len(W)) - dm @ W @ dm
    np.testing.assert_allclose(L @ est.eigenvectors_, est.eigenvectors_ * est.eigenvalues_, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(est.eigenvectors_, axis=0), 1.0, atol=1e-8)


@needs("pyamg")
def test_amg_with_many_large_components_projects_in_the_preconditioner(monkeypatch):
    # more than 32 sparse-solved components take the projected-preconditioner branch;
    # a lower dense threshold makes that cheap to reach
    monkeypatch.setattr(_spectrum, "_DENSE_COMPONENT_SIZE", 20)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.standard_normal((45, 3)) + 50 * i for i in range(34)])
    est = SpRAy(n_eigenvalues=2, eigen_solver="amg", embedding=None, random_state=0).fit(X)
    assert est.n_components_ == 34
    W = est.affinity_matrix_
    n_comp, comp = sp.csgraph.connected_components(W)
    kw = dict(kind="sym", random_state=np.random.RandomState(0))
    L, deg = _graph.laplacian(W, "sym")
    a, _, _, _ = _spectrum.spectrum(L, W, deg, 40, solver="amg", **kw)
    b, _, _, _ = _spectrum.spectrum(L, W, deg, 40, solver="arpack", **kw)
    np.testing.assert_allclose(a, b, atol=1e-7)
    assert np.all(a[:34] == 0) and a[34] > 0


def test_mini_batch_kmeans_agrees_with_kmeans(maps3):
    X, truth = maps3
    kw = dict(pool_shape=None, embedding=None, random_state=0)
    full = SpRAy(clustering="kmeans", **kw).fit(X)
    mini = SpRAy(clustering="minibatch", **kw).fit(X)
    assert adjusted_rand_score(full.labels_, mini.labels_) == 1.0


# ----------------------------------------------------------------- t-SNE
def _loop_joint_probabilities(D, perplexity):
    """Row by row: solve H(beta) = log(perplexity) with brentq, then symmetrise and normalise."""
    D = D.toarray()
    n = len(D)
    P = np.zeros((n, n))
    for i in range(n):
        cols = np.flatnonzero(D[i])
        d = D[i, cols]

        def entropy_gap(log_beta):
            p = np.exp(-np.exp(log_beta) * (d - d.min()))
            p /= p.sum()
            return -(p * np.log(np.where(p > 0, p, 1))).sum() - np.log(perplexity)

        lb = brentq(entropy_gap, -30, 30, xtol=1e-12)
        p = np.exp(-np.exp(lb) * (d - d.min()))
        P[i, cols] = p / p.sum()
    P = P + P.T
    return P / P.sum()


def test_joint_probabilities_match_loop_reference():
    rng = np.random.default_rng(0)
    n = 30
    D = sp.random(n, n, density=0.5, random_state=1, data_rvs=lambda k: rng.uniform(0.5, 3.0, k)).tocsr()
    D.setdiag(0)
    D.eliminate_zeros()
    P = _embedding.joint_probabilities(D, 5.0)
    np.testing.assert_allclose(P.toarray(), _loop_joint_probabilities(D, 5.0), atol=1e-6)
    assert abs(P.sum() - 1.0) < 1e-12 and abs(P - P.T).max() < 1e-15


def test_distance_graph_is_one_over_w_plus_eps():
    X, _ = planted(120, 2, seed=1)
    est = SpRAy(pool_shape=None, affinity="knn_distance", embedding=None, random_state=0).fit(X)
    W = est.affinity_matrix_
    _, ind = _graph.kneighbors(est.preprocessed_, 10, method="exact", n_threads=1)
    D = _embedding.distance_graph(W, ind, 10, 0.01)
    Wd = W.toarray()
    for i in range(0, 120, 7):
        for j in D[i].indices:
            assert D[i, j] == pytest.approx(1.0 / (Wd[i, j] + 0.01))
        assert set(np.flatnonzero(Wd[i])) <= set(D[i].indices)
        assert set(ind[i]) <= set(D[i].indices)


@pytest.mark.parametrize("backend", ["openTSNE", "sklearn"])
def test_tsne_backends_separate_strategies(backend, maps3, monkeypatch):
    if backend == "sklearn":
        monkeypatch.setitem(sys.modules, "openTSNE", None)  # as if not installed
    elif not _has("openTSNE"):
        pytest.skip('needs openTSNE: pip install "sklrp[scale]"')
    X, truth = maps3
    X, truth = X[:300], truth[:300]
    est = SpRAy(pool_shape=None, random_state=0).fit(X)
    assert est.embedding_method_ == ("openTSNE-bh" if backend == "openTSNE" else "sklearn-bh")
    E = est.embedding_
    assert E.shape == (300, 2) and np.all(np.isfinite(E))
    centres = np.array([E[truth == c].mean(0) for c in range(3)])
    spread = max(E[truth == c].std(0).max() for c in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 3 * spread


# ----------------------------------------------------------------- usability
@pytest.mark.parametrize("n, kw, need", [(3, {}, 6), (5, {}, 6), (7, {"n_neighbors": 3}, 8),
                                         (10, {"n_clusters": 3}, 12)])
def test_too_few_maps_is_a_clear_error(n, kw, need):
    X = np.random.default_rng(0).standard_normal((n, 4))
    with pytest.raises(ValueError, match=f"SpRAy needs at least {need} maps here, got {n}"):
        SpRAy(embedding=None, **kw).fit(X)


def test_smallest_accepted_set_runs():
    X = np.random.default_rng(0).standard_normal((6, 4))  # k = ceil(log 6) = 2: 2 (k + 1) = 6
    est = SpRAy(random_state=0).fit(X)
    assert est.labels_.shape == (6,) and est.embedding_.shape == (6, 2)


@needs("faiss", "pyamg", "openTSNE")
def test_determinism_of_the_scale_path(maps3):
    X = maps3[0][:300]
    kw = dict(pool_shape=None, knn="approximate", eigen_solver="amg", clustering="minibatch", random_state=7)
    a = SpRAy(**kw).fit(X)
    b = SpRAy(**kw).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.eigenvalues_, b.eigenvalues_)
    np.testing.assert_array_equal(a.eigenvectors_, b.eigenvectors_)
    assert (a.affinity_matrix_ != b.affinity_matrix_).nnz == 0
    np.testing.assert_array_equal(a.embedding_, b.embedding_)


def test_progress_bars_on_and_off(capsys):
    X, _ = planted(60, 2, seed=3)
    SpRAy(pool_shape=None, random_state=0, verbose=False).fit(X)
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == ""
    est = SpRAy(pool_shape=None, random_state=0, verbose=True).fit(X)
    err = capsys.readouterr().err
    assert "SpRAy" in err and "7/7" in err  # the steps bar ran to the end
    assert "SpRAy t-SNE" in err and "SpRAy neighbours" in err
    assert set(est.timings_) == {"preprocess", "neighbors", "affinity", "laplacian", "spectrum", "clustering",
                                 "embedding"}
    assert all(t >= 0 for t in est.timings_.values())


@needs("faiss")
def test_progress_bar_of_the_approximate_search(capsys):
    # the nested bar is cleared when done (leave=False); its count is checked on the callback
    # in test_approximate_search_is_reproducible_and_reports_progress
    X, _ = planted(300, 2, seed=3)
    SpRAy(pool_shape=None, knn="approximate", embedding=None, random_state=0, verbose=True).fit(X)
    err = capsys.readouterr().err
    assert "SpRAy neighbours" in err and "/300" in err and "7/7" in err


def test_float32_maps_stay_float32_and_match_float64(maps3):
    X, _ = maps3
    kw = dict(pool_shape=None, embedding=None, random_state=0)
    a = SpRAy(**kw).fit(X.astype(np.float32))
    b = SpRAy(**kw).fit(X)
    assert a.preprocessed_.dtype == np.float32
    assert adjusted_rand_score(a.labels_, b.labels_) == 1.0
    np.testing.assert_allclose(a.eigenvalues_, b.eigenvalues_, atol=1e-6)
    R = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    assert pool_maps(R, (4, 4)).dtype == np.float32


def test_preprocessing_does_not_modify_the_input():
    R = np.random.default_rng(0).standard_normal((40, 64))
    before = R.copy()
    SpRAy(map_shape=(8, 8), pool_shape=None, normalize="l2", embedding=None, random_state=0).fit(R)
    np.testing.assert_array_equal(R, before)


# ----------------------------------------------------------------- missing optional packages
def test_missing_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    X = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(ImportError, match="faiss-cpu"):
        SpRAy(knn="approximate").fit(X)
    with pytest.warns(UserWarning, match="faiss-cpu is not installed; falling back to the exact search"):
        assert _graph.resolve_knn("auto", _graph.APPROX_MIN_SAMPLES) == "exact"
    assert _graph.resolve_knn("auto", _graph.APPROX_MIN_SAMPLES - 1) == "exact"  # small: exact, no warning


def test_missing_pyamg(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyamg", None)
    X = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(ImportError, match="pyamg"):
        SpRAy(eigen_solver="amg").fit(X)
    assert _spectrum.resolve_solver("auto", 10**6) == "arpack"  # "auto" never needs pyamg


@needs("faiss", "pyamg")
def test_auto_choices_by_size():
    assert _graph.resolve_knn("auto", 100) == "exact"
    assert _graph.resolve_knn("auto", _graph.APPROX_MIN_SAMPLES) == "approximate"
    assert _spectrum.resolve_solver("auto", 10**6) == "arpack"
    assert _spectrum.resolve_solver("amg", 100) == "amg"
    X = np.random.default_rng(0).standard_normal((40, 3))
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert est.knn_method_ == "exact" and est.eigen_solver_ == "arpack"
    assert est.n_neighbors_ == math.ceil(math.log(40))

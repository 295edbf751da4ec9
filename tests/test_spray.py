"""Tests for sklrp.spray: SpRAy (Chapter 6, Algorithm 3, Eqs. (6.1)-(6.2))."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklrp
from sklrp import SpRAy, spray_spectra
from sklrp.datasets import make_clever_hans
from sklrp.spray import _scale_aware_gaps, pool_maps


def four_gaussians(sigma, n_per=100, dim=2, seed=0):
    """Fig. 6.2: N(mu, sigma) with mu in {2, 4, 6, 8} (extra dims: isotropic noise)."""
    rng = np.random.default_rng(seed)
    mu = np.repeat([2.0, 4.0, 6.0, 8.0], n_per)
    X = sigma * rng.standard_normal((mu.size, dim))
    X[:, 0] += mu
    return X, np.repeat(np.arange(4), n_per)


def blobs(centers, n_per, dim, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.standard_normal((n_per, dim)) * scale + c for c in centers])
    return X, np.repeat(np.arange(len(centers)), n_per)


# ----------------------------------------------------------------- Fig. 6.2 / eigengap
def test_four_gaussians_sigma_02_has_four_zero_eigenvalues_and_gap_at_4():
    X, truth = four_gaussians(0.2)
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert np.all(est.eigenvalues_[:4] < 1e-8)
    assert est.eigenvalues_[4] > 1e-3
    assert est.n_components_ == 4
    assert est.n_clusters_ == 4
    assert adjusted_rand_score(truth, est.labels_) == 1.0


def test_four_gaussians_sigma_08_has_no_clear_gap():
    X, _ = four_gaussians(0.8)
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert est.n_components_ == 1
    assert np.all(est.eigenvalues_[1:4] > 1e-4)  # no longer ~0
    assert est.gap_scores_[3] < 0.5  # the gap after lambda_4 is not distinguished
    assert est.n_clusters_ != 4


def test_four_gaussians_one_dimensional_as_in_fig_6_2():
    # The thesis' 1-D samples with a 10-NN graph. Spectra as in Fig. 6.2; the cluster
    # count is not asserted: 1-D kNN graphs are chains whose spectra grow quadratically.
    X, truth = four_gaussians(0.2, n_per=50, dim=1)
    est = SpRAy(n_neighbors=10, n_clusters=4, embedding=None, random_state=0).fit(X)
    assert np.all(est.eigenvalues_[:4] < 1e-8) and est.eigenvalues_[4] > 1e-3
    assert est.gap_scores_[3] >= 0.5
    assert adjusted_rand_score(truth, est.labels_) == 1.0
    X, _ = four_gaussians(0.8, n_per=50, dim=1)
    est = SpRAy(n_neighbors=10, embedding=None, random_state=0).fit(X)
    assert np.all(est.eigenvalues_[1:4] > 1e-4)


@pytest.mark.parametrize("dim, n", [(2, 500), (50, 400)])
def test_homogeneous_blob_is_not_split(dim, n):
    X = np.random.default_rng(1).standard_normal((n, dim))
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert est.n_clusters_ == 1
    assert np.all(est.labels_ == 0)


def test_plain_absolute_gap_would_split_the_blob():
    # The motivation for the scale-aware gap (DESIGN.md): on a 2-D blob the largest
    # absolute gap among the first ten eigenvalues is not after lambda_1.
    X = np.random.default_rng(1).standard_normal((500, 2))
    est = SpRAy(embedding=None, random_state=0).fit(X)
    naive_k = int(np.argmax(np.diff(est.eigenvalues_[:10]))) + 1
    assert naive_k > 1
    assert est.n_clusters_ == 1


def test_disconnected_components():
    X, truth = blobs([np.zeros(20), np.full(20, 8.0), np.r_[np.full(10, -8.0), np.zeros(10)]], 150, 20)
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert est.n_components_ == 3
    assert est.n_clusters_ == 3
    assert np.all(est.eigenvalues_[:3] < 1e-8)
    assert adjusted_rand_score(truth, est.labels_) == 1.0


def test_weakly_connected_clusters():
    centers = [4.0 * np.eye(10)[i] for i in range(3)]
    X, truth = blobs(centers, 100, 10, seed=3)
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert est.n_components_ == 1  # one graph, yet three groups
    assert est.n_clusters_ == 3
    assert est.eigengap_ > 0.5
    assert adjusted_rand_score(truth, est.labels_) > 0.95


def test_scale_aware_gap_formula():
    lam = np.array([0.0, 0.0, 0.01, 0.02, 0.2, 0.25])
    gaps, c = _scale_aware_gaps(lam, 1e-8)
    assert c == 2
    tau = 0.01
    expected = [0.0] + [(lam[k] - lam[k - 1]) / (lam[k] + tau) for k in range(2, 6)]
    np.testing.assert_allclose(gaps, expected)
    assert gaps[1] == 0.5  # the connected-components baseline


def test_integer_n_clusters():
    X, truth = blobs([np.zeros(5), np.full(5, 6.0)], 60, 5)
    est = SpRAy(n_clusters=2, embedding=None, random_state=0).fit(X)
    assert est.n_clusters_ == 2
    assert adjusted_rand_score(truth, est.labels_) == 1.0


# ----------------------------------------------------------------- graph and Laplacian
def _brute_force_affinity(X, k):
    """Eq. (6.1) with loops, then w_ij = max(w_ij, w_ji)."""
    n = len(X)
    W = np.zeros((n, n))
    for i in range(n):
        d = [(np.linalg.norm(X[i] - X[j]), j) for j in range(n) if j != i]
        for _, j in sorted(d)[:k]:
            W[i, j] = 1.0
    return np.maximum(W, W.T)


def test_affinity_matches_eq_6_1_and_laplacians_match_eq_6_2():
    X = np.random.default_rng(0).standard_normal((40, 3))
    k = math.ceil(math.log(40))
    W = _brute_force_affinity(X, k)
    D = np.diag(W.sum(1))
    for lap, L in [("unnormalized", D - W),
                   ("sym", np.eye(40) - np.diag(W.sum(1) ** -0.5) @ W @ np.diag(W.sum(1) ** -0.5))]:
        est = SpRAy(laplacian=lap, embedding=None, random_state=0).fit(X)
        assert sp.issparse(est.affinity_matrix_)
        np.testing.assert_array_equal(est.affinity_matrix_.toarray(), W)
        np.testing.assert_allclose(est.eigenvalues_, np.linalg.eigvalsh(L)[:20], atol=1e-10)


@pytest.mark.parametrize("affinity", ["knn", "knn_distance", "rbf"])
def test_affinity_is_symmetric_sparse_and_bounded(affinity):
    X = np.random.default_rng(0).standard_normal((120, 4))
    est = SpRAy(affinity=affinity, embedding=None, random_state=0).fit(X)
    W = est.affinity_matrix_
    assert sp.issparse(W)
    assert abs(W - W.T).max() == 0
    assert W.diagonal().max() == 0
    assert W.data.min() > 0 and W.data.max() <= 1
    # every node keeps at least its k neighbours
    assert np.diff(W.indptr).min() >= est.n_neighbors_


@pytest.mark.parametrize("affinity", ["knn", "knn_distance"])
def test_lsym_eigenvalues_in_0_2_and_sparse_solver_matches_dense(affinity):
    # 400 samples in one component: exercises the ARPACK path (components > 300 nodes)
    X = np.random.default_rng(2).standard_normal((400, 5))
    est = SpRAy(affinity=affinity, embedding=None, random_state=0).fit(X)
    W = est.affinity_matrix_.toarray()
    dm = np.diag(W.sum(1) ** -0.5)
    full = np.linalg.eigvalsh(np.eye(len(W)) - dm @ W @ dm)
    assert full.min() > -1e-10 and full.max() < 2 + 1e-10
    np.testing.assert_allclose(est.eigenvalues_, full[:20], atol=1e-9)
    assert np.all((est.eigenvalues_ >= 0) & (est.eigenvalues_ <= 2))
    # eigenvectors are eigenvectors
    L = np.eye(len(W)) - dm @ W @ dm
    np.testing.assert_allclose(L @ est.eigenvectors_, est.eigenvectors_ * est.eigenvalues_, atol=1e-8)


def test_default_n_neighbors_is_ceil_log_n():
    X = np.random.default_rng(0).standard_normal((150, 3))
    est = SpRAy(embedding=None, random_state=0).fit(X)
    assert est.n_neighbors_ == math.ceil(math.log(150))


# ----------------------------------------------------------------- invariances
def test_invariance_to_sample_order():
    X, truth = blobs([np.zeros(6), np.full(6, 5.0), np.r_[np.full(3, -5.0), np.zeros(3)]], 60, 6)
    perm = np.random.default_rng(0).permutation(len(X))
    a = SpRAy(random_state=0, embedding=None).fit(X)
    b = SpRAy(random_state=0, embedding=None).fit(X[perm])
    np.testing.assert_allclose(a.eigenvalues_, b.eigenvalues_, atol=1e-10)
    assert a.n_clusters_ == b.n_clusters_ == 3
    assert adjusted_rand_score(a.labels_[perm], b.labels_) == 1.0
    Wa = a.affinity_matrix_.toarray()[np.ix_(perm, perm)]
    np.testing.assert_array_equal(Wa, b.affinity_matrix_.toarray())


def test_determinism():
    X, _ = blobs([np.zeros(4), np.full(4, 3.0)], 50, 4)
    a = SpRAy(random_state=3).fit(X)
    b = SpRAy(random_state=3).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.eigenvalues_, b.eigenvalues_)
    np.testing.assert_array_equal(a.eigenvectors_, b.eigenvectors_)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)


# ----------------------------------------------------------------- preprocessing
def _loop_pool(m, gh, gw):
    """Slow oracle: split every pixel's value by the area it shares with each cell."""
    H, W = m.shape
    out = np.zeros((gh, gw))
    for i in range(H):
        for j in range(W):
            for a in range(gh):
                oy = max(0.0, min(i + 1, (a + 1) * H / gh) - max(i, a * H / gh))
                for b in range(gw):
                    ox = max(0.0, min(j + 1, (b + 1) * W / gw) - max(j, b * W / gw))
                    out[a, b] += m[i, j] * oy * ox
    return out


@pytest.mark.parametrize("shape, grid", [((8, 8), (4, 2)), ((7, 11), (3, 4)), ((3, 5), (4, 6))])
def test_sum_pooling_matches_loops_and_conserves(shape, grid):
    R = np.random.default_rng(0).standard_normal((3,) + shape)
    P = pool_maps(R, grid)
    assert P.shape == (3,) + grid
    for r, p in zip(R, P):
        np.testing.assert_allclose(p, _loop_pool(r, *grid), atol=1e-12)
    np.testing.assert_allclose(P.sum((1, 2)), R.sum((1, 2)))


def test_divisible_pooling_is_block_sum():
    R = np.random.default_rng(0).standard_normal((2, 64, 64))
    P = pool_maps(R, (16, 16))
    np.testing.assert_allclose(P, R.reshape(2, 16, 4, 16, 4).sum((2, 4)))


def test_channel_sum_map_shape_and_layouts_agree():
    rng = np.random.default_rng(0)
    R = rng.standard_normal((30, 12, 10, 3))
    kw = dict(pool_shape=(4, 5), embedding=None, random_state=0)
    a = SpRAy(**kw).fit(R)
    b = SpRAy(**kw).fit(R.sum(-1))
    c = SpRAy(map_shape=(12, 10, 3), **kw).fit(R.reshape(30, -1))
    d = SpRAy(channel_axis=1, **kw).fit(np.moveaxis(R, -1, 1))
    for e in (b, c, d):
        np.testing.assert_allclose(e.preprocessed_, a.preprocessed_)
    np.testing.assert_allclose(a.preprocessed_, pool_maps(R.sum(-1), (4, 5)).reshape(30, -1))


def test_smoothing_and_normalisation():
    rng = np.random.default_rng(0)
    R = rng.standard_normal((20, 16, 16))
    R[0] = 0.0  # an all-zero map stays zero under every normalisation
    base = dict(pool_shape=(8, 8), embedding=None, random_state=0)
    plain = SpRAy(**base).fit(R).preprocessed_
    smooth = SpRAy(smoothing_sigma=2.0, **base).fit(R).preprocessed_
    assert smooth.std() < plain.std()  # low pass
    np.testing.assert_allclose(smooth.sum(1), plain.sum(1), atol=1e-8)  # filter keeps mass
    for norm, f in [("l1", lambda z: np.abs(z).sum(1)), ("l2", lambda z: np.linalg.norm(z, axis=1)),
                    ("max", lambda z: np.abs(z).max(1))]:
        z = SpRAy(normalize=norm, **base).fit(R).preprocessed_
        np.testing.assert_allclose(f(z)[1:], 1.0)
        assert np.all(z[0] == 0)


# ----------------------------------------------------------------- embedding
def test_tsne_embedding_and_none():
    X, truth = blobs([np.zeros(5), np.full(5, 8.0)], 40, 5)
    est = SpRAy(random_state=0).fit(X)
    assert est.embedding_.shape == (80, 2) and np.all(np.isfinite(est.embedding_))
    # t-SNE on DIST = 1 / (W + eps) keeps the two disconnected groups apart
    e0, e1 = est.embedding_[truth == 0], est.embedding_[truth == 1]
    between = np.linalg.norm(e0.mean(0) - e1.mean(0))
    within = max(e0.std(0).max(), e1.std(0).max())
    assert between > 3 * within
    assert SpRAy(embedding=None, random_state=0).fit(X).embedding_ is None


def test_umap_missing_gives_clear_error():
    try:
        import umap  # noqa: F401
    except ImportError:
        X = np.random.default_rng(0).standard_normal((30, 3))
        with pytest.raises(ImportError, match="umap-learn"):
            SpRAy(embedding="umap").fit(X)


# ----------------------------------------------------------------- bad input
def test_bad_input():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4))
    with pytest.raises(ValueError, match="n_neighbors=10 must be smaller than n_samples=10"):
        SpRAy(n_neighbors=10).fit(X)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SpRAy().fit(Xn)
    with pytest.raises(ValueError, match="identical"):
        SpRAy().fit(np.ones((10, 4)))
    with pytest.raises(ValueError, match="1 sample"):
        SpRAy().fit(X[:1])
    with pytest.raises(ValueError, match="map_shape"):
        SpRAy(map_shape=(3, 3)).fit(X)
    with pytest.raises(ValueError, match="smoothing_sigma needs spatial maps"):
        SpRAy(smoothing_sigma=1.0).fit(X)
    with pytest.raises(ValueError, match="n_eigenvalues"):
        SpRAy(n_clusters=5, n_eigenvalues=3, embedding=None).fit(X)


def test_constant_maps_among_others_are_fine():
    rng = np.random.default_rng(0)
    R = rng.standard_normal((60, 10, 10))
    R[:5] = 0.0  # e.g. samples without any relevance
    R[5:10] = 2.0
    est = SpRAy(random_state=0, normalize="max").fit(R)
    assert est.labels_.shape == (60,)
    assert np.isfinite(est.eigenvalues_).all()


# ----------------------------------------------------------------- spray_spectra
def test_spray_spectra_ranks_the_class_with_a_separate_strategy_first():
    rng = np.random.default_rng(0)
    R = rng.standard_normal((240, 8, 8))
    y = np.repeat(["cat", "horse", "dog"], 80)
    R[80:100, 7, 0] += 15.0  # "horse": a quarter relies on a corner tag
    spray = SpRAy(pool_shape=None, embedding=None, random_state=0)
    res = spray_spectra(R, y, spray=spray)
    assert res.classes[0] == "horse"
    assert res.n_clusters[0] == 2
    assert np.all(np.diff(res.lambda2) >= 0)
    assert res.eigenvalues.shape == (3, 20)
    assert set(res.estimators) == {"cat", "horse", "dog"}
    by_dict = spray_spectra({c: R[y == c] for c in ("cat", "horse", "dog")}, spray=spray)
    np.testing.assert_allclose(by_dict.lambda2, res.lambda2)
    by_gap = spray_spectra(R, y, spray=spray, sort_by="eigengap")
    assert by_gap.classes[0] == "horse"
    with pytest.raises(ValueError, match="y is required"):
        spray_spectra(R)


# ----------------------------------------------------------------- Clever Hans end to end
def _clever_hans_split(seed=0):
    X, y, mark = make_clever_hans(n_samples=450, random_state=seed)
    return X.reshape(len(X), -1), y, mark


def test_clever_hans_linear_lrp_pipeline_finds_watermark():
    Xf, y, mark = _clever_hans_split()
    clf = LogisticRegression(max_iter=2000).fit(Xf, y)
    sel = y == 0  # the watermarked class ("horse")
    # LRP (R_d = w_d x_d for the class-0 score) + SpRAy as the last pipeline step
    pipe = make_pipeline(
        sklrp.LRPTransformer(FrozenEstimator(clf), target=0),
        SpRAy(map_shape=(32, 32), random_state=0),
    )
    labels = pipe.fit_predict(Xf[sel], y[sel])
    assert adjusted_rand_score(mark[sel], labels) >= 0.9
    spray_lrp = pipe[-1]
    assert spray_lrp.n_clusters_ == 2
    assert spray_lrp.embedding_.shape == (sel.sum(), 2)
    # the raw images do not single the watermark out
    spray_raw = SpRAy(map_shape=(32, 32), embedding=None, random_state=0).fit(Xf[sel])
    assert adjusted_rand_score(mark[sel], spray_raw.labels_) < 0.3
    assert spray_lrp.eigenvalues_[1] < spray_raw.eigenvalues_[1]


# ----------------------------------------------------------------- sklearn conventions
@parametrize_with_checks([SpRAy()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_clever_hans_hik_svm_lrp_finds_watermark():
    from sklearn.svm import SVC

    Xf, y, mark = _clever_hans_split()
    Xp = np.clip(Xf, 0, None)  # the intersection kernel needs non-negative features
    yb = (y == 0).astype(int)
    svm = SVC(kernel=sklrp.kernels.intersection_kernel).fit(Xp, yb)
    sel = y == 0
    labels = make_pipeline(
        sklrp.LRPTransformer(FrozenEstimator(svm)),
        SpRAy(map_shape=(32, 32), embedding=None, random_state=0),
    ).fit_predict(Xp[sel])
    assert adjusted_rand_score(mark[sel], labels) >= 0.9
    raw = SpRAy(map_shape=(32, 32), embedding=None, random_state=0).fit_predict(Xp[sel])
    assert adjusted_rand_score(mark[sel], raw) < 0.3


def test_clever_hans_small_cnn_lrp_finds_watermark():
    torch = pytest.importorskip("torch")
    skorch = pytest.importorskip("skorch", reason="skorch not installed (pip install -e '.[dev]' installs it)")
    from torch import nn

    from sklrp.nn import THESIS_COMPOSITE

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8 * 8 * 8, 3),
            )

        def forward(self, x):
            return self.seq(x)

    X, y, mark = make_clever_hans(n_samples=450, random_state=0)
    X4 = X[:, None].astype(np.float32)
    torch.manual_seed(0)
    net = skorch.NeuralNetClassifier(
        CNN, max_epochs=15, lr=0.005, optimizer=torch.optim.Adam, criterion=nn.CrossEntropyLoss,
        train_split=None, verbose=0, batch_size=64,
    ).fit(X4, y.astype(np.int64))
    sel = y == 0
    lrp = sklrp.LRPTransformer(FrozenEstimator(net), target=0, **THESIS_COMPOSITE).fit(X4[:5])
    R = lrp.transform(X4[sel])  # (n, 1, 32, 32)
    est = SpRAy(channel_axis=1, embedding=None, random_state=0).fit(R)
    assert adjusted_rand_score(mark[sel], est.labels_) >= 0.9
    raw = SpRAy(channel_axis=1, embedding=None, random_state=0).fit(X4[sel])
    assert adjusted_rand_score(mark[sel], raw.labels_) < 0.3

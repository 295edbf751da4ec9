"""Region perturbation, AOPC, the AOPC scorer, sensitivity baseline and context ratio (Chapter 3, Eq. (4.11))."""

import pickle

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

import sklrp
from sklrp.evaluation import MeanPerturbation, Perturbation, RegionGrid

W4 = np.array([1.0, 2.0, 3.0, 4.0])


def linear(w):
    return lambda X: X.reshape(len(X), -1) @ w


@pytest.fixture(scope="module")
def digits():
    """load_digits in [-1, 1] (as the thresholded MNIST of Fig. 3.4) and a train/test split."""
    X, y = load_digits(return_X_y=True)
    X = X / 8.0 - 1.0
    return X[:1000], y[:1000], X[1000:1150], y[1000:1150]


@pytest.fixture(scope="module")
def pca_model(digits):
    Xtr, ytr, _, _ = digits
    # PCA makes the explained function a chain whose LRP depends on the rule (a bare linear model's does not)
    return make_pipeline(PCA(20, random_state=0), LogisticRegression(max_iter=1000)).fit(Xtr, ytr)


# -- closed forms -------------------------------------------------------------------------
def test_closed_form_linear_flip():
    # f(x) = w.x, R = w*x, flip x -> -x: step k removes 2 R_(k), so every curve is known exactly
    X = np.ones((1, 4))
    kw = dict(perturbation="flip", value_range=(-1, 1))
    morf = sklrp.perturbation_curve(linear(W4), X, X * W4, **kw)
    lerf = sklrp.perturbation_curve(linear(W4), X, X * W4, order="lerf", **kw)
    np.testing.assert_allclose(morf, [[10, 2, -4, -8, -10]])
    np.testing.assert_allclose(lerf, [[10, 8, 4, -2, -10]])
    assert sklrp.aopc_score(linear(W4), X, X * W4, **kw) == pytest.approx(60 / 5)
    assert sklrp.aopc_score(linear(W4), X, X * W4, order="lerf", **kw) == pytest.approx(40 / 5)
    # random order: E[f0 - fk] = 2 k mean(R) = 5 k, so E[AOPC] = (0 + 5 + 10 + 15 + 20) / 5 = 10
    rnd = sklrp.aopc_score(
        linear(W4), X, X * W4, order="random", n_repeats=4000, random_state=0, **kw
    )
    assert rnd == pytest.approx(10.0, abs=0.15)
    rel = sklrp.aopc_score(
        linear(W4), X, X * W4, relative_to="random", n_repeats=4000, random_state=0, **kw
    )
    assert rel == pytest.approx(2.0, abs=0.15)


def test_single_score_callable_ignores_target():
    X = np.ones((2, 4))
    a = sklrp.perturbation_curve(linear(W4), X, X * W4, perturbation="flip", value_range=(-1, 1))
    b = sklrp.perturbation_curve(
        linear(W4),
        X,
        X * W4,
        perturbation="flip",
        value_range=(-1, 1),
        target="true",
        y=np.array([3, 7]),
    )
    np.testing.assert_array_equal(a, b)


def test_closed_form_cumulative_and_n_steps():
    X = np.ones((1, 4))
    kw = dict(perturbation="flip", value_range=(-1, 1))
    cum = sklrp.aopc_score(linear(W4), X, X * W4, cumulative=True, **kw)
    np.testing.assert_allclose(cum, [0, 8 / 2, 22 / 3, 40 / 4, 60 / 5])
    assert sklrp.aopc_score(linear(W4), X, X * W4, n_steps=2, **kw) == pytest.approx(22 / 3)


def test_closed_form_image_mean_with_partial_regions():
    # 3x3 image, 2x2 regions: regions {0,1,3,4}, {2,5}, {6,7}, {8}; f = sum of pixels, mean image = 0
    X = np.stack([np.arange(9.0).reshape(3, 3), -np.arange(9.0).reshape(3, 3)])
    curves = sklrp.perturbation_curve(
        lambda Z: Z.sum(axis=(1, 2)), X, X, region_size=2, perturbation="mean"
    )
    # sample 0: region sums 8, 7, 13, 8 -> MoRF order r2 (13), r0 (8), r3 (8, later index), r1 (7)
    np.testing.assert_allclose(curves[0], [36, 23, 15, 7, 0])
    # sample 1 (target fixed to the sum itself): sums -8, -7, -13, -8 -> r1, r0, r3, r2
    np.testing.assert_allclose(curves[1], [-36, -29, -21, -13, 0])


def test_fixed_mean_makes_chunked_curves_equal_the_whole():
    rng = np.random.RandomState(0)
    X = rng.rand(6, 4, 4)
    f = lambda Z: Z.sum(axis=(1, 2))  # noqa: E731
    whole = sklrp.perturbation_curve(f, X, X, region_size=2, perturbation="mean")
    fixed = MeanPerturbation(mean=X.mean(axis=0))
    chunks = [sklrp.perturbation_curve(f, X[i:i + 2], X[i:i + 2], region_size=2, perturbation=fixed)
              for i in range(0, 6, 2)]
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-12)
    own = sklrp.perturbation_curve(f, X[:2], X[:2], region_size=2, perturbation="mean")
    assert not np.allclose(own, whole[:2])  # without it each chunk uses its own mean
    with pytest.raises(ValueError, match="mean has 3 elements but a sample has 16"):
        sklrp.perturbation_curve(f, X, X, region_size=2, perturbation=MeanPerturbation(mean=np.zeros(3)))


# -- loop reference straight from Eqs. (3.4)-(3.6) ----------------------------------------------
def _reference_curve(f, x, relevance, m, order, replace):
    """One sample, image (H, W, C): loops over pixels for region sums, then sequential g."""
    H, W, C = x.shape
    regions = {}
    for i in range(H):
        for j in range(W):
            regions.setdefault((i // m, j // m), []).append((i, j))
    keys = sorted(regions)  # reading order
    score = {k: sum(relevance[i, j, c] for i, j in regions[k] for c in range(C)) for k in keys}
    ranked = sorted(keys, key=lambda k: -score[k] if order == "morf" else score[k])  # stable
    xk, out = x.copy(), [f(x[None])[0]]
    for k in ranked:
        for i, j in regions[k]:
            for c in range(C):
                xk[i, j, c] = replace[i, j, c]
        out.append(f(xk[None])[0])
    return np.array(out)


@pytest.mark.parametrize("perturbation", ["flip", "mean", "blur"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_colour_image_matches_loop_reference(perturbation, order):
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 1, size=(3, 5, 7, 3))  # 5 x 7 is not divisible by m = 2
    R = rng.randn(*X.shape)
    W1 = rng.randn(5 * 7 * 3, 6)

    def f(Z):
        return np.tanh(Z.reshape(len(Z), -1) @ W1).sum(axis=1)

    curves = sklrp.perturbation_curve(
        f, X, R, region_size=2, order=order, perturbation=perturbation, value_range=(0, 1)
    )
    assert curves.shape == (3, 3 * 4 + 1)
    for n in range(3):
        if perturbation == "flip":
            rep = 1.0 - X[n]
        elif perturbation == "mean":
            rep = X.mean(axis=0)
        else:
            rep = gaussian_filter(X[n], (1.0, 1.0, 0.0), mode="nearest")
        np.testing.assert_allclose(
            curves[n], _reference_curve(f, X[n], R[n], 2, order, rep), rtol=1e-12
        )
    # the same images channels-first, flattened, or with channel-summed relevance give the same curves
    Xf = np.moveaxis(X, -1, 1)
    same = sklrp.perturbation_curve(
        lambda Z: f(np.moveaxis(Z, 1, -1)),
        Xf,
        np.moveaxis(R, -1, 1),
        region_size=2,
        order=order,
        perturbation=perturbation,
        value_range=(0, 1),
        channel_axis=0,
    )
    np.testing.assert_allclose(same, curves, rtol=1e-12)
    flat = sklrp.perturbation_curve(
        f,
        X.reshape(3, -1),
        R.sum(axis=-1).reshape(3, -1),
        region_size=2,
        image_shape=(5, 7, 3),
        order=order,
        perturbation=perturbation,
        value_range=(0, 1),
    )
    np.testing.assert_allclose(flat, curves, rtol=1e-12)


def test_region_grid_tiling():
    grid = RegionGrid((7, 5), region_size=3)
    sizes = np.bincount(grid.region_map)
    assert grid.n_regions == 6 and sizes.sum() == 35
    np.testing.assert_array_equal(sizes, [9, 6, 9, 6, 3, 2])
    for r in range(grid.n_regions):  # padded index lists cover exactly their region
        assert set(grid.indices([r])[0]) == set(np.flatnonzero(grid.mask([r])[0]))
    rect = RegionGrid((4, 6, 2), region_size=(2, 3))
    assert rect.n_regions == 4
    assert np.all(np.bincount(rect.region_map) == 12)  # 2 x 3 pixels x 2 channels


# -- randomness ------------------------------------------------------------------------------
def test_uniform_perturbation_replaces_exactly_k_regions_within_range():
    rng = np.random.RandomState(1)
    X = rng.uniform(-1, 1, size=(2, 6, 6))
    seen = []

    def f(Z):
        seen.append(Z.copy())
        return Z.sum(axis=(1, 2))

    sklrp.perturbation_curve(
        f, X, rng.randn(2, 6, 6), region_size=3, value_range=(-5, -4), random_state=0
    )
    steps = np.concatenate(seen[1:])  # first call: the unperturbed samples (target)
    assert steps.shape == (2 * 5, 6, 6)
    for row, Z in enumerate(steps):
        k, n = divmod(row, 2)  # rows are stacked step by step, samples inside
        changed = Z != X[n]
        assert changed.sum() == 9 * k
        assert np.all((Z[changed] >= -5) & (Z[changed] <= -4))


def test_random_state_determinism():
    rng = np.random.RandomState(2)
    X, R = rng.rand(4, 8, 8), rng.randn(4, 8, 8)
    f = linear(rng.randn(64))
    for kw in (
        dict(order="random", perturbation="flip"),
        dict(order="morf", perturbation="uniform"),
    ):
        a = sklrp.perturbation_curve(f, X, R, region_size=2, n_repeats=3, random_state=7, **kw)
        b = sklrp.perturbation_curve(f, X, R, region_size=2, n_repeats=3, random_state=7, **kw)
        c = sklrp.perturbation_curve(f, X, R, region_size=2, n_repeats=3, random_state=8, **kw)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)
        np.testing.assert_allclose(a[:, 0], f(X), rtol=1e-12)


# -- trained models with LRP ----------------------------------------------------------------
def test_morf_random_lerf_on_trained_model(digits, pca_model):
    _, _, Xte, _ = digits
    lrp = sklrp.LRPTransformer(FrozenEstimator(pca_model), rule="epsilon", epsilon=0.01).fit(Xte)
    R = lrp.transform(Xte)
    kw = dict(
        region_size=2,
        image_shape=(8, 8),
        perturbation="uniform",
        value_range=(-1, 1),
        n_repeats=3,
        random_state=0,
    )
    morf = sklrp.aopc_score(lrp, Xte, R, order="morf", **kw)
    rnd = sklrp.aopc_score(lrp, Xte, R, order="random", **kw)
    lerf = sklrp.aopc_score(lrp, Xte, R, order="lerf", **kw)
    assert morf > rnd > lerf
    # f(x^(0)) is exactly the score LRP explains
    E = lrp.explain(Xte)
    curves = sklrp.perturbation_curve(lrp, Xte, R, n_steps=1, perturbation="flip")
    np.testing.assert_allclose(curves[:, 0], E.output, rtol=1e-12)


def test_headline_lrp_beats_sensitivity_and_random(digits, pca_model):
    # Fig. 3.5 in miniature with the pixel flipping of Fig. 3.4: AOPC(LRP) > AOPC(sensitivity) > AOPC(random)
    _, _, Xte, _ = digits
    lrp = sklrp.LRPTransformer(FrozenEstimator(pca_model), rule="epsilon").fit(Xte)
    R = lrp.transform(Xte)
    S = sklrp.sensitivity_heatmap(lrp, Xte)
    kw = dict(perturbation="flip", value_range=(-1, 1), n_steps=10)
    a_lrp = sklrp.aopc_score(lrp, Xte, R, **kw)
    a_sens = sklrp.aopc_score(lrp, Xte, S, **kw)
    a_rand = sklrp.aopc_score(lrp, Xte, R, order="random", n_repeats=5, random_state=0, **kw)
    assert a_lrp > a_sens > a_rand
    rel = sklrp.aopc_score(lrp, Xte, R, relative_to="random", n_repeats=5, random_state=0, **kw)
    assert rel == pytest.approx(a_lrp - a_rand)


@pytest.mark.parametrize("kernel", ["rbf", "intersection"])
def test_headline_svm(digits, kernel):
    # binary SVMs on digits 3 vs 8: exact LRP (histogram intersection kernel, Eq. (2.72)) and the
    # root-point Taylor decomposition (RBF, Eq. (2.75)) both beat sensitivity and random orders
    from sklearn.svm import SVC

    Xtr, ytr, Xte, yte = digits
    X, y = np.concatenate([Xtr, Xte]), np.concatenate([ytr, yte])
    keep = (y == 3) | (y == 8)
    X, y = X[keep], y[keep]
    if kernel == "rbf":
        svc, vr = SVC(gamma=0.02), (-1, 1)
    else:
        X, svc, vr = (X + 1) / 2, SVC(kernel=sklrp.kernels.intersection_kernel), (0, 1)
    svc.fit(X[:200], y[:200])
    lrp = sklrp.LRPTransformer(FrozenEstimator(svc)).fit(X[:200], y[:200])
    Xs = X[200:280]
    E = lrp.explain(Xs)
    kw = dict(perturbation="flip", value_range=vr, n_steps=10, image_shape=(8, 8))
    curves = sklrp.perturbation_curve(lrp, Xs, E.relevance, **kw)
    np.testing.assert_allclose(curves[:, 0], E.output, rtol=1e-10)
    S = sklrp.sensitivity_heatmap(lrp, Xs)
    a_lrp = sklrp.aopc_score(lrp, Xs, E.relevance, **kw)
    a_sens = sklrp.aopc_score(lrp, Xs, S, **kw)
    a_rand = sklrp.aopc_score(lrp, Xs, S, order="random", n_repeats=5, random_state=0, **kw)
    assert a_lrp > a_sens > a_rand


def test_headline_cnn_skorch(digits):
    # the same on a small CNN (skorch, softmax output: the logits are scored, as sklrp.nn explains them)
    from skorch import NeuralNetClassifier

    Xtr, ytr, Xte, _ = digits
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 16, 10),
        torch.nn.Softmax(dim=1),
    )
    net = NeuralNetClassifier(
        module,
        max_epochs=8,
        lr=0.1,
        batch_size=64,
        train_split=None,
        verbose=0,
        optimizer=torch.optim.SGD,
    )
    net.fit(Xtr[:600].astype(np.float32).reshape(-1, 1, 8, 8), ytr[:600])
    Xi = Xte[:100].astype(np.float32).reshape(-1, 1, 8, 8)
    lrp = sklrp.LRPTransformer(FrozenEstimator(net), rule="epsilon").fit(Xi)
    E = lrp.explain(Xi)
    kw = dict(perturbation="flip", value_range=(-1, 1), n_steps=10, channel_axis=0)
    curves = sklrp.perturbation_curve(lrp, Xi, E.relevance, **kw)
    # the explainer scores perturbed inputs with its own chain; with dtype=None the float32 net
    # runs in float32 (the explanation in float64), with an explicit dtype exactly as explained
    np.testing.assert_allclose(curves[:, 0], E.output, rtol=1e-5, atol=1e-6)
    exact = sklrp.LRPTransformer(FrozenEstimator(net), rule="epsilon", dtype="float64").fit(Xi)
    np.testing.assert_allclose(sklrp.perturbation_curve(exact, Xi, E.relevance, **kw)[:, 0], E.output, rtol=1e-10)
    np.testing.assert_allclose(
        sklrp.perturbation_curve(net, Xi, E.relevance, **kw), curves, rtol=1e-4, atol=1e-5
    )  # the float32 net itself
    S = sklrp.sensitivity_heatmap(lrp, Xi, channel_axis=0)
    assert S.shape == (100, 8, 8)
    a_lrp = sklrp.aopc_score(lrp, Xi, E.relevance, **kw)
    a_sens = sklrp.aopc_score(lrp, Xi, S, **kw)
    a_rand = sklrp.aopc_score(lrp, Xi, S, order="random", n_repeats=5, random_state=0, **kw)
    assert a_lrp > a_sens > a_rand


def test_pipeline_ending_in_skorch_net(digits):
    # a preprocessing chain before a torch net: scores and gradients run through the whole chain
    from sklearn.preprocessing import StandardScaler
    from skorch import NeuralNetClassifier

    Xtr, ytr, Xte, _ = digits
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10), torch.nn.Softmax(dim=1)
    )
    net = NeuralNetClassifier(module, max_epochs=3, lr=0.1, train_split=None, verbose=0)
    pipe = make_pipeline(StandardScaler(), net).fit(Xtr[:400].astype(np.float32), ytr[:400])
    Xs = Xte[:5].astype(np.float32)
    lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), dtype="float64").fit(Xs)  # exact on a GPU too
    E = lrp.explain(Xs)
    curves = sklrp.perturbation_curve(lrp, Xs, E.relevance, n_steps=3, perturbation="flip")
    np.testing.assert_allclose(curves[:, 0], E.output, rtol=1e-10)
    auto = sklrp.sensitivity_heatmap(lrp, Xs, method="autograd")
    num = sklrp.sensitivity_heatmap(lrp, Xs, method="numerical", delta=1e-7)  # small: ReLU kinks
    np.testing.assert_allclose(auto, num, rtol=1e-5, atol=1e-7)


def test_plain_estimator_uses_target_decision_column(digits, pca_model):
    _, _, Xte, _ = digits
    lrp = sklrp.LRPTransformer(FrozenEstimator(pca_model), dtype="float64").fit(Xte)
    R = lrp.transform(Xte[:20])
    kw = dict(perturbation="flip", n_steps=5, value_range=(-1, 1))
    np.testing.assert_allclose(
        sklrp.perturbation_curve(pca_model, Xte[:20], R, **kw),
        sklrp.perturbation_curve(lrp, Xte[:20], R, **kw),
        rtol=1e-9,
    )
    # a fixed target class and target="true"
    c3 = sklrp.perturbation_curve(pca_model, Xte[:20], R, target=3, **kw)
    np.testing.assert_allclose(c3[:, 0], pca_model.decision_function(Xte[:20])[:, 3])
    yt = np.arange(20) % 10
    ct = sklrp.perturbation_curve(pca_model, Xte[:20], R, target="true", y=yt, **kw)
    np.testing.assert_allclose(ct[:, 0], pca_model.decision_function(Xte[:20])[np.arange(20), yt])


# -- scorer ----------------------------------------------------------------------------------
def test_grid_search_over_epsilon_with_aopc_scorer(digits, pca_model):
    Xtr, ytr, Xte, yte = digits
    X = np.concatenate([Xtr[:100], Xte[:100]])
    y = np.concatenate([ytr[:100], yte[:100]])
    cv = [(np.arange(100), np.arange(100, 200))]
    scorer = sklrp.make_aopc_scorer(
        region_size=2, image_shape=(8, 8), perturbation="flip", value_range=(-1, 1), n_steps=8
    )
    grid = [1e-3, 1.0, 1e3]
    search = GridSearchCV(
        sklrp.LRPTransformer(FrozenEstimator(pca_model)), {"epsilon": grid}, scoring=scorer, cv=cv
    ).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_["epsilon"] in grid
    assert (
        np.all(np.isfinite(scores)) and np.ptp(scores) > 1e-3
    )  # epsilon matters through the PCA layer
    assert scores[grid.index(search.best_params_["epsilon"])] == scores.max()
    best = search.best_estimator_
    manual = sklrp.aopc_score(
        best,
        X[100:],
        best.transform(X[100:]),
        region_size=2,
        image_shape=(8, 8),
        perturbation="flip",
        value_range=(-1, 1),
        n_steps=8,
        random_state=0,
    )
    assert scores.max() == pytest.approx(manual)


def test_scorer_with_refitting_estimator(digits):
    Xtr, ytr, _, _ = digits
    scorer = sklrp.make_aopc_scorer(
        perturbation="uniform", value_range=(-1, 1), n_steps=6, target="true"
    )
    scores = cross_val_score(
        sklrp.LRPTransformer(LogisticRegression(max_iter=300)),
        Xtr[:300],
        ytr[:300],
        scoring=scorer,
        cv=2,
    )
    assert scores.shape == (2,) and np.all(scores > 0)
    # target=None (default) uses the transformer's own target, here "true" as well
    same = cross_val_score(
        sklrp.LRPTransformer(LogisticRegression(max_iter=300), target="true"),
        Xtr[:300],
        ytr[:300],
        scoring=sklrp.make_aopc_scorer(perturbation="uniform", value_range=(-1, 1), n_steps=6),
        cv=2,
        error_score="raise",
    )
    np.testing.assert_allclose(same, scores)
    assert "make_aopc_scorer" in repr(scorer)
    pickle.loads(pickle.dumps(scorer))  # GridSearchCV(n_jobs=...) ships scorers to workers


# -- sensitivity baseline (Eq. (3.1)) -------------------------------------------------------------
def test_sensitivity_linear_closed_form_and_autograd(digits, pca_model):
    _, _, Xte, _ = digits
    w = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(
        sklrp.sensitivity_heatmap(linear(w), np.ones((2, 3))), np.abs([w, w]), rtol=1e-6
    )
    lrp = sklrp.LRPTransformer(FrozenEstimator(pca_model)).fit(Xte)
    auto = sklrp.sensitivity_heatmap(lrp, Xte[:5], method="autograd")
    num = sklrp.sensitivity_heatmap(pca_model, Xte[:5])
    np.testing.assert_allclose(auto, num, rtol=1e-5, atol=1e-8)


def test_sensitivity_falls_back_to_finite_differences(digits):
    # a chain step that leaves torch (FunctionTransformer runs numpy) is differentiated numerically
    from sklearn.preprocessing import FunctionTransformer

    Xtr, ytr, Xte, _ = digits
    model = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression(max_iter=300)).fit(
        Xtr[:300], ytr[:300]
    )
    lrp = sklrp.LRPTransformer(FrozenEstimator(model), dtype="float64").fit(Xte[:5])
    S = sklrp.sensitivity_heatmap(lrp, Xte[:5])
    target = model.predict(Xte[:5])
    w = model[-1].coef_[np.searchsorted(model.classes_, target)]
    np.testing.assert_allclose(S, np.abs(w * (1 - np.tanh(Xte[:5]) ** 2)), rtol=1e-5, atol=1e-9)
    # one sample's dimensions split over several calls give the same gradient
    np.testing.assert_allclose(
        sklrp.sensitivity_heatmap(lrp, Xte[:5], batch_size=10), S, rtol=1e-12
    )
    with pytest.raises(ValueError, match="method='autograd' needs a model differentiable in torch"):
        sklrp.sensitivity_heatmap(lrp, Xte[:5], method="autograd")
    with pytest.raises(ValueError, match="norm must be"):
        sklrp.sensitivity_heatmap(lrp, Xte[:5], norm=3)


@pytest.mark.parametrize("norm", [2, np.inf])
def test_sensitivity_torch_colour_channel_norm(norm):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3)
    ).double()
    X = np.random.RandomState(0).rand(3, 3, 6, 6)
    h = sklrp.sensitivity_heatmap(net, X, channel_axis=0, norm=norm)
    assert h.shape == (3, 6, 6)
    x = torch.tensor(X, requires_grad=True)
    out = net(x)
    out[torch.arange(3), out.argmax(1)].sum().backward()
    np.testing.assert_allclose(h, np.linalg.norm(x.grad.numpy(), ord=norm, axis=1), rtol=1e-10)
    num = sklrp.sensitivity_heatmap(
        lambda Z: net(torch.tensor(Z)).detach().numpy(), X, channel_axis=0, norm=norm
    )
    np.testing.assert_allclose(num, h, rtol=1e-5, atol=1e-9)


def test_torch_module_curve_target_logit():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    X = np.random.RandomState(0).rand(4, 4, 4)
    curves = sklrp.perturbation_curve(net, X, np.ones_like(X), region_size=2, perturbation="mean")
    logits = net(torch.tensor(X, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(curves[:, 0], logits.max(1), rtol=1e-6)
    assert net.training  # the module's mode is restored


# -- custom perturbations: the hook for Appendix C.2 -----------------------------------------------
class DescriptorReplacement(Perturbation):
    """Toy Eqs. (C.1)-(C.2): the state is the mean embedding of local descriptors; step k swaps
    descriptor l_k's contribution for that of a substitute (here the zero descriptor)."""

    random = False

    def bind(self, X, grid, value_range):
        super().bind(X, grid, value_range)
        self.desc = X.reshape(len(X), -1, 2)  # (n, |L|, 2) descriptors, padded with NaN-free zeros
        return self

    def region_scores(self, relevance):
        scores = relevance.reshape(len(relevance), -1).copy()
        scores[:, -1] = np.nan  # the last descriptor slot is padding: never perturbed
        return scores

    def start(self, rows, rng):
        return self.desc[rows].sum(axis=1) / self.desc.shape[1]  # Eq. (C.1) with Psi = identity

    def step(self, state, rows, regions, rng):
        return (
            state - self.desc[rows, regions] / self.desc.shape[1]
        )  # Eq. (C.2), substitute Psi(l) = 0

    def model_input(self, state):
        return state


def test_custom_perturbation_on_intermediate_representation():
    desc = np.array(
        [[[1.0, 1.0], [4.0, 0.0], [0.0, 2.0], [0.0, 0.0]]]
    )  # 3 descriptors + 1 padding slot
    rel = np.array([[2.0, 4.0, 1.0, 0.0]])
    curve = sklrp.perturbation_curve(
        lambda fv: fv.sum(axis=1), desc, rel, perturbation=DescriptorReplacement()
    )
    np.testing.assert_allclose(
        curve, [[8 / 4, 4 / 4, 2 / 4, 0.0]]
    )  # n_steps = 3 present descriptors
    with pytest.raises(ValueError, match="n_steps=4 exceeds the number of regions \\(3\\)"):
        sklrp.perturbation_curve(
            lambda fv: fv.sum(axis=1), desc, rel, perturbation=DescriptorReplacement(), n_steps=4
        )


def test_function_perturbation():
    X = np.ones((2, 4))
    curve = sklrp.perturbation_curve(
        linear(W4), X, X * W4, perturbation=lambda x, mask, rng: np.where(mask, 0.0, x)
    )
    np.testing.assert_allclose(curve, [[10, 6, 3, 1, 0]] * 2)


def test_verbose_progress_bar(capsys):
    X = np.ones((3, 4))
    sklrp.aopc_score(linear(W4), X, X, perturbation="flip", verbose=True, batch_size=5)
    assert "perturbation" in capsys.readouterr().err


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(relevance=np.ones((2, 8, 7))), "relevance has 56 values per sample"),
        (dict(relevance=np.ones((3, 8, 8))), "relevance has 3 samples but X has 2"),
        (dict(region_size=9), "region_size=\\(9, 9\\) is larger than the image \\(8 x 8\\)"),
        (dict(region_size=3, n_steps=10), "n_steps=10 exceeds the number of regions \\(9\\)"),
        (dict(n_steps=0), "n_steps must be a positive integer"),
        (dict(order="best"), "order must be one of"),
        (dict(perturbation="noise"), "perturbation must be 'auto', one of"),
        (dict(value_range=(1, 0)), "value_range must be a finite pair"),
        (dict(n_repeats=0), "n_repeats must be a positive integer"),
        (dict(X=np.full((2, 8, 8), np.nan)), "X contains NaN or infinity"),
        (dict(relevance=np.full((2, 8, 8), np.inf)), "relevance contains NaN or infinity"),
        (dict(image_shape=(4, 4)), "image_shape=\\(4, 4\\) has 16 elements"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(X=np.ones((2, 8, 8)), relevance=np.ones((2, 8, 8)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sklrp.aopc_score(lambda Z: Z.sum(axis=(1, 2)), args.pop("X"), args.pop("relevance"), **args)


def test_bad_models_and_tabular_regions(digits):
    Xtr, ytr, _, _ = digits
    with pytest.raises(TypeError, match="KMeans has no score function"):
        sklrp.aopc_score(KMeans(2, n_init=1).fit(Xtr[:50]), Xtr[:5], Xtr[:5])
    with pytest.raises(NotFittedError):
        sklrp.aopc_score(sklrp.LRPTransformer(), Xtr[:5], Xtr[:5])
    with pytest.raises(TypeError, match="model_or_fn must be"):
        sklrp.aopc_score("model", Xtr[:5], Xtr[:5])
    with pytest.raises(ValueError, match="needs image input"):
        sklrp.aopc_score(linear(np.ones(64)), Xtr[:5], Xtr[:5], region_size=2)
    with pytest.raises(ValueError, match="NaN or infinite scores"):
        sklrp.aopc_score(lambda Z: np.full(len(Z), np.nan), Xtr[:5], Xtr[:5])
    with pytest.raises(TypeError, match="needs explain"):
        sklrp.make_aopc_scorer()(LogisticRegression().fit(Xtr[:50], ytr[:50]), Xtr[:5])
    with pytest.raises(ValueError, match="relative_to"):
        sklrp.make_aopc_scorer(relative_to="lerf")
    # flattened digits work with image_shape
    sklrp.aopc_score(linear(np.ones(64)), Xtr[:5], Xtr[:5], region_size=2, image_shape=(8, 8))


# -- context ratio (Eq. (4.11)) -------------------------------------------------------------
def test_context_ratio_closed_form():
    R = np.ones((2, 4, 6))
    R[:, 1:3, 2:5] = 3.0  # inside the box: 6 pixels of 3; outside: 18 pixels of 1
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    np.testing.assert_allclose(sklrp.context_ratio(R, mask), [1 / 3, 1 / 3])
    np.testing.assert_allclose(
        sklrp.context_ratio(R, boxes=[(2, 1, 5, 3), [(2, 1, 5, 3)]]), [1 / 3, 1 / 3]
    )
    # the union of two boxes; colour relevance summed over channels
    Rc = np.repeat(R[..., None], 3, axis=-1) / 3
    mu = sklrp.context_ratio(Rc, boxes=[[(2, 1, 5, 3), (0, 0, 1, 1)], (2, 1, 5, 3)])
    np.testing.assert_allclose(mu, [(17 / 17) / (19 / 7), 1 / 3])
    np.testing.assert_allclose(
        sklrp.context_ratio(np.moveaxis(Rc, -1, 1), mask, channel_axis=1), [1 / 3, 1 / 3]
    )


def test_context_ratio_bad_input():
    R = np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="exactly one of mask and boxes"):
        sklrp.context_ratio(R)
    with pytest.raises(ValueError, match="mask must have shape"):
        sklrp.context_ratio(R, np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="needs pixels both inside and outside"):
        sklrp.context_ratio(R, np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="is empty"):
        sklrp.context_ratio(R, boxes=[(2, 2, 2, 3)])
    with pytest.raises(ValueError, match="one box"):
        sklrp.context_ratio(R, boxes=[(0, 0, 1, 1), (0, 0, 1, 1)])
    with pytest.raises(ValueError, match="NaN"):
        sklrp.context_ratio(np.full((1, 4, 4), np.nan), boxes=[(0, 0, 1, 1)])


def test_perturbation_scores_run_a_torch_net_in_its_own_dtype():
    """AOPC of an LRPTransformer over a float32 net scores the net itself in float32 (no float64 copy):
    the same curve as evaluating the module directly, while explanations keep float64."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 3)).eval()
    dtypes = []
    net.register_forward_pre_hook(lambda module, args: dtypes.append(args[0].dtype))
    X = np.random.RandomState(0).rand(12, 1, 8, 8)
    lrp = sklrp.LRPTransformer(sklrp.nn.TorchModel(net, classes=[0, 1, 2])).fit(X[:2])
    R = lrp.transform(X)
    kw = dict(target=0, region_size=2, n_steps=6, perturbation="blur", channel_axis=0)
    dtypes.clear()
    via_lrp = sklrp.perturbation_curve(lrp, X, R, **kw)
    assert set(dtypes) == {torch.float32}  # the user's float32 module itself
    np.testing.assert_allclose(via_lrp, sklrp.perturbation_curve(net, X, R, **kw), rtol=1e-6, atol=1e-7)
    assert lrp.explain(X[:2]).relevance.dtype == np.float64

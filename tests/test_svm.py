"""Tests for sklrp.svm: exact decompositions (Eqs. (2.72), (A.1), (A.3), (A.9)) and
first-order Taylor decompositions at a root point (Eqs. (2.75)-(2.76), (A.5), (A.7)).
The exact path-integral form is tested in test_svm_exact.py, SVDD in test_svdd.py."""

import functools
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC, NuSVC, OneClassSVM
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklrp
from sklrp import kernels as K
from sklrp.svm import Pair, RootPointWarning

# float64 on the CPU: the exactness tests compare to 1e-10 ("auto" would pick float32 on a GPU)
LRP = functools.partial(sklrp.LRPTransformer, device="cpu")
# the thesis' first-order expansion, Eq. (2.76); its remainder is large by construction
FIRST = functools.partial(LRP, taylor="first_order")
pytestmark = pytest.mark.filterwarnings("ignore::sklrp.svm.TaylorRemainderWarning")

EXACT = {
    "hik": K.intersection_kernel,
    "linear": "linear",
    "additive_chi2": K.additive_chi2_kernel,
    "hik_object": K.IntersectionKernel(),
}
TERMS = {
    "hik": min,
    "hik_object": min,
    "linear": lambda a, b: a * b,
    "additive_chi2": lambda a, b: 0.0 if a + b == 0 else -((a - b) ** 2) / (a + b),
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.rand(90, 5)
    X[:5, 2] = 0.0
    y2 = (X[:, 0] + 0.3 * X[:, 3] > X[:, 1] + 0.15).astype(int)
    y3 = np.digitize(X[:, 0] - X[:, 1], [-0.2, 0.2])
    return X, y2, y3


def _support_vectors(svc, X):
    return svc.support_vectors_ if svc.support_vectors_.size else X[svc.support_]


def _pair_coefficients(svc, a, b):
    """alpha_i y_i of the pairwise classifier (a, b), written from libsvm's one-vs-one layout."""
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    coef = np.zeros(svc.dual_coef_.shape[1])
    coef[starts[a]:starts[a + 1]] = svc.dual_coef_[b - 1, starts[a]:starts[a + 1]]
    coef[starts[b]:starts[b + 1]] = svc.dual_coef_[a, starts[b]:starts[b + 1]]
    return coef


def _loop_relevance(term, sv, coef, x):
    # Eq. (2.72): R_d = sum_i alpha_i y_i k_d(x_i(d), x(d))
    return np.array([sum(coef[i] * term(sv[i, d], x[d]) for i in range(sv.shape[0])) for d in range(x.shape[0])])


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_binary_conservation_and_loop(data, name):
    X, y2, _ = data
    lrp = LRP(SVC(kernel=EXACT[name], C=3.0)).fit(X, y2)
    svc = lrp.estimator_
    E = lrp.explain(X[:8], target=svc.classes_[1])
    f = svc.decision_function(X[:8])
    np.testing.assert_allclose(E.output, f, rtol=0, atol=1e-10)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, f, rtol=0, atol=1e-10)
    np.testing.assert_allclose(E.bias_relevance, svc.intercept_[0], rtol=1e-14)
    sv = _support_vectors(svc, X)
    for n in range(3):
        np.testing.assert_allclose(E.relevance[n], _loop_relevance(TERMS[name], sv, svc.dual_coef_[0], X[n]),
                                   rtol=1e-10, atol=1e-12)
    # the negative class explains -f(x)
    E0 = lrp.explain(X[:8], target=svc.classes_[0])
    np.testing.assert_allclose(E0.relevance, -E.relevance, atol=1e-12)


@pytest.mark.parametrize("name", ["hik", "linear", "additive_chi2"])
@pytest.mark.parametrize("shape", ["ovo", "ovr"])
def test_exact_multiclass_every_pair(data, name, shape):
    X, _, y3 = data
    lrp = LRP(SVC(kernel=EXACT[name], decision_function_shape=shape)).fit(X, y3)
    svc = lrp.estimator_
    ovo = SVC(kernel=EXACT[name], decision_function_shape="ovo").fit(X, y3).decision_function(X[:6])
    sv = _support_vectors(svc, X)
    for p, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):
        E = lrp.explain(X[:6], target=Pair(a, b))
        np.testing.assert_allclose(E.output, ovo[:, p], atol=1e-10)
        np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, ovo[:, p], rtol=0, atol=1e-10)
        coef = _pair_coefficients(svc, a, b)
        np.testing.assert_allclose(E.relevance[0], _loop_relevance(TERMS[name], sv, coef, X[0]), atol=1e-11)
        np.testing.assert_allclose(E.bias_relevance, svc.intercept_[p])
        # reversed pair: positive = evidence for b
        Er = lrp.explain(X[:6], target=Pair(b, a))
        np.testing.assert_allclose(Er.output, -ovo[:, p], atol=1e-10)
    # class k: signed sum of the pairwise decisions involving k
    for k, combo in enumerate([ovo[:, 0] + ovo[:, 1], -ovo[:, 0] + ovo[:, 2], -ovo[:, 1] - ovo[:, 2]]):
        E = lrp.explain(X[:6], target=k)
        np.testing.assert_allclose(E.output, combo, atol=1e-10)
        np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, combo, atol=1e-10)


@pytest.mark.parametrize("shape, break_ties", [("ovo", False), ("ovr", False), ("ovr", True)])
def test_predicted_target_matches_predict(data, shape, break_ties):
    X, _, y3 = data
    lrp = LRP(SVC(kernel=K.intersection_kernel, decision_function_shape=shape,
                                   break_ties=break_ties)).fit(X, y3)
    E = lrp.explain(X)
    np.testing.assert_array_equal(E.target, lrp.estimator_.predict(X))


def test_string_labels_and_nusvc(data):
    X, _, y3 = data
    labels = np.array(["cat", "dog", "eel"])[y3]
    lrp = LRP(NuSVC(kernel=K.intersection_kernel, nu=0.3)).fit(X, labels)
    E = lrp.explain(X[:10])
    np.testing.assert_array_equal(E.target, lrp.estimator_.predict(X[:10]))
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, atol=1e-10)
    E = lrp.explain(X[:4], target=Pair("eel", "cat"))
    ovo = NuSVC(kernel=K.intersection_kernel, nu=0.3, decision_function_shape="ovo").fit(X, labels)
    np.testing.assert_allclose(E.output, -ovo.decision_function(X[:4])[:, 1], atol=1e-10)
    with pytest.raises(ValueError, match="unknown target label 'fox'"):
        lrp.explain(X[:2], target=Pair("fox", "cat"))
    with pytest.raises(ValueError, match="two different classes"):
        lrp.explain(X[:2], target=Pair("cat", "cat"))


def test_binary_pair_target(data):
    X, y2, _ = data
    lrp = LRP(SVC(kernel=K.intersection_kernel)).fit(X, y2)
    f = lrp.estimator_.decision_function(X[:5])
    np.testing.assert_allclose(lrp.explain(X[:5], target=Pair(1, 0)).output, f, atol=1e-12)
    np.testing.assert_allclose(lrp.explain(X[:5], target=Pair(0, 1)).output, -f, atol=1e-12)


def test_one_class_svm_hik_exact(data):
    # Eq. (A.9): R_d = sum_i alpha_i k_d(x_i(d), x(d)), R_b = -rho
    X, _, _ = data
    lrp = LRP(OneClassSVM(kernel=K.intersection_kernel, nu=0.2)).fit(X)
    oc = lrp.estimator_
    E = lrp.explain(X[:10])
    f = oc.decision_function(X[:10])
    np.testing.assert_array_equal(E.target, oc.predict(X[:10]))
    np.testing.assert_allclose(E.output, np.where(E.target == 1, f, -f), atol=1e-12)
    E = lrp.explain(X[:10], target=1)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, f, rtol=0, atol=1e-10)
    np.testing.assert_allclose(E.bias_relevance, oc.intercept_[0])
    sv = X[oc.support_]
    np.testing.assert_allclose(E.relevance[0], _loop_relevance(min, sv, oc.dual_coef_[0], X[0]), atol=1e-12)
    with pytest.raises(ValueError, match="OneClassSVM targets are 1"):
        lrp.explain(X[:2], target=0)


def test_bias_modes(data):
    X, y2, _ = data
    for kernel in ("linear", K.intersection_kernel):
        for bias in ("uniform",) + (("weighted",) if kernel == "linear" else ()):
            lrp = LRP(SVC(kernel=kernel), bias=bias).fit(X, y2)
            E = lrp.explain(X[:5])
            np.testing.assert_allclose(E.bias_relevance, 0.0)
            np.testing.assert_allclose(E.relevance.sum(1), E.output, atol=1e-10)
    # Eq. (2.74) with the linear kernel: the bias is spread by w_d^2 / ||w||^2, w = sum_i alpha_i y_i x_i
    keep = LRP(SVC(kernel="linear")).fit(X, y2)
    weighted = LRP(SVC(kernel="linear"), bias="weighted").fit(X, y2)
    w = keep.estimator_.coef_[0]
    Ek, Ew = keep.explain(X[:3], target=1), weighted.explain(X[:3], target=1)
    np.testing.assert_allclose(Ew.relevance - Ek.relevance, Ek.bias_relevance[:, None] * w ** 2 / (w ** 2).sum(),
                               atol=1e-12)
    for kernel in (K.intersection_kernel, "rbf"):
        with pytest.raises(TypeError, match="bias='weighted' needs a linear projection"):
            LRP(SVC(kernel=kernel), bias="weighted").fit(X, y2).explain(X[:2])


# -- Taylor decompositions ----------------------------------------------------------------------

TAYLOR = {
    "rbf": lambda: SVC(kernel="rbf", gamma=2.0, C=10.0),
    "chi2": lambda: SVC(kernel=functools.partial(K.chi2_kernel, gamma=1.5), C=10.0),
    "chi2_object": lambda: SVC(kernel=K.Chi2Kernel(gamma=1.5), C=10.0),
}


@pytest.fixture(scope="module")
def positive_data():
    rng = np.random.RandomState(1)
    X = rng.rand(120, 4) + 0.05  # strictly positive: chi2 finite differences stay in the domain
    y = ((X[:, 0] - 0.5) ** 2 + (X[:, 1] - 0.5) ** 2 < 0.12).astype(int)
    return X, y


def _fd_gradient(svc, x, h=1e-6):
    grad = np.zeros_like(x)
    for d in range(x.shape[0]):
        up, down = x.copy(), x.copy()
        up[d] += h
        down[d] -= h
        grad[d] = (svc.decision_function(up[None])[0] - svc.decision_function(down[None])[0]) / (2 * h)
    return grad


@pytest.mark.parametrize("name", list(TAYLOR))
def test_taylor_root_points(positive_data, name):
    X, y = positive_data
    tol = 1e-7
    lrp = FIRST(TAYLOR[name](), root_tol=tol, n_root_candidates=30).fit(X, y)
    svc = lrp.estimator_
    Xt = X[:12]
    E = lrp.explain(Xt)
    assert E.extras["root_found"].all()
    f = svc.decision_function(Xt)
    sign = np.where(E.target == svc.classes_[1], 1.0, -1.0)
    np.testing.assert_allclose(E.output, sign * f, atol=1e-10)
    # every root point lies on the decision boundary of the fitted model
    assert np.all(np.abs(svc.decision_function(E.root_point)) <= tol * 1.01)
    # ... on a segment from x to a reference sample predicted as the opposing class
    pred_ref = svc.predict(X)
    for n in range(Xt.shape[0]):
        d = X - Xt[n]
        step = E.root_point[n] - Xt[n]
        t = (d @ step) / np.maximum((d * d).sum(1), 1e-300)
        on_segment = np.linalg.norm(Xt[n] + t[:, None] * d - E.root_point[n], axis=1) < 1e-9
        assert np.any(on_segment & (pred_ref != E.target[n]) & (t >= 0) & (t <= 1 + 1e-12))
        # Eq. (2.76) against a finite-difference gradient at the root point
        R_fd = sign[n] * _fd_gradient(svc, E.root_point[n]) * (Xt[n] - E.root_point[n])
        np.testing.assert_allclose(E.relevance[n], R_fd, rtol=1e-5, atol=1e-7)
    # the bias part is f(x~) (|f(x~)| <= root_tol), the residual the Taylor remainder f(x) - f(x~) - sum R
    np.testing.assert_allclose(E.bias_relevance, sign * svc.decision_function(E.root_point), atol=1e-12)
    assert np.all(np.abs(E.bias_relevance) <= tol * 1.01)
    np.testing.assert_allclose(E.residual, E.output - E.bias_relevance - E.relevance.sum(1), atol=1e-12)


def test_taylor_picks_closest_candidate_root(positive_data):
    # slow reference: scalar bisection on every candidate segment, closest root wins
    X, y = positive_data
    n_cand = 15
    lrp = FIRST(TAYLOR["rbf"](), root_tol=1e-9, n_root_candidates=n_cand).fit(X, y)
    svc = lrp.estimator_
    for x in X[:4]:
        f0 = svc.decision_function(x[None])[0]
        f_ref = svc.decision_function(X)
        opposite = np.where(np.sign(f_ref) != np.sign(f0))[0]
        cands = opposite[np.argsort(((X[opposite] - x) ** 2).sum(1))[:n_cand]]
        best = None
        for c in cands:
            lo, hi = 0.0, 1.0
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                fm = svc.decision_function((x + mid * (X[c] - x))[None])[0]
                if abs(fm) <= 1e-9:
                    break
                lo, hi = (mid, hi) if np.sign(fm) == np.sign(f0) else (lo, mid)
            r = x + mid * (X[c] - x)
            if best is None or np.linalg.norm(r - x) < np.linalg.norm(best - x):
                best = r
        E = lrp.explain(x[None])
        assert np.linalg.norm(E.root_point[0] - x) <= np.linalg.norm(best - x) + 1e-6


def test_taylor_near_linear_model_has_small_residual():
    rng = np.random.RandomState(0)
    X = rng.randn(150, 3)
    y = (X @ [1.0, -2.0, 0.5] > 0).astype(int)
    lrp = FIRST(SVC(kernel="rbf", gamma=1e-3, C=100.0)).fit(X, y)
    E = lrp.explain(X[:20])
    assert E.extras["root_found"].all()
    assert np.all(np.abs(E.residual) <= 0.02 * np.abs(E.output) + 1e-6)
    # and the relevance points along the linear separator's weights
    corr = np.corrcoef(np.abs(E.relevance).mean(0), [1.0, 2.0, 0.5])[0, 1]
    assert corr > 0.9


def test_taylor_multiclass_and_pair(positive_data):
    X, _ = positive_data
    y3 = np.digitize(X[:, 0], [0.4, 0.7])
    lrp = LRP(SVC(kernel="rbf", gamma=3.0, C=10.0), taylor_reference="root").fit(X, y3)
    svc = lrp.estimator_
    E = lrp.explain(X[:6], target=Pair(0, 2))
    assert E.extras["root_found"].all()
    ovo = SVC(kernel="rbf", gamma=3.0, C=10.0, decision_function_shape="ovo").fit(X, y3)
    np.testing.assert_allclose(E.output, ovo.decision_function(X[:6])[:, 1], atol=1e-10)
    assert np.all(np.abs(ovo.decision_function(E.root_point)[:, 1]) <= 1e-6)
    E = lrp.explain(X[:6])
    np.testing.assert_array_equal(E.target, svc.predict(X[:6]))
    assert E.extras["root_found"].all()


def test_qualitative_horizontal_toy():
    # Fig. 2.12: the class depends on the horizontal position only; a point predicted
    # negative because of its horizontal position gets most |relevance| horizontally
    rng = np.random.RandomState(0)
    X = np.column_stack([rng.uniform(-3, 3, 300), rng.uniform(-3, 3, 300)])
    y = (np.abs(X[:, 0]) < 1.0).astype(int)
    lrp = LRP(SVC(kernel="rbf", gamma=0.5, C=10.0), taylor_reference="root").fit(X, y)
    x = np.array([[2.2, 0.4], [-2.0, -1.5], [2.5, 2.0]])
    E = lrp.explain(x)
    np.testing.assert_array_equal(E.target, [0, 0, 0])
    assert E.extras["root_found"].all()
    share = np.abs(E.relevance[:, 0]) / np.abs(E.relevance).sum(1)
    assert np.all(share > 0.8)


def test_one_class_svm_rbf_taylor(positive_data):
    X, _ = positive_data
    lrp = LRP(OneClassSVM(gamma=2.0, nu=0.2), taylor_reference="root").fit(X)
    E = lrp.explain(X[:10])
    assert E.extras["root_found"].all()
    assert np.all(np.abs(lrp.estimator_.decision_function(E.root_point)) <= 1e-6)


@pytest.mark.parametrize("taylor", ["first_order", "exact"])
def test_no_opposite_candidate_uses_a_baseline(positive_data, taylor):
    # no reference sample of the opposite prediction: the decomposition is taken relative to the
    # point of smallest |f| on the segment to the reference sample scored least in favour of the
    # target, and f(baseline) stays in bias_relevance
    X, y = positive_data
    svc = SVC(kernel="rbf", gamma=2.0, C=10.0).fit(X, y)
    inside = X[svc.predict(X) == 1]
    lrp = LRP(FrozenEstimator(svc), taylor=taylor, taylor_reference="root").fit(inside)  # one class only
    with pytest.warns(RootPointWarning, match=r"no root point found for 3 of 3 samples \(3 without any.*baseline"):
        E = lrp.explain(inside[:3])
    assert not E.extras["root_found"].any()
    f_ref = svc.decision_function(inside)
    far = inside[np.argmin(f_ref)]  # the reference sample scored least in favour of class 1
    for n in range(3):
        x, b = inside[n], E.root_point[n]
        grid = x + np.arange(1, 33)[:, None] / 32 * (far - x)
        np.testing.assert_allclose(b, grid[np.argmin(np.abs(svc.decision_function(grid)))], atol=1e-12)
    np.testing.assert_allclose(E.bias_relevance, svc.decision_function(E.root_point), atol=1e-12)
    assert np.all(np.abs(E.relevance).sum(1) > 0)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output, atol=1e-12)
    if taylor == "exact":
        assert np.all(np.abs(E.residual) <= 1e-6 * np.abs(E.output))


def test_batching_and_float32_agree(positive_data):
    X, y = positive_data
    full = LRP(TAYLOR["rbf"]()).fit(X, y).explain(X[:9])
    small = LRP(TAYLOR["rbf"](), batch_size=2).fit(X, y).explain(X[:9])
    np.testing.assert_allclose(small.relevance, full.relevance, atol=1e-10)
    lrp32 = LRP(SVC(kernel=K.intersection_kernel), dtype="float32").fit(X, y)
    E = lrp32.explain(X[:5])
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, atol=1e-4)


# -- end to end -----------------------------------------------------------------------------------

def test_pipeline_with_lrp_transformer_step(data):
    X, y2, _ = data
    pipe = make_pipeline(StandardScaler(), LRP(SVC(kernel=K.intersection_kernel)))
    R = pipe.fit(X, y2).transform(X[:7])
    assert R.shape == (7, 5)
    svc = pipe[-1].estimator_
    Z = pipe[0].transform(X[:7])
    f = svc.decision_function(Z) * np.where(svc.predict(Z) == 1, 1, -1)
    E = pipe[-1].explain(Z)
    np.testing.assert_allclose(R.sum(1) + E.bias_relevance, f, atol=1e-10)


def test_frozen_pipeline_rbf_raw_input_space(positive_data):
    X, y = positive_data
    X_raw = X * [10.0, 1.0, 100.0, 0.5] + [5.0, 0.0, -50.0, 1.0]
    model = make_pipeline(MinMaxScaler(), SVC(kernel="rbf", C=10.0)).fit(X_raw, y)
    lrp = LRP(FrozenEstimator(model), taylor_reference="root").fit(X_raw)
    E = lrp.explain(X_raw[:5])
    assert E.relevance.shape == (5, 4)
    assert E.extras["root_found"].all()
    svc = model[-1]
    assert np.all(np.abs(svc.decision_function(E.root_point)) <= 1e-6)  # root in the SVM's input space
    np.testing.assert_allclose(E.output, model.decision_function(X_raw[:5]) * np.where(E.target == 1, 1, -1))
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output, atol=1e-10)


def test_frozen_callable_kernel_and_gamma_scale(data):
    # callable kernels keep no support vectors; the frozen model is fitted on other data than lrp.fit
    X, y2, _ = data
    svc = SVC(kernel=K.intersection_kernel).fit(X[:60], y2[:60])
    lrp = LRP(FrozenEstimator(svc), taylor_reference="root").fit(X[60:])
    E = lrp.explain(X[60:65])
    f = svc.decision_function(X[60:65]) * np.where(E.target == 1, 1, -1)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, f, atol=1e-10)
    scaled = SVC(kernel="rbf", gamma="scale").fit(X[:60], y2[:60])
    E = LRP(FrozenEstimator(scaled), taylor_reference="root").fit(X[60:]).explain(X[60:63])
    assert np.all(np.abs(scaled.decision_function(E.root_point)) <= 1e-6)


def test_fitted_transformer_pickles(positive_data):
    X, y = positive_data
    lrp = LRP(SVC(kernel=K.Chi2Kernel(gamma=1.0)), taylor_reference="root").fit(X, y)
    again = pickle.loads(pickle.dumps(lrp))
    np.testing.assert_allclose(again.transform(X[:3]), lrp.transform(X[:3]))


# -- bad input ------------------------------------------------------------------------------------

def test_precomputed_kernel_error(data):
    X, y2, _ = data
    with pytest.raises(ValueError, match="kernel='precomputed'.*sklrp.kernels.intersection_kernel"):
        LRP(SVC(kernel="precomputed")).fit(X @ X.T, y2)


def test_unknown_kernel_error(data):
    X, y2, _ = data

    def my_kernel(A, B):
        return (A @ B.T) ** 2

    with pytest.raises(TypeError, match="kernel my_kernel.*per-dimension decomposition.*gradient"):
        LRP(SVC(kernel=my_kernel)).fit(X, y2)


def test_unfitted_svc_error(data):
    X, y2, _ = data
    with pytest.raises(NotFittedError, match="SVC"):
        LRP(FrozenEstimator(SVC())).fit(X, y2)


def test_bad_samples(data, positive_data):
    X, y2, _ = data
    lrp = LRP(SVC(kernel=K.intersection_kernel)).fit(X, y2)
    bad = X[:2].copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lrp.explain(bad)
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        lrp.explain(bad)
    with pytest.raises(ValueError, match="features"):
        lrp.explain(X[:2, :3])
    Xp, yp = positive_data
    chi = LRP(SVC(kernel=K.Chi2Kernel(1.0))).fit(Xp, yp)
    with pytest.raises(ValueError, match="non-negative"):
        chi.explain(-Xp[:2])


@pytest.mark.parametrize("param, value", [
    ("n_root_candidates", 0), ("n_root_candidates", 2.5), ("root_tol", -1.0), ("root_tol", np.nan),
])
def test_bad_root_parameters(positive_data, param, value):
    # refused up front, naming the parameter, before the model is trained; and in explain after set_params
    X, y = positive_data
    with pytest.raises(ValueError, match=f"'{param}' parameter of LRPTransformer must be"):
        LRP(TAYLOR["rbf"](), **{param: value}).fit(X, y)
    lrp = LRP(TAYLOR["rbf"]()).fit(X, y).set_params(**{param: value})
    with pytest.raises(ValueError, match=f"'{param}' parameter of LRPTransformer must be"):
        lrp.explain(X[:2])


@parametrize_with_checks([sklrp.LRPTransformer(SVC(kernel=K.intersection_kernel), device="cpu"),
                          sklrp.LRPTransformer(SVC(kernel="rbf"), n_root_candidates=10, device="cpu")])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RootPointWarning)  # checks fit on tiny, sometimes one-sided data
        check(estimator)


def test_float32_taylor_keeps_root_tolerance(positive_data):
    X, y = positive_data
    lrp = FIRST(TAYLOR["rbf"](), dtype="float32", root_tol=1e-8).fit(X, y)
    E = lrp.explain(X[:6])
    assert E.extras["root_found"].all()
    assert np.all(np.abs(lrp.estimator_.decision_function(E.root_point.astype(np.float64))) <= 1e-6)


def _neg_abs(x, y):
    return -(x - y).abs()


class _CauchyKernel(K.Kernel):
    """A user kernel with only a torch matrix: Taylor decomposition with an autograd gradient."""

    def __init__(self, scale=0.5):
        self.scale = scale

    def matrix(self, X, Y):
        d2 = ((X * X).sum(1, keepdim=True) + (Y * Y).sum(1) - 2 * X @ Y.T).clamp(min=0)
        return 1.0 / (1.0 + d2 / self.scale)


def test_user_declared_per_dimension_kernel_is_exact(data):
    X, y2, _ = data
    lrp = LRP(SVC(kernel=K.PerDimensionKernel(_neg_abs))).fit(X, y2)
    svc = lrp.estimator_
    E = lrp.explain(X[:5], target=1)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, svc.decision_function(X[:5]), atol=1e-10)
    expected = _loop_relevance(lambda a, b: -abs(a - b), X[svc.support_], svc.dual_coef_[0], X[0])
    np.testing.assert_allclose(E.relevance[0], expected, atol=1e-12)


def test_user_differentiable_kernel_taylor(positive_data):
    X, y = positive_data
    lrp = FIRST(SVC(kernel=_CauchyKernel(0.1), C=10.0)).fit(X, y)
    svc = lrp.estimator_
    E = lrp.explain(X[:4])
    assert E.extras["root_found"].all()
    assert np.all(np.abs(svc.decision_function(E.root_point)) <= 1e-6)
    sign = np.where(E.target == 1, 1.0, -1.0)
    for n in range(4):
        R_fd = sign[n] * _fd_gradient(svc, E.root_point[n]) * (X[n] - E.root_point[n])
        np.testing.assert_allclose(E.relevance[n], R_fd, rtol=1e-5, atol=1e-7)


def test_sparse_training_data(data):
    import scipy.sparse as sp

    X, y2, _ = data
    svc = SVC(kernel="linear").fit(sp.csr_matrix(X), y2)
    E = LRP(FrozenEstimator(svc)).fit(X).explain(X[:4], target=1)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, svc.decision_function(X[:4]), atol=1e-10)


@pytest.mark.parametrize("name", ["rbf", "chi2_object"])
def test_taylor_matches_thesis_formulas_loop(positive_data, name):
    # Eq. (A.5): R_d = (x - x~)_d sum_i a_i k(x_i, x~) 2 gamma (x_i(d) - x~(d))   (gamma = 1/sigma^2)
    # Eq. (A.7): R_d = (x - x~)_d sum_i a_i k(x_i, x~) gamma (4 x_i(d)^2 / (x_i(d) + x~(d))^2 - 1)
    X, y = positive_data
    lrp = FIRST(TAYLOR[name](), target=1).fit(X, y)
    svc = lrp.estimator_
    E = lrp.explain(X[:3])
    sv, a, gamma = svc.support_vectors_, svc.dual_coef_[0], 2.0 if name == "rbf" else 1.5
    if not sv.size:
        sv = X[svc.support_]
    for n in range(3):
        x, r = X[n], E.root_point[n]
        expected = np.zeros(x.shape[0])
        for i in range(sv.shape[0]):
            if name == "rbf":
                k = np.exp(-gamma * ((sv[i] - r) ** 2).sum())
                expected += a[i] * k * 2 * gamma * (sv[i] - r)
            else:
                k = np.exp(-gamma * ((sv[i] - r) ** 2 / (sv[i] + r)).sum())
                expected += a[i] * k * gamma * (4 * sv[i] ** 2 / (sv[i] + r) ** 2 - 1)
        np.testing.assert_allclose(E.relevance[n], (x - r) * expected, rtol=1e-9, atol=1e-12)


def test_svr_exact_and_taylor_refused(data):
    from sklearn.svm import SVR

    X, y2, _ = data
    target = X @ [1.0, -2.0, 0.5, 0.0, 1.0]
    lrp = LRP(SVR(kernel=K.intersection_kernel, C=10.0)).fit(X, target)
    svr = lrp.estimator_
    E = lrp.explain(X[:5])
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, svr.predict(X[:5]), atol=1e-10)
    np.testing.assert_allclose(E.relevance[0], _loop_relevance(min, X[svr.support_], svr.dual_coef_[0], X[0]),
                               atol=1e-12)
    with pytest.raises(TypeError, match="SVR with kernel RBFKernel.*root point.*regressor"):
        LRP(SVR(kernel="rbf")).fit(X, target).explain(X[:2])


def test_svc_subclass_is_explained(data):
    class MySVC(SVC):
        pass

    X, y2, _ = data
    E = LRP(MySVC(kernel="linear")).fit(X, y2).explain(X[:3], target=1)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance,
                               SVC(kernel="linear").fit(X, y2).decision_function(X[:3]), atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float32(positive_data):
    X, y = positive_data
    E = sklrp.LRPTransformer(SVC(kernel=K.intersection_kernel), device="cuda").fit(X, y).explain(X[:5])
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, atol=1e-4)
    lrp = sklrp.LRPTransformer(TAYLOR["rbf"](), device="cuda").fit(X, y)
    E = lrp.explain(X[:5])
    assert E.extras["root_found"].all()
    assert np.all(np.abs(lrp.estimator_.decision_function(E.root_point.astype(np.float64))) <= 1e-5)

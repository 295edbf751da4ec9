"""Tests for sklrp.svm.SVDD (Eqs. (A.10)-(A.12)) and its LRP (Eq. (A.13), Taylor for RBF)."""

import functools
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import OneClassSVM
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklrp
from sklrp import kernels as K
from sklrp.svm import SVDD

LRP = functools.partial(sklrp.LRPTransformer, device="cpu")

TERMS = {  # k_d(a, b) of the sum-decomposable kernels, for the loop references
    "linear": lambda a, b: a * b,
    "intersection": min,
    "additive_chi2": lambda a, b: 0.0 if a + b == 0 else -((a - b) ** 2) / (a + b),
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = np.abs(rng.randn(80, 3)) + 0.05 * rng.rand(80, 3)
    X[:4] *= 4  # a few far points
    return X


def _gram(kernel, A, B):
    return kernel(A, B)


def _scipy_svdd(kernel, X, C):
    """The dual of Eq. (A.11)'s sphere solved independently by SLSQP: alpha, r^2."""
    Kmat = _gram(kernel, X, X)
    diag = np.diag(Kmat)
    n = X.shape[0]
    res = minimize(lambda a: a @ Kmat @ a - diag @ a, np.full(n, 1.0 / n), jac=lambda a: 2 * Kmat @ a - diag,
                   method="SLSQP", bounds=[(0.0, C)] * n,
                   constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0, "jac": lambda a: np.ones(n)}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    alpha = np.clip(res.x, 0.0, C)
    center = alpha @ Kmat @ alpha
    a = diag - 2 * Kmat @ alpha + center  # squared distances of the training samples (Eq. (A.11))
    free = (alpha > 1e-6 * C) & (alpha < C * (1 - 1e-6))
    return alpha, float(np.median(a[free])), res.fun


@pytest.mark.parametrize("kernel, make", [("rbf", lambda: K.RBFKernel(0.5)), ("linear", K.LinearKernel),
                                          ("intersection", K.IntersectionKernel),
                                          ("additive_chi2", K.AdditiveChi2Kernel)])
def test_matches_independent_qp(data, kernel, make):
    X = data[:30]
    nu = 0.25
    svdd = SVDD(kernel=kernel, gamma=0.5, nu=nu, tol=1e-10).fit(X)
    alpha_ref, r2_ref, objective_ref = _scipy_svdd(make(), X, 1.0 / (nu * 30))
    alpha = np.zeros(30)
    alpha[svdd.support_] = svdd.dual_coef_[0]
    Kmat = make()(X, X)
    objective = alpha @ Kmat @ alpha - np.diag(Kmat) @ alpha
    assert objective <= objective_ref + 1e-9
    np.testing.assert_allclose(objective, objective_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(svdd.radius_ ** 2, r2_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(alpha.sum(), 1.0, rtol=1e-12)
    assert np.all(alpha >= 0) and np.all(alpha <= 1.0 / (nu * 30) * (1 + 1e-12))
    # decision_function = r^2 - a(x) with a(x) from the loops of Eq. (A.11)
    Xt = data[30:40]
    kern = make()
    center = alpha_ref @ Kmat @ alpha_ref
    a = np.array([kern(x[None], x[None])[0, 0] - 2 * kern(x[None], X)[0] @ alpha_ref + center for x in Xt])
    np.testing.assert_allclose(svdd.decision_function(Xt), r2_ref - a, rtol=1e-5, atol=1e-6)


def test_rbf_svdd_is_one_class_svm(data):
    # with k(x, x) = 1 the SVDD dual is the one-class SVM's, scaled: alpha = alpha_oc / (nu n)
    X = data
    nu, n = 0.2, data.shape[0]
    svdd = SVDD(kernel="rbf", gamma=0.5, nu=nu, tol=1e-10).fit(X)
    oc = OneClassSVM(kernel="rbf", gamma=0.5, nu=nu, tol=1e-10).fit(X)
    np.testing.assert_allclose(svdd.decision_function(X), 2 / (nu * n) * oc.decision_function(X), atol=1e-7)
    clear = np.abs(oc.decision_function(X)) > 1e-6
    np.testing.assert_array_equal(svdd.predict(X)[clear], oc.predict(X)[clear])


def test_fitted_attributes_and_nu(data):
    X = data
    svdd = SVDD(kernel="rbf", nu=0.2).fit(X)
    n = X.shape[0]
    assert svdd.dual_coef_.shape == (1, svdd.support_.size) == (1, svdd.n_support_[0])
    np.testing.assert_array_equal(svdd.support_vectors_, X[svdd.support_])
    np.testing.assert_allclose(svdd.decision_function(X), svdd.score_samples(X) - svdd.offset_)
    np.testing.assert_allclose(svdd.offset_, -svdd.radius_ ** 2)
    # nu bounds the outlier fraction from above and the support-vector fraction from below
    outliers = (svdd.decision_function(X) < -1e-8).mean()
    assert outliers <= 0.2 + 1e-9 and svdd.support_.size / n >= 0.2 - 1e-9
    assert set(np.unique(svdd.predict(X))) == {-1, 1}
    # the C parametrisation: C = 1 / (nu n) is the same problem
    same = SVDD(kernel="rbf", C=1.0 / (0.2 * n)).fit(X)
    np.testing.assert_allclose(same.decision_function(X), svdd.decision_function(X), atol=1e-9)
    # C >= 1: the hard sphere holds every training sample
    hard = SVDD(kernel="linear", C=1.0, tol=1e-9).fit(X)
    assert np.all(hard.decision_function(X) >= -1e-6)


def test_linear_svdd_is_the_smallest_enclosing_ball():
    # hard linear SVDD of four corners of a square: the centre is the middle, the radius half the diagonal
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.2]])
    svdd = SVDD(kernel="linear", C=1.0, tol=1e-12).fit(X)
    np.testing.assert_allclose(svdd.radius_, np.sqrt(2.0), rtol=1e-9)
    np.testing.assert_allclose(svdd.dual_coef_ @ svdd.support_vectors_, [[1.0, 1.0]], atol=1e-9)


def test_column_cache_gives_the_same_solution(data):
    full = SVDD(kernel="intersection", nu=0.3, tol=1e-10).fit(data)
    tiny = SVDD(kernel="intersection", nu=0.3, tol=1e-10, cache_size=1e-4).fit(data)
    np.testing.assert_allclose(tiny.decision_function(data), full.decision_function(data), atol=1e-10)


def test_bad_input(data):
    with pytest.raises(ValueError, match="give nu or C, not both"):
        SVDD(nu=0.1, C=1.0).fit(data)
    with pytest.raises(ValueError, match="below 1 / n_samples"):
        SVDD(C=1e-4).fit(data)
    with pytest.raises(ValueError, match="'nu' parameter of SVDD must be"):
        SVDD(nu=1.5).fit(data)
    with pytest.raises(ValueError, match="'kernel' parameter of SVDD must be"):
        SVDD(kernel="poly2").fit(data)
    with pytest.raises(ValueError, match="SVDD needs a kernel sklrp can evaluate"):
        SVDD(kernel=lambda A, B: A @ B.T).fit(data)
    with pytest.raises(ValueError, match="Negative values in data passed to SVDD"):
        SVDD(kernel="additive_chi2").fit(-data)
    with pytest.raises(ValueError, match="NaN"):
        SVDD().fit(np.full((4, 2), np.nan))
    svdd = SVDD(kernel="additive_chi2").fit(data)
    with pytest.raises(ValueError, match="non-negative"):
        svdd.decision_function(-data)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        SVDD(max_iter=2).fit(data)


# the additive chi2 kernel's domain is histograms: scikit-learn's outlier checks feed it negative blobs
@parametrize_with_checks([SVDD(), SVDD(kernel="linear"), SVDD(kernel="intersection")])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# -- LRP: Eq. (A.13) and the Taylor decomposition -------------------------------------------------

@pytest.mark.parametrize("kernel", ["linear", "intersection", "additive_chi2"])
def test_a13_exact_and_loop(data, kernel):
    X = data
    svdd = SVDD(kernel=kernel, nu=0.2).fit(X)
    lrp = LRP(svdd).fit(X)
    E = lrp.explain(X[:8])
    outlierness = -lrp.estimator_.decision_function(X[:8])  # a(x) - r^2, Eq. (A.12)
    np.testing.assert_allclose(E.output, outlierness, atol=1e-10)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, outlierness, rtol=0, atol=1e-10)
    np.testing.assert_allclose(E.bias_relevance, -lrp.estimator_.radius_ ** 2)
    np.testing.assert_array_equal(E.target, 0)
    # Eq. (A.13) in loops: k_d(x_d, x_d) - 2 sum_i a_i k_d(x_i(d), x_d) + sum_ij a_i a_j k_d(x_i(d), x_j(d))
    term, sv, a = TERMS[kernel], lrp.estimator_.support_vectors_, lrp.estimator_.dual_coef_[0]
    for n in range(3):
        x = X[n]
        expected = [term(x[d], x[d]) - 2 * sum(a[i] * term(sv[i, d], x[d]) for i in range(len(a)))
                    + sum(a[i] * a[j] * term(sv[i, d], sv[j, d]) for i in range(len(a)) for j in range(len(a)))
                    for d in range(X.shape[1])]
        np.testing.assert_allclose(E.relevance[n], expected, rtol=1e-9, atol=1e-12)


def test_linear_a13_is_squared_offset_from_the_centre(data):
    svdd = SVDD(kernel="linear", nu=0.2).fit(data)
    E = LRP(svdd).fit(data).explain(data[:5])
    mu = svdd.dual_coef_[0] @ svdd.support_vectors_
    np.testing.assert_allclose(E.relevance, (data[:5] - mu) ** 2, atol=1e-10)


@pytest.mark.parametrize("kernel", ["rbf", K.Chi2Kernel(gamma=0.5)])
def test_taylor_svdd_conserves(data, kernel):
    X = data
    svdd = SVDD(kernel=kernel, gamma=0.5, nu=0.2).fit(X)
    outlierness = -svdd.decision_function(X[:10])
    for reference in ("root", "mean"):  # the exact default "auto" expands at the mean
        E = LRP(svdd, taylor_reference=reference).fit(X).explain(X[:10])
        assert E.extras["root_found"].all()
        np.testing.assert_allclose(E.output, outlierness, atol=1e-10)
        total = E.relevance.sum(1) + E.bias_relevance
        assert np.all(np.abs(total - outlierness) <= 1e-6 * np.abs(outlierness))
        if reference == "root":  # the root points lie on the sphere
            assert np.all(np.abs(svdd.decision_function(E.root_point)) <= 1e-6)
        else:  # the training mean, its outlierness as the bias part
            np.testing.assert_allclose(E.root_point, np.broadcast_to(X.mean(0), E.root_point.shape), atol=1e-12)
            np.testing.assert_allclose(E.bias_relevance, -svdd.decision_function(E.root_point), atol=1e-10)


def test_pipeline_and_targets(data):
    pipe = make_pipeline(MinMaxScaler(), SVDD(kernel="intersection", nu=0.2))
    lrp = LRP(pipe, rule="z").fit(data)
    E = lrp.explain(data[:4])
    np.testing.assert_allclose(E.output, -lrp.estimator_.decision_function(data[:4]), atol=1e-10)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output, atol=1e-10)
    R = make_pipeline(StandardScaler(), LRP(SVDD(kernel="rbf"))).fit(data).transform(data[:3])
    assert R.shape == (3, 3) and np.all(np.isfinite(R))
    with pytest.raises(ValueError, match="one explained output, its outlierness"):
        lrp.explain(data[:2], target=1)
    with pytest.raises(TypeError, match="bias='weighted' needs a linear projection"):
        LRP(SVDD(kernel="linear"), bias="weighted").fit(data).explain(data[:2])
    with pytest.raises(TypeError, match="SVDD with a sum-decomposable kernel"):
        LRP(SVDD(kernel=K.PolynomialKernel(0.5, 2, 1.0))).fit(data)

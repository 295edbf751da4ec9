"""Tests for sklrp.kernels: kernel values (Eqs. (A.2), (A.4), (A.6)), terms and gradients."""

import functools
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import pairwise
from sklearn.svm import SVC

import sklrp
from sklrp import kernels as K


@pytest.fixture
def data():
    rng = np.random.RandomState(0)
    X = rng.rand(7, 4)
    X[0, 1] = 0.0  # exercise 0/0 := 0 of the chi2 kernels
    Y = rng.rand(5, 4)
    Y[2, 1] = 0.0
    return X, Y


def _loop(fn, X, Y):
    return np.array([[fn(x, y) for y in Y] for x in X])


def _chi2_terms(x, y):
    out = 0.0
    for a, b in zip(x, y):
        if a + b != 0:
            out -= (a - b) ** 2 / (a + b)
    return out


def test_intersection_matches_loop(data):
    X, Y = data
    expected = _loop(lambda x, y: sum(min(a, b) for a, b in zip(x, y)), X, Y)
    np.testing.assert_allclose(K.intersection_kernel(X, Y), expected, rtol=1e-14)
    np.testing.assert_allclose(K.intersection_kernel(X), K.intersection_kernel(X, X))


def test_chi2_kernels_match_loop_and_sklearn(data):
    X, Y = data
    additive = _loop(_chi2_terms, X, Y)
    np.testing.assert_allclose(K.additive_chi2_kernel(X, Y), additive, rtol=1e-14)
    np.testing.assert_allclose(K.chi2_kernel(X, Y, gamma=0.7), np.exp(0.7 * additive), rtol=1e-14)
    np.testing.assert_allclose(K.chi2_kernel(X, Y, gamma=0.7), pairwise.chi2_kernel(X, Y, gamma=0.7), rtol=1e-12)
    np.testing.assert_allclose(K.additive_chi2_kernel(X, Y), pairwise.additive_chi2_kernel(X, Y), atol=1e-12)


@pytest.mark.parametrize(
    "kernel, reference",
    [
        (K.RBFKernel(gamma=0.3), lambda X, Y: pairwise.rbf_kernel(X, Y, gamma=0.3)),
        (K.LinearKernel(), pairwise.linear_kernel),
        (K.PolynomialKernel(gamma=0.5, degree=3, coef0=1.0),
         lambda X, Y: pairwise.polynomial_kernel(X, Y, degree=3, gamma=0.5, coef0=1.0)),
        (K.SigmoidKernel(gamma=0.5, coef0=0.1), lambda X, Y: pairwise.sigmoid_kernel(X, Y, gamma=0.5, coef0=0.1)),
    ],
)
def test_product_kernels_match_sklearn(data, kernel, reference):
    X, Y = data
    np.testing.assert_allclose(kernel(X, Y), reference(X, Y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel", [K.LinearKernel(), K.IntersectionKernel(), K.AdditiveChi2Kernel()])
def test_per_dimension_terms_sum_to_kernel(data, kernel):
    X, Y = data
    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    terms = kernel.per_dimension(x[:, None, :], y[None, :, :]).sum(2).numpy()
    np.testing.assert_allclose(terms, kernel(X, Y), rtol=1e-13, atol=1e-14)
    assert kernel.is_sum_decomposable


@pytest.mark.parametrize("kernel", [K.LinearKernel(), K.IntersectionKernel(), K.AdditiveChi2Kernel()])
def test_dimension_sums_match_loop(data, kernel):
    # T[n, d] = sum_i c_i k_d(s_i(d), x_n(d)) (Eq. (2.72)); the HIK uses a sorted prefix-sum trick
    X, S = data
    c = np.random.RandomState(1).randn(S.shape[0])
    term = {
        "LinearKernel": lambda a, b: a * b,
        "IntersectionKernel": min,
        "AdditiveChi2Kernel": lambda a, b: 0.0 if a + b == 0 else -((a - b) ** 2) / (a + b),
    }[type(kernel).__name__]
    expected = np.zeros(X.shape)
    for n in range(X.shape[0]):
        for d in range(X.shape[1]):
            expected[n, d] = sum(c[i] * term(S[i, d], X[n, d]) for i in range(S.shape[0]))
    got = kernel.prepare_sums(torch.as_tensor(S), torch.as_tensor(c))(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_intersection_sums_with_ties_and_negatives():
    S = np.array([[0.5, -1.0], [0.5, 2.0], [0.1, 2.0]])
    X = np.array([[0.5, 2.0], [-3.0, 0.0], [0.5, -1.0]])
    c = np.array([1.0, -2.0, 0.5])
    expected = np.array([[sum(c[i] * min(S[i, d], x[d]) for i in range(3)) for d in range(2)] for x in X])
    got = K.IntersectionKernel().dimension_sums(torch.as_tensor(X), torch.as_tensor(S), torch.as_tensor(c))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-14)


def _fd_gradient(kernel, X, S, coef, h=1e-6):
    grad = np.zeros_like(X)
    for n in range(X.shape[0]):
        for d in range(X.shape[1]):
            up, down = X[n:n + 1].copy(), X[n:n + 1].copy()
            up[0, d] += h
            down[0, d] -= h
            grad[n, d] = ((kernel(up, S) - kernel(down, S)) @ coef[n]).item() / (2 * h)
    return grad


class _Cauchy(K.Kernel):
    """A user kernel with only a torch matrix: gradient from autograd."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def matrix(self, X, Y):
        d2 = (X * X).sum(1, keepdim=True) + (Y * Y).sum(1) - 2 * X @ Y.T
        return 1.0 / (1.0 + d2 / self.scale)


@pytest.mark.parametrize(
    "kernel",
    [K.RBFKernel(gamma=0.8), K.Chi2Kernel(gamma=0.6), K.PolynomialKernel(gamma=0.5, degree=3, coef0=1.0),
     K.SigmoidKernel(gamma=0.5, coef0=0.2), K.LinearKernel(), _Cauchy(scale=2.0)],
)
def test_gradient_matches_finite_differences(kernel, data):
    # Eqs. (A.5), (A.7): d/dx sum_i c_i k(s_i, x)
    X, S = data
    X = X + 0.1  # finite differences need an open neighbourhood inside the chi2 domain
    coef = np.random.RandomState(2).randn(X.shape[0], S.shape[0])
    got = kernel.gradient(torch.as_tensor(X), torch.as_tensor(S), torch.as_tensor(coef)).numpy()
    np.testing.assert_allclose(got, _fd_gradient(kernel, X, S, coef), rtol=1e-6, atol=1e-7)
    assert kernel.is_differentiable


def test_chi2_gradient_formula_a7_loop(data):
    # Eq. (A.7) written out with loops, including the 0/0 := 0 entries
    X, S = data
    X = X.copy()
    S = S.copy()
    X[1, 1] = 0.0
    gamma = 0.6
    coef = np.random.RandomState(3).randn(X.shape[0], S.shape[0])
    kmat = K.chi2_kernel(X, S, gamma=gamma)
    expected = np.zeros_like(X)
    for n in range(X.shape[0]):
        for d in range(X.shape[1]):
            for i in range(S.shape[0]):
                den = (S[i, d] + X[n, d]) ** 2
                ratio = 0.0 if den == 0 else 4 * S[i, d] ** 2 / den
                expected[n, d] += coef[n, i] * kmat[n, i] * gamma * (ratio - 1)
    got = K.Chi2Kernel(gamma).gradient(torch.as_tensor(X), torch.as_tensor(S), torch.as_tensor(coef)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_kernel_objects_params_clone_pickle():
    k = K.Chi2Kernel(gamma=0.5)
    assert k.get_params() == {"gamma": 0.5}
    assert k.set_params(gamma=0.25).gamma == 0.25
    with pytest.raises(ValueError, match="invalid parameter 'sigma'"):
        k.set_params(sigma=1.0)
    svc = SVC(kernel=k)
    cloned = clone(svc)
    assert cloned.kernel == k and cloned.kernel is not k
    assert pickle.loads(pickle.dumps(k)) == k
    assert repr(k) == "Chi2Kernel(gamma=0.25)"
    assert K.Chi2Kernel(0.25) != K.RBFKernel(0.25)


def test_kernels_usable_in_svc():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 3)
    y = (X[:, 0] > X[:, 1]).astype(int)
    for kernel in (K.intersection_kernel, K.additive_chi2_kernel, K.chi2_kernel,
                   functools.partial(K.chi2_kernel, gamma=2.0), K.Chi2Kernel(gamma=2.0), K.RBFKernel(1.0)):
        assert SVC(kernel=kernel).fit(X, y).score(X, y) > 0.8


def test_as_kernel_recognises_callables():
    assert K.as_kernel(K.intersection_kernel) == K.IntersectionKernel()
    assert K.as_kernel(K.additive_chi2_kernel) == K.AdditiveChi2Kernel()
    assert K.as_kernel(K.chi2_kernel) == K.Chi2Kernel(1.0)
    assert K.as_kernel(functools.partial(K.chi2_kernel, gamma=0.3)) == K.Chi2Kernel(0.3)
    assert K.as_kernel(pairwise.chi2_kernel) == K.Chi2Kernel(1.0)
    assert K.as_kernel(functools.partial(pairwise.rbf_kernel, gamma=0.2)) == K.RBFKernel(0.2)
    assert K.as_kernel(pairwise.linear_kernel) == K.LinearKernel()
    assert K.as_kernel(lambda X, Y: X @ Y.T) is None
    assert K.as_kernel(pairwise.rbf_kernel) is None  # gamma=None depends on the data
    assert K.as_kernel(functools.partial(K.chi2_kernel, gamma=0.3, foo=1)) is None
    k = K.Chi2Kernel(0.1)
    assert K.as_kernel(k) is k


def test_per_dimension_kernel():
    def neg_abs(x, y):
        return -(x - y).abs()

    k = K.PerDimensionKernel(neg_abs)
    X = np.array([[0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(k(X), -pairwise.manhattan_distances(X))
    assert k.is_sum_decomposable and not k.is_differentiable
    with pytest.raises(ValueError, match="callable term"):
        K.PerDimensionKernel(3)(X)


def test_bad_inputs():
    X = np.array([[1.0, -0.5]])
    with pytest.raises(ValueError, match="non-negative.*negative values"):
        K.chi2_kernel(X)
    with pytest.raises(ValueError, match="non-negative"):
        K.additive_chi2_kernel(np.abs(X), X)
    with pytest.raises(ValueError, match="gamma must be a positive"):
        K.chi2_kernel(np.abs(X), gamma=-1.0)
    with pytest.raises(ValueError, match="gamma must be a positive"):
        K.RBFKernel(gamma="scale")(X)
    with pytest.raises(ValueError, match="NaN"):
        K.intersection_kernel(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="infinity"):
        K.intersection_kernel(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match="features"):
        K.intersection_kernel(np.ones((2, 3)), np.ones((2, 2)))
    with pytest.raises(NotImplementedError, match="not sum-decomposable"):
        K.RBFKernel().per_dimension(torch.zeros(1), torch.zeros(1))


def test_exported():
    assert sklrp.kernels is K


@pytest.mark.parametrize("kernel, match", [
    (K.PolynomialKernel(degree=-1), "degree must be a non-negative integer"),
    (K.PolynomialKernel(degree=2.5), "degree must be a non-negative integer"),
    (K.PolynomialKernel(degree=True), "degree must be a non-negative integer"),
    (K.PolynomialKernel(gamma=-1.0), "gamma must be a non-negative finite number"),
    (K.PolynomialKernel(coef0=np.nan), "coef0 must be a finite number"),
    (K.SigmoidKernel(gamma=np.inf), "gamma must be a non-negative finite number"),
    (K.SigmoidKernel(coef0="1"), "coef0 must be a finite number"),
    (K.RBFKernel(gamma=0.0), "gamma must be a positive finite number"),
    (K.Chi2Kernel(gamma=-0.5), "gamma must be a positive finite number"),
])
def test_invalid_kernel_parameters(kernel, match):
    X = np.ones((2, 2))
    with pytest.raises(ValueError, match=match):
        kernel(X)
    with pytest.raises(ValueError, match=match):
        SVC(kernel=kernel).fit(np.random.RandomState(0).rand(10, 2), np.arange(10) % 2)


def test_degree_zero_polynomial_is_constant_with_zero_gradient():
    k = K.PolynomialKernel(gamma=1.0, degree=0, coef0=0.0)
    S = torch.zeros((2, 3), dtype=torch.float64)
    X = torch.zeros((1, 3), dtype=torch.float64)
    np.testing.assert_allclose(k(X.numpy(), S.numpy()), 1.0)
    assert torch.equal(k.gradient(X, S, torch.ones((1, 2), dtype=torch.float64)), torch.zeros_like(X))
    d_dot, d_sq = k.product_derivatives(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                                        torch.zeros(2, dtype=torch.float64))
    assert torch.equal(d_dot, torch.zeros(2, dtype=torch.float64)) and torch.equal(d_sq, d_dot)


@pytest.mark.parametrize("kernel", [K.RBFKernel(0.7), K.PolynomialKernel(0.5, 3, 1.0), K.SigmoidKernel(0.5, 0.2),
                                    K.LinearKernel()])
def test_product_derivatives_match_autograd(kernel):
    # the analytic (dk/d<s,x>, dk/d||x||^2) against the autograd default of the base class
    rng = np.random.RandomState(0)
    dot = torch.as_tensor(rng.randn(5, 3))
    x_sq = torch.as_tensor(rng.rand(5, 1) * 3 + 2)
    s_sq = torch.as_tensor(rng.rand(1, 3) * 3 + 2)
    got = kernel.product_derivatives(dot, x_sq, s_sq)
    reference = K.Kernel.product_derivatives(kernel, dot, x_sq, s_sq)
    for a, b in zip(got, reference):
        np.testing.assert_allclose(a.expand_as(dot).numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel", [K.RBFKernel(0.7), K.Chi2Kernel(0.6), K.LinearKernel(), K.IntersectionKernel(),
                                    K.AdditiveChi2Kernel(), K.PolynomialKernel(0.5, 2, 1.0), _Cauchy(2.0)])
def test_diagonal_matches_matrix(kernel, data):
    X, _ = data
    np.testing.assert_allclose(kernel.diagonal(torch.as_tensor(X)).numpy(), np.diag(kernel(X)), rtol=1e-12,
                               atol=1e-14)
    assert kernel.unit_diagonal == isinstance(kernel, (K.RBFKernel, K.Chi2Kernel))


def test_rounding_level_negatives_are_zeros():
    # e.g. MinMaxScaler replayed in another order of operations: -1e-17 is a zero, -1e-3 is not
    X = np.array([[1.0, -1e-17], [0.5, 0.25]])
    np.testing.assert_allclose(K.additive_chi2_kernel(X), K.additive_chi2_kernel(np.clip(X, 0, None)), atol=1e-15)
    with pytest.raises(ValueError, match="non-negative"):
        K.chi2_kernel(np.array([[1.0, -1e-3]]))


def test_user_kernel_without_init_has_no_parameters():
    class Plain(K.Kernel):
        def per_dimension(self, x, y):
            return x * y

    assert Plain().get_params() == {} and repr(Plain()) == "Plain()"

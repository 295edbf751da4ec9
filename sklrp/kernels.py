"""Kernel functions for kernel SVMs, with the pieces LRP needs (thesis Appendix A.1.1).

Each kernel is usable as ``sklearn.svm.SVC(kernel=...)`` and knows, where it can,

* its **per-dimension terms** ``k_d(x_d, y_d)`` with ``k(x, y) = sum_d k_d(x_d, y_d)``
  (sum-decomposable kernels: linear, histogram intersection (Eq. (A.2)), additive chi2),
  which give the exact decomposition ``R_d = sum_i alpha_i y_i k_d(x_i(d), x(d))``
  of Eqs. (2.72), (A.1), (A.3), (A.9);
* its **gradient** with respect to the second argument (differentiable kernels: RBF
  (Eq. (A.4)), exponential chi2 (Eq. (A.6)), polynomial, sigmoid), used by the
  Taylor decomposition at a root point, Eqs. (2.75)-(2.76), (A.5), (A.7).

Module-level functions (``intersection_kernel``, ``additive_chi2_kernel``,
``chi2_kernel``) are plain callables for ``SVC(kernel=...)``; the kernel objects
(``IntersectionKernel()``, ``Chi2Kernel(gamma=0.5)``, ...) do the same and carry their
parameters (``get_params``/``set_params``, picklable, clonable). ``sklrp.svm``
recognises the functions by identity, ``functools.partial(chi2_kernel, gamma=...)``,
the matching ``sklearn.metrics.pairwise`` functions, the kernel objects by type and the
string kernels of ``SVC`` (``"linear"``, ``"rbf"``, ``"poly"``, ``"sigmoid"``).

Your own kernel: subclass :class:`Kernel` and implement ``per_dimension`` (then it is
sum-decomposable and explained exactly) or ``matrix`` (then it is explained by Taylor
decomposition, with a gradient from torch autograd unless you override ``gradient``),
or wrap an element-wise torch function with :class:`PerDimensionKernel`. Override
``check_params`` to reject invalid parameters and ``check_input`` to reject inputs
outside the kernel's domain.

Kernels that depend on ``x`` only through ``<s, x>``, ``||x||^2`` and ``||s||^2``
(linear, RBF, polynomial, sigmoid) set ``uses_products`` and implement
``from_products`` and ``product_derivatives``: a root search along a segment and the
path integral of the exact Taylor decomposition then cost ``O(n_support)`` per point
instead of ``O(n_support * d)``.

Conventions: sklearn's RBF is ``exp(-gamma ||x - y||^2)``, so Eq. (A.4)'s
``1 / sigma^2`` is ``gamma`` here; the chi2 kernels follow
``sklearn.metrics.pairwise``: ``additive_chi2(x, y) = -sum_d (x_d - y_d)^2 / (x_d + y_d)``
and ``chi2(x, y) = exp(gamma * additive_chi2(x, y))`` (Eq. (A.6) with ``sigma = gamma``),
with 0/0 := 0.

Why one module: every kernel implements the same small protocol (per-dimension terms,
matrix, gradient, products) side by side, and ``sklrp.svm`` resolves kernels by identity
against this module's functions; one file keeps each kernel's formulas next to each other.
"""

from __future__ import annotations

import functools
import inspect
import numbers

import numpy as np
import torch
from sklearn.utils.validation import check_array

from .rules import safe_divide  # 0/0 := 0, as in Eq. (A.6)

__all__ = [
    "Kernel",
    "PerDimensionKernel",
    "LinearKernel",
    "IntersectionKernel",
    "AdditiveChi2Kernel",
    "Chi2Kernel",
    "RBFKernel",
    "PolynomialKernel",
    "SigmoidKernel",
    "intersection_kernel",
    "additive_chi2_kernel",
    "chi2_kernel",
    "as_kernel",
]

# Largest number of elements of one intermediate (n, m, d) tensor: bounds memory.
_CHUNK = 1 << 22
_SMALL_CHUNK = 1 << 18


def _as_tensor(X, like=None):
    if isinstance(X, torch.Tensor):
        return X if like is None else X.to(dtype=like.dtype, device=like.device)
    return torch.as_tensor(np.asarray(X, dtype=np.float64))


class Kernel:
    """Base class of sklrp kernel objects, callable as ``SVC(kernel=...)``.

    Subclasses implement :meth:`per_dimension` (sum-decomposable kernels) and/or
    :meth:`matrix` (any kernel, in torch). Parameters are the ``__init__`` arguments,
    stored under the same names, as for scikit-learn estimators.

    Examples
    --------
    >>> import torch
    >>> from sklrp.kernels import Kernel
    >>> class AbsKernel(Kernel):
    ...     '''k(x, y) = -sum_d |x_d - y_d|: sum-decomposable, explained exactly.'''
    ...     def per_dimension(self, x, y):
    ...         return -(x - y).abs()
    >>> AbsKernel()([[0.0, 1.0]], [[1.0, 1.0], [0.0, 3.0]])
    array([[-1., -2.]])
    """

    # -- parameters (scikit-learn style, so SVC's get_params/clone handle kernel objects) ----
    @classmethod
    def _param_names(cls):
        if cls.__init__ is object.__init__:
            return []  # no __init__ of its own: no parameters
        sig = inspect.signature(cls.__init__)
        return [name for name, p in sig.parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep=True):
        """Parameters of this kernel (``deep`` is accepted for scikit-learn compatibility).

        Returns
        -------
        params : dict
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set parameters; returns ``self``.

        Returns
        -------
        self : Kernel
        """
        for name, value in params.items():
            if name not in self._param_names():
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {self._param_names()}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_params() == other.get_params()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted((k, repr(v)) for k, v in self.get_params().items()))))

    # -- capabilities ----------------------------------------------------------------------
    @property
    def is_sum_decomposable(self) -> bool:
        """True when ``k(x, y) = sum_d k_d(x_d, y_d)`` (``per_dimension`` is implemented)."""
        return type(self).per_dimension is not Kernel.per_dimension

    @property
    def is_differentiable(self) -> bool:
        """True when the kernel has a gradient in its second argument (Eq. (2.75))."""
        return type(self).gradient is not Kernel.gradient or type(self).matrix is not Kernel.matrix

    #: True when ``k(x, x)`` is the same constant (1) for every ``x`` (RBF, exponential chi2).
    unit_diagonal = False

    def check_params(self):
        """Validate parameters; raise ValueError naming the bad one."""

    def check_input(self, X, name="X"):
        """Raise ValueError for inputs outside the kernel's domain."""

    # -- the kernel --------------------------------------------------------------------------
    def per_dimension(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Element-wise term ``k_d(x_d, y_d)`` for broadcastable tensors (sum-decomposable kernels)."""
        raise NotImplementedError(f"{type(self).__name__} is not sum-decomposable")

    def matrix(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Gram matrix ``k(X_n, Y_m)`` of shape ``(n, m)`` in torch."""
        if not self.is_sum_decomposable:
            raise NotImplementedError(f"{type(self).__name__} implements neither matrix nor per_dimension")
        n, d = X.shape
        m = Y.shape[0]
        out = X.new_zeros((n, m))
        # blocks of rows x all features: the reduction runs over contiguous memory and the
        # temporaries stay small (several times faster than blocks of features)
        d_step = min(d, max(1, _CHUNK // max(1, m)))
        rows = max(1, _SMALL_CHUNK // max(1, m * d_step))
        for r in range(0, n, rows):
            for lo in range(0, d, d_step):
                block = self.per_dimension(X[r:r + rows, None, lo:lo + d_step], Y[None, :, lo:lo + d_step])
                out[r:r + rows] += block.sum(dim=2)
        return out

    def __call__(self, X, Y=None):
        """Gram matrix between the rows of ``X`` and ``Y`` (numpy in, numpy out).

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
        Y : array-like of shape (n_samples_Y, n_features), default=None
            ``None`` means ``Y = X``.

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
        """
        self.check_params()
        X = check_array(X, dtype=np.float64)
        Y = X if Y is None else check_array(Y, dtype=np.float64)
        if X.shape[1] != Y.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features but Y has {Y.shape[1]}")
        self.check_input(X, "X")
        self.check_input(Y, "Y")
        # torch wants writable buffers (read-only memmaps are copied)
        X, Y = np.require(X, requirements="W"), np.require(Y, requirements="W")
        with torch.no_grad():
            return self.matrix(torch.from_numpy(X), torch.from_numpy(Y)).numpy()

    # -- what LRP needs --------------------------------------------------------------------
    def dimension_sums(self, X: torch.Tensor, S: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``T[n, d] = sum_i coef_i k_d(S_i(d), X_n(d))`` (Eq. (2.72)); shape ``(n, d)``."""
        n, d = X.shape
        out = X.new_zeros((n, d))
        step = max(1, _CHUNK // max(1, n * d))
        for lo in range(0, S.shape[0], step):
            s, c = S[lo:lo + step], coef[lo:lo + step]
            out += torch.einsum("s,nsd->nd", c, self.per_dimension(s[None, :, :], X[:, None, :]))
        return out

    def prepare_sums(self, S: torch.Tensor, coef: torch.Tensor):
        """A callable ``X -> dimension_sums(X, S, coef)``; kernels may precompute here."""
        return functools.partial(self.dimension_sums, S=S, coef=coef)

    def gradient(self, X: torch.Tensor, S: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``G[n] = sum_i coef[n, i] * d k(S_i, x) / dx`` at ``x = X[n]``; shape ``(n, d)``.

        ``coef`` has shape ``(n, n_support)`` (one coefficient vector per sample). The
        default differentiates :meth:`matrix` with torch autograd.
        """
        with torch.enable_grad():
            x = X.detach().clone().requires_grad_(True)
            try:
                value = (self.matrix(x, S) * coef).sum()
                (grad,) = torch.autograd.grad(value, x)
            except (RuntimeError, TypeError) as exc:
                raise TypeError(
                    f"{type(self).__name__} has no gradient: torch autograd cannot differentiate its matrix() "
                    f"({exc}). Write matrix() with differentiable torch operations, or implement "
                    "gradient(X, S, coef) (Eq. (2.75) needs d k(s, x) / dx)."
                ) from None
        return grad

    def diagonal(self, X: torch.Tensor) -> torch.Tensor:
        """``k(x_n, x_n)`` for every row of ``X``; shape ``(n,)``."""
        if self.unit_diagonal:
            return X.new_ones(X.shape[0])
        if self.is_sum_decomposable:
            return self.per_dimension(X, X).sum(1)
        if self.uses_products:
            sq = (X * X).sum(1)
            return self.from_products(sq, sq, sq)
        return torch.stack([self.matrix(X[i:i + 1], X[i:i + 1])[0, 0] for i in range(X.shape[0])]) \
            if X.shape[0] else X.new_zeros(0)

    # Kernels depending on x only through <s, x> and ||x||^2 set this, so a root search
    # along a segment costs O(n_support) per evaluation instead of O(n_support * d).
    uses_products = False

    def from_products(self, dot, x_sq, s_sq):  # pragma: no cover - only for uses_products
        """The kernel value from ``<s, x>``, ``||x||^2`` and ``||s||^2``."""
        raise NotImplementedError

    def product_derivatives(self, dot, x_sq, s_sq):
        """``(dk/d<s, x>, dk/d||x||^2)`` of a ``uses_products`` kernel, element-wise.

        The gradient in ``x`` is then ``dk/d<s,x> * s + 2 dk/d||x||^2 * x``. The default
        differentiates :meth:`from_products` with torch autograd.
        """
        with torch.enable_grad():
            dot = dot.detach().clone().requires_grad_(True)
            x_sq = x_sq.detach().expand_as(dot).clone().requires_grad_(True)
            value = self.from_products(dot, x_sq, s_sq).sum()
            d_dot, d_sq = torch.autograd.grad(value, (dot, x_sq), allow_unused=True)
        zero = torch.zeros_like(dot)
        return (zero if d_dot is None else d_dot), (zero if d_sq is None else d_sq)


class PerDimensionKernel(Kernel):
    """Sum-decomposable kernel from an element-wise torch function ``term(x, y)``.

    Parameters
    ----------
    term : callable
        ``term(x, y) -> tensor``: element-wise, broadcasting torch function with
        ``k(x, y) = sum_d term(x_d, y_d)``. Use a module-level function to keep the
        kernel picklable.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> from sklrp.kernels import PerDimensionKernel
    >>> def neg_abs(x, y):
    ...     return -(x - y).abs()
    >>> k = PerDimensionKernel(neg_abs)
    >>> X = np.random.RandomState(0).rand(20, 3); y = (X[:, 0] > 0.5).astype(int)
    >>> SVC(kernel=k).fit(X, y).score(X, y) > 0.8
    True
    """

    def __init__(self, term):
        self.term = term

    def check_params(self):
        if not callable(self.term):
            raise ValueError(f"PerDimensionKernel needs a callable term, got {self.term!r}")

    def per_dimension(self, x, y):
        return self.term(x, y)


class LinearKernel(Kernel):
    """Linear kernel ``k(x, y) = <x, y>``: ``R_d = x_d w_d`` (Eq. (A.1)).

    Examples
    --------
    >>> from sklrp.kernels import LinearKernel
    >>> LinearKernel()([[1.0, 2.0]], [[3.0, 4.0]])
    array([[11.]])
    """

    uses_products = True

    def __init__(self):
        pass

    def per_dimension(self, x, y):
        return x * y

    def matrix(self, X, Y):
        return X @ Y.T

    def dimension_sums(self, X, S, coef):
        return X * (coef @ S)

    def gradient(self, X, S, coef):
        return coef @ S

    def from_products(self, dot, x_sq, s_sq):
        return dot

    def product_derivatives(self, dot, x_sq, s_sq):
        return torch.ones_like(dot), torch.zeros_like(dot)


class _SortedIntersectionSums:
    """``sum_i c_i min(s_i(d), x(d))`` by sorting the support vectors per dimension.

    With ``s`` sorted ascending and ``k`` of them ``<= x``:
    ``sum_i c_i min(s_i, x) = sum_{i<k} c_i s_i + x * sum_{i>=k} c_i`` (the trick of
    Maji et al., 2008): one binary search per feature instead of a loop over vectors.
    """

    def __init__(self, S, coef):
        values, order = torch.sort(S.T.contiguous(), dim=1)  # (d, n_sv)
        c = coef[order]  # (d, n_sv)
        zero = values.new_zeros((values.shape[0], 1))
        self.values = values
        self.cum_cs = torch.cat([zero, torch.cumsum(c * values, dim=1)], dim=1)
        self.cum_c = torch.cat([zero, torch.cumsum(c, dim=1)], dim=1)
        self.total_c = self.cum_c[:, -1:]

    def __call__(self, X):
        xt = X.T.contiguous()  # (d, n)
        k = torch.searchsorted(self.values, xt, right=True)
        below = torch.gather(self.cum_cs, 1, k)
        above = self.total_c - torch.gather(self.cum_c, 1, k)
        return (below + xt * above).T


class IntersectionKernel(Kernel):
    """Histogram intersection kernel ``k(x, y) = sum_d min(x_d, y_d)`` (Eq. (A.2)).

    Sum-decomposable: an SVM with this kernel is explained exactly by
    ``R_d = sum_i alpha_i y_i min(x_i(d), x(d))`` (Eq. (A.3)).

    Examples
    --------
    >>> from sklrp.kernels import IntersectionKernel
    >>> IntersectionKernel()([[1.0, 2.0]], [[3.0, 0.5]])
    array([[1.5]])
    """

    def __init__(self):
        pass

    def per_dimension(self, x, y):
        return torch.minimum(x, y)

    def prepare_sums(self, S, coef):
        return _SortedIntersectionSums(S, coef)

    def dimension_sums(self, X, S, coef):
        return _SortedIntersectionSums(S, coef)(X)


class AdditiveChi2Kernel(Kernel):
    """Additive chi2 kernel ``k(x, y) = -sum_d (x_d - y_d)^2 / (x_d + y_d)``, 0/0 := 0.

    The definition of ``sklearn.metrics.pairwise.additive_chi2_kernel``; for
    histograms (non-negative features). Sum-decomposable (Eq. (2.72)).

    Examples
    --------
    >>> from sklrp.kernels import AdditiveChi2Kernel
    >>> AdditiveChi2Kernel()([[1.0, 0.0]], [[3.0, 0.0]])
    array([[-1.]])
    """

    def __init__(self):
        pass

    def check_input(self, X, name="X"):
        _check_non_negative(X, name, type(self).__name__)

    def per_dimension(self, x, y):
        return -safe_divide((x - y) ** 2, x + y)


class Chi2Kernel(Kernel):
    """Exponential chi2 kernel ``k(x, y) = exp(-gamma sum_d (x_d - y_d)^2 / (x_d + y_d))`` (Eq. (A.6)).

    0/0 := 0. Not sum-decomposable; its gradient in ``y`` is
    ``gamma k(x, y) (4 x_d^2 / (x_d + y_d)^2 - 1)`` (Eq. (A.7)).

    Parameters
    ----------
    gamma : float, default=1.0
        Kernel scale (``sigma`` of Eq. (A.6)); must be positive.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.kernels import Chi2Kernel
    >>> np.round(Chi2Kernel(gamma=0.5)([[1.0, 0.0]], [[3.0, 0.0]]), 6)
    array([[0.606531]])
    """

    unit_diagonal = True

    def __init__(self, gamma=1.0):
        self.gamma = gamma

    def check_params(self):
        _check_positive(self.gamma, "gamma", type(self).__name__)

    def check_input(self, X, name="X"):
        _check_non_negative(X, name, type(self).__name__)

    def matrix(self, X, Y):
        return torch.exp(self.gamma * AdditiveChi2Kernel().matrix(X, Y))

    def gradient(self, X, S, coef):
        # Eq. (A.7): sum_i c_i k(s_i, x) gamma (4 s_i(d)^2 / (s_i(d) + x(d))^2 - 1)
        ck = coef * self.matrix(X, S)  # (n, n_sv)
        n, d = X.shape
        out = -ck.sum(dim=1, keepdim=True) * X.new_ones((1, d))
        step = max(1, _CHUNK // max(1, n * d))
        for lo in range(0, S.shape[0], step):
            s = S[lo:lo + step][None, :, :]
            ratio = safe_divide(4 * s * s, (s + X[:, None, :]) ** 2)
            out += torch.einsum("ns,nsd->nd", ck[:, lo:lo + step], ratio)
        return self.gamma * out


class RBFKernel(Kernel):
    """Gaussian RBF kernel ``k(x, y) = exp(-gamma ||x - y||^2)`` (Eq. (A.4), ``gamma = 1/sigma^2``).

    The same function as ``SVC(kernel="rbf", gamma=gamma)``; its gradient in ``y`` is
    ``2 gamma k(x, y) (x - y)`` (Eq. (A.5)).

    Parameters
    ----------
    gamma : float, default=1.0

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.kernels import RBFKernel
    >>> np.round(RBFKernel(gamma=0.5)([[0.0, 0.0]], [[1.0, 1.0]]), 6)
    array([[0.367879]])
    """

    uses_products = True
    unit_diagonal = True

    def __init__(self, gamma=1.0):
        self.gamma = gamma

    def check_params(self):
        _check_positive(self.gamma, "gamma", type(self).__name__)

    def from_products(self, dot, x_sq, s_sq):
        return torch.exp(-self.gamma * (x_sq - 2 * dot + s_sq).clamp(min=0))

    def product_derivatives(self, dot, x_sq, s_sq):
        k = self.from_products(dot, x_sq, s_sq)
        return 2 * self.gamma * k, -self.gamma * k

    def matrix(self, X, Y):
        return self.from_products(X @ Y.T, (X * X).sum(1, keepdim=True), (Y * Y).sum(1)[None, :])

    def gradient(self, X, S, coef):
        ck = coef * self.matrix(X, S)
        return 2 * self.gamma * (ck @ S - ck.sum(dim=1, keepdim=True) * X)


class PolynomialKernel(Kernel):
    """Polynomial kernel ``(gamma <x, y> + coef0)^degree`` as in ``SVC(kernel="poly")``.

    Parameters
    ----------
    gamma : float, default=1.0
        Non-negative, as ``SVC``'s.
    degree : int, default=3
        A non-negative integer.
    coef0 : float, default=0.0
        Finite.

    Examples
    --------
    >>> from sklrp.kernels import PolynomialKernel
    >>> PolynomialKernel(gamma=1.0, degree=2, coef0=1.0)([[1.0, 1.0]], [[1.0, 0.0]])
    array([[4.]])
    """

    uses_products = True

    def __init__(self, gamma=1.0, degree=3, coef0=0.0):
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0

    def check_params(self):
        owner = type(self).__name__
        _check_non_negative_number(self.gamma, "gamma", owner)
        degree = self.degree
        if (not isinstance(degree, numbers.Real) or isinstance(degree, bool) or not np.isfinite(degree)
                or degree < 0 or int(degree) != degree):
            raise ValueError(f"{owner}: degree must be a non-negative integer, got {degree!r}")
        _check_finite_number(self.coef0, "coef0", owner)

    def from_products(self, dot, x_sq, s_sq):
        return (self.gamma * dot + self.coef0) ** self.degree

    def product_derivatives(self, dot, x_sq, s_sq):
        if self.degree == 0:
            return torch.zeros_like(dot), torch.zeros_like(dot)
        base = self.gamma * dot + self.coef0
        return self.degree * self.gamma * base ** (self.degree - 1), torch.zeros_like(dot)

    def matrix(self, X, Y):
        return (self.gamma * (X @ Y.T) + self.coef0) ** self.degree

    def gradient(self, X, S, coef):
        if self.degree == 0:
            return torch.zeros_like(X)
        base = self.gamma * (X @ S.T) + self.coef0
        return (coef * self.degree * self.gamma * base ** (self.degree - 1)) @ S


class SigmoidKernel(Kernel):
    """Sigmoid kernel ``tanh(gamma <x, y> + coef0)`` as in ``SVC(kernel="sigmoid")``.

    Parameters
    ----------
    gamma : float, default=1.0
        Non-negative, as ``SVC``'s.
    coef0 : float, default=0.0
        Finite.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.kernels import SigmoidKernel
    >>> np.round(SigmoidKernel()([[1.0]], [[1.0]]), 6)
    array([[0.761594]])
    """

    uses_products = True

    def __init__(self, gamma=1.0, coef0=0.0):
        self.gamma = gamma
        self.coef0 = coef0

    def check_params(self):
        owner = type(self).__name__
        _check_non_negative_number(self.gamma, "gamma", owner)
        _check_finite_number(self.coef0, "coef0", owner)

    def from_products(self, dot, x_sq, s_sq):
        return torch.tanh(self.gamma * dot + self.coef0)

    def product_derivatives(self, dot, x_sq, s_sq):
        k = torch.tanh(self.gamma * dot + self.coef0)
        return self.gamma * (1 - k * k), torch.zeros_like(dot)

    def matrix(self, X, Y):
        return torch.tanh(self.gamma * (X @ Y.T) + self.coef0)

    def gradient(self, X, S, coef):
        k = self.matrix(X, S)
        return (coef * self.gamma * (1 - k * k)) @ S


def _check_positive(value, name, owner):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive finite number, got {value!r}")


def _check_non_negative_number(value, name, owner):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be a non-negative finite number, got {value!r}")


def _check_finite_number(value, name, owner):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")


def _check_non_negative(X, name, owner):
    # rounding-level negatives (e.g. -1e-17 from a MinMaxScaler replayed in another order of
    # operations) are accepted: they are zeros up to the arithmetic that produced them
    if isinstance(X, torch.Tensor):
        if X.numel() == 0:
            return
        low, scale = float(X.min()), float(X.abs().max())
    else:
        values = np.asarray(X)
        if values.size == 0:
            return
        low, scale = float(values.min()), float(np.abs(values).max())
    if low < -1e-12 * max(1.0, scale):
        raise ValueError(f"{owner} is defined for non-negative features (histograms); {name} has "
                         f"negative values (min {low:.3g}). Scale features to be >= 0, e.g. "
                         "with MinMaxScaler.")


# -- plain functions for SVC(kernel=...) -------------------------------------------------------

def intersection_kernel(X, Y=None):
    """Histogram intersection kernel ``sum_d min(x_d, y_d)`` (Eq. (A.2)), for ``SVC(kernel=...)``.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features)
    Y : array-like of shape (n_samples_Y, n_features), default=None

    Returns
    -------
    K : ndarray of shape (n_samples_X, n_samples_Y)

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> import sklrp
    >>> sklrp.kernels.intersection_kernel([[1.0, 2.0]], [[3.0, 0.5]])
    array([[1.5]])
    >>> svc = SVC(kernel=sklrp.kernels.intersection_kernel)
    """
    return IntersectionKernel()(X, Y)


def additive_chi2_kernel(X, Y=None):
    """Additive chi2 kernel ``-sum_d (x_d - y_d)^2 / (x_d + y_d)`` (0/0 := 0), for ``SVC(kernel=...)``.

    Same definition as ``sklearn.metrics.pairwise.additive_chi2_kernel``.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features), non-negative
    Y : array-like of shape (n_samples_Y, n_features), default=None

    Returns
    -------
    K : ndarray of shape (n_samples_X, n_samples_Y)

    Examples
    --------
    >>> import sklrp
    >>> sklrp.kernels.additive_chi2_kernel([[1.0, 0.0]], [[3.0, 0.0]])
    array([[-1.]])
    """
    return AdditiveChi2Kernel()(X, Y)


def chi2_kernel(X, Y=None, gamma=1.0):
    """Exponential chi2 kernel ``exp(-gamma sum_d (x_d - y_d)^2 / (x_d + y_d))`` (Eq. (A.6)).

    For ``SVC(kernel=...)``; to set ``gamma`` use ``functools.partial(chi2_kernel, gamma=g)``
    or the kernel object ``Chi2Kernel(gamma=g)``.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_features), non-negative
    Y : array-like of shape (n_samples_Y, n_features), default=None
    gamma : float, default=1.0

    Returns
    -------
    K : ndarray of shape (n_samples_X, n_samples_Y)

    Examples
    --------
    >>> import functools
    >>> from sklearn.svm import SVC
    >>> import sklrp
    >>> svc = SVC(kernel=functools.partial(sklrp.kernels.chi2_kernel, gamma=0.5))
    """
    return Chi2Kernel(gamma=gamma)(X, Y)


def _sklearn_pairwise():
    from sklearn.metrics import pairwise

    return {
        pairwise.linear_kernel: lambda kw: LinearKernel(),
        pairwise.additive_chi2_kernel: lambda kw: AdditiveChi2Kernel(),
        pairwise.chi2_kernel: lambda kw: Chi2Kernel(gamma=kw.get("gamma", 1.0)),
        pairwise.rbf_kernel: lambda kw: RBFKernel(gamma=kw["gamma"]) if kw.get("gamma") is not None else None,
    }


def as_kernel(kernel):
    """The sklrp :class:`Kernel` object behind an ``SVC(kernel=...)`` callable, or None.

    Recognises sklrp kernel objects, :func:`intersection_kernel`,
    :func:`additive_chi2_kernel`, :func:`chi2_kernel` (also wrapped in
    ``functools.partial`` with keyword arguments) and the matching functions of
    ``sklearn.metrics.pairwise``. String kernels are resolved by ``sklrp.svm``, which
    knows the fitted SVC's ``gamma``/``degree``/``coef0``.

    Parameters
    ----------
    kernel : callable

    Returns
    -------
    Kernel or None
        None when the callable is unknown (it has no known decomposition or gradient).

    Examples
    --------
    >>> import functools
    >>> import sklrp
    >>> sklrp.kernels.as_kernel(functools.partial(sklrp.kernels.chi2_kernel, gamma=0.5))
    Chi2Kernel(gamma=0.5)
    """
    if isinstance(kernel, Kernel):
        return kernel
    kwargs = {}
    func = kernel
    if isinstance(kernel, functools.partial):
        if kernel.args:
            return None  # positional binding would shift X/Y: not a kernel we can read
        func, kwargs = kernel.func, dict(kernel.keywords)
    ours = {
        intersection_kernel: lambda kw: IntersectionKernel(),
        additive_chi2_kernel: lambda kw: AdditiveChi2Kernel(),
        chi2_kernel: lambda kw: Chi2Kernel(gamma=kw.get("gamma", 1.0)),
    }
    for table in (ours, _sklearn_pairwise()):
        if func in table:
            extra = set(kwargs) - {"gamma"}
            if extra:
                return None
            return table[func](kwargs)
    return None

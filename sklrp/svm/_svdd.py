"""Support Vector Data Description (SVDD) and its LRP head (thesis Eqs. (A.10)-(A.13)).

SVDD (Tax and Duin, 2004) fits the smallest sphere in kernel feature space that holds the
training data, with slack: the dual is

    max_alpha  sum_i alpha_i k(x_i, x_i) - sum_ij alpha_i alpha_j k(x_i, x_j)
    s.t.       sum_i alpha_i = 1,  0 <= alpha_i <= C,

solved here by sequential minimal optimisation (SMO with the second-order working-set
selection of Fan, Chen and Lin, 2005). The squared kernel distance of ``x`` to the centre is
``a(x) = k(x, x) - 2 sum_i alpha_i k(x_i, x) + sum_ij alpha_i alpha_j k(x_i, x_j)``
(Eq. (A.11)), the squared radius ``r^2`` is ``a`` of any support vector strictly inside the
box, and the decision function is ``r^2 - a(x)`` (Eq. (A.10); positive = inlier).
"""

from __future__ import annotations

import numbers
import warnings
from collections import OrderedDict

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import kernels as _kernels
from ..propagators import Head, HeadRelevance, register
from ._head import Model, SVMHead
from ._taylor import caller_outside_sklrp

_KERNELS = {
    "linear": _kernels.LinearKernel,
    "intersection": _kernels.IntersectionKernel,
    "additive_chi2": _kernels.AdditiveChi2Kernel,
}
_CHUNK = 1 << 22


class SVDD(OutlierMixin, BaseEstimator):
    """Support Vector Data Description: the smallest enclosing sphere in kernel space (Eqs. (A.10)-(A.12)).

    ``decision_function(x) = r^2 - a(x)`` with ``a(x)`` the squared kernel distance of ``x``
    to the sphere's centre (Eq. (A.11)) and ``r`` its radius; ``predict`` is +1 (inlier,
    ``decision_function >= 0``) or -1 (outlier). ``sklrp.LRPTransformer(SVDD(...))`` explains
    the outlierness ``a(x) - r^2`` (Eq. (A.12)): exactly by Eq. (A.13) for sum-decomposable
    kernels, by a Taylor decomposition at a root point on the sphere (see :mod:`sklrp.svm`)
    for the RBF and exponential chi2 kernels.

    Parameters
    ----------
    kernel : {"rbf", "linear", "intersection", "additive_chi2"} or callable, default="rbf"
        The kernel: a name, a :mod:`sklrp.kernels` function (``intersection_kernel``,
        ``additive_chi2_kernel``, ``chi2_kernel``) or :class:`sklrp.kernels.Kernel` object.
        ``"intersection"`` is the histogram intersection kernel (Eq. (A.2)); ``"additive_chi2"``
        and the chi2 kernels need non-negative features.
    gamma : {"scale", "auto"} or float, default="scale"
        RBF width ``exp(-gamma ||x - y||^2)``: ``"scale"`` is ``1 / (n_features * X.var())``,
        ``"auto"`` ``1 / n_features``, as in ``sklearn.svm.OneClassSVM``. Other kernels ignore it.
    nu : float in (0, 1], default=None
        Upper bound on the fraction of training samples outside the sphere (and lower bound on
        the fraction of support vectors); sets ``C = 1 / (nu * n_samples)``. ``None`` with
        ``C=None`` means ``nu=0.1``. Give ``nu`` or ``C``, not both.
    C : float, default=None
        Box constraint ``alpha_i <= C`` of the dual; at least ``1 / n_samples`` (else no
        feasible solution); ``C >= 1`` is the hard sphere that holds every sample.
    tol : float, default=1e-6
        Stopping tolerance of SMO on the KKT violation ``max_i G_i - min_j G_j``, relative to
        ``max(1, max_i k(x_i, x_i))``.
    max_iter : int, default=None
        Most SMO iterations; None means ``max(10000, 100 * n_samples)``. A
        ``ConvergenceWarning`` is issued when it is reached.
    cache_size : float, default=200
        Memory (MB) for kernel columns: SMO computes a column of the kernel matrix when it first
        needs it and keeps the most recent ones within this budget.

    Attributes
    ----------
    support_ : ndarray of shape (n_SV,)
        Indices of the support vectors (``alpha_i > 0``).
    support_vectors_ : ndarray of shape (n_SV, n_features)
    dual_coef_ : ndarray of shape (1, n_SV)
        ``alpha_i`` of the support vectors (they sum to 1).
    intercept_ : ndarray of shape (1,)
        ``r^2 - sum_ij alpha_i alpha_j k(x_i, x_j)``, so that
        ``decision_function(x) = 2 sum_i alpha_i k(x_i, x) - k(x, x) + intercept_``.
    radius_ : float
        The radius ``r`` of the sphere in kernel space.
    offset_ : float
        ``-radius_ ** 2``: ``decision_function = score_samples - offset_``.
    kernel_ : sklrp.kernels.Kernel
        The kernel used (``gamma`` resolved).
    n_support_ : ndarray of shape (1,)
    n_iter_ : int
        SMO iterations run.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when X has feature names that are all strings.

    Examples
    --------
    >>> import numpy as np
    >>> import sklrp
    >>> from sklrp.svm import SVDD
    >>> X = np.random.RandomState(0).rand(200, 3)
    >>> svdd = SVDD(kernel="intersection", nu=0.1).fit(X)
    >>> bool(np.isclose(svdd.dual_coef_.sum(), 1.0))
    True
    >>> E = sklrp.LRPTransformer(svdd).fit(X).explain(X[:4])
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance, -svdd.decision_function(X[:4])))
    True
    """

    _parameter_constraints: dict = {
        "kernel": [StrOptions({"rbf", "linear", "intersection", "additive_chi2"}), callable],
        "gamma": [StrOptions({"scale", "auto"}), Interval(numbers.Real, 0, None, closed="neither")],
        "nu": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "C": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "tol": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "cache_size": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, *, kernel="rbf", gamma="scale", nu=None, C=None, tol=1e-6, max_iter=None, cache_size=200):
        self.kernel = kernel
        self.gamma = gamma
        self.nu = nu
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.cache_size = cache_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = isinstance(self.kernel, str) and self.kernel == "additive_chi2"
        return tags

    def _resolve_kernel(self, X):
        if isinstance(self.kernel, str):
            if self.kernel != "rbf":
                return _KERNELS[self.kernel]()
            gamma = self.gamma
            if isinstance(gamma, str) and gamma == "scale":
                var = float(X.var())
                gamma = 1.0 / (X.shape[1] * var) if var != 0 else 1.0
            elif isinstance(gamma, str):
                gamma = 1.0 / X.shape[1]
            return _kernels.RBFKernel(gamma=float(gamma))
        kernel = _kernels.as_kernel(self.kernel)
        if kernel is None:
            name = getattr(self.kernel, "__name__", repr(self.kernel))
            raise ValueError(
                f"SVDD needs a kernel sklrp can evaluate and explain; got {name}. Use 'rbf', 'linear', "
                "'intersection', 'additive_chi2', a sklrp.kernels function or a sklrp.kernels.Kernel object."
            )
        kernel.check_params()
        return kernel

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the sphere to the training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : SVDD
        """
        X = validate_data(self, X, dtype=np.float64)
        n = X.shape[0]
        if self.nu is not None and self.C is not None:
            raise ValueError(f"give nu or C, not both (got nu={self.nu!r}, C={self.C!r})")
        C = 1.0 / ((0.1 if self.nu is None else self.nu) * n) if self.C is None else float(self.C)
        if C * n < 1.0 - 1e-12:
            raise ValueError(
                f"C={C:g} is below 1 / n_samples = {1.0 / n:g}: the weights alpha_i <= C cannot sum to 1. "
                "Use C >= 1 / n_samples, or nu."
            )
        kernel = self._resolve_kernel(X)
        if self.__sklearn_tags__().input_tags.positive_only and X.size and X.min() < 0:
            raise ValueError(f"Negative values in data passed to SVDD(kernel={self.kernel!r}): the additive chi2 "
                             "kernel is defined for non-negative features (histograms). Scale features to be >= 0, "
                             "e.g. with MinMaxScaler.")
        kernel.check_input(X, "X")
        Xt = torch.from_numpy(np.require(X, requirements="W"))
        with torch.no_grad():
            diag = kernel.diagonal(Xt).numpy()
            columns = _Columns(kernel, Xt, self.cache_size)
            max_iter = max(10000, 100 * n) if self.max_iter is None else self.max_iter
            alpha, grad, n_iter = _smo(columns, diag, min(C, 1.0), self.tol * max(1.0, float(np.abs(diag).max())),
                                       max_iter)
        if n_iter >= max_iter:
            warnings.warn(f"SVDD: SMO stopped after max_iter={max_iter} iterations before reaching tol={self.tol:g}; "
                          "raise max_iter or tol.", ConvergenceWarning, stacklevel=caller_outside_sklrp())
        # G_i = 2 (K alpha)_i - k(x_i, x_i) = rho on support vectors strictly inside the box (KKT)
        C_box = min(C, 1.0)
        free = (alpha > 1e-12 * C_box) & (alpha < C_box * (1 - 1e-12))
        if free.any():
            rho = float(grad[free].mean())
        else:  # rho lies between the gradients at the two bounds
            upper = grad[alpha >= C_box * (1 - 1e-12)]
            lower = grad[alpha <= 1e-12 * C_box]
            hi = float(lower.min()) if lower.size else float(upper.max())
            lo = float(upper.max()) if upper.size else hi
            rho = 0.5 * (lo + hi)
        center_sq = float(alpha @ (grad + diag)) / 2  # sum_ij alpha_i alpha_j k(x_i, x_j)
        r2 = max(center_sq - rho, 0.0)
        self.kernel_ = kernel
        self.support_ = np.flatnonzero(alpha > 0)
        self.support_vectors_ = X[self.support_]
        self.dual_coef_ = alpha[self.support_][None, :]
        self.n_support_ = np.array([self.support_.size])
        self.intercept_ = np.array([r2 - center_sq])
        self.radius_ = float(np.sqrt(r2))
        self.offset_ = -r2
        self.n_iter_ = int(n_iter)
        return self

    def _kernel_terms(self, X):
        """``(sum_i alpha_i k(x_i, x), k(x, x))`` for validated X."""
        Xt = torch.from_numpy(np.require(X, requirements="W"))
        sv = torch.from_numpy(np.require(self.support_vectors_, requirements="W"))
        alpha = torch.from_numpy(self.dual_coef_[0])
        with torch.no_grad():
            step = max(1, _CHUNK // max(1, sv.shape[0]))
            expansion = torch.cat([self.kernel_.matrix(Xt[i:i + step], sv) @ alpha
                                   for i in range(0, X.shape[0], step)]) if X.shape[0] else Xt.new_zeros(0)
            return expansion.numpy(), self.kernel_.diagonal(Xt).numpy()

    def _validated(self, X):
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        self.kernel_.check_input(X, "X")
        return X

    def decision_function(self, X):
        """``r^2 - a(x)`` (Eq. (A.10)): positive inside the sphere.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def score_samples(self, X):
        """``-a(x)``, the negated squared kernel distance to the centre (Eq. (A.11)); higher is more normal.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        expansion, diag = self._kernel_terms(self._validated(X))
        return 2 * expansion - diag + (self.intercept_[0] + self.offset_)  # -sum_ij alpha_i alpha_j k(x_i, x_j)

    def predict(self, X):
        """+1 for inliers (``decision_function >= 0``), -1 for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)


class _Columns:
    """Columns of the kernel matrix, computed when SMO first asks for them; the most recent kept in
    ``cache_size`` MB (SMO touches a small fraction of the columns)."""

    def __init__(self, kernel, X, cache_size):
        self.kernel, self.X = kernel, X
        self.cache = OrderedDict()
        self.capacity = max(2, int(cache_size * 2 ** 20 / 8 / max(1, X.shape[0])))

    def product(self, idx, weights):
        """``K[:, idx] @ weights`` without caching the columns."""
        out = np.zeros(self.X.shape[0])
        step = max(1, _CHUNK // max(1, self.X.shape[0]))
        for lo in range(0, len(idx), step):
            block = self.kernel.matrix(self.X, self.X[torch.as_tensor(idx[lo:lo + step])]).numpy()
            out += block @ weights[lo:lo + step]
        return out

    def __call__(self, i):
        col = self.cache.get(i)
        if col is None:
            col = self.kernel.matrix(self.X, self.X[i:i + 1])[:, 0].numpy()
            self.cache[i] = col
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(i)
        return col


def _smo(column, diag, C, tol, max_iter):
    """Minimise ``alpha' K alpha - diag' alpha`` s.t. ``sum alpha = 1``, ``0 <= alpha <= C`` by SMO.

    Pairs are chosen by the second-order rule of Fan, Chen and Lin (2005, WSS 2): ``i`` the most
    violating index that may grow, ``j`` the one maximising the decrease of the objective.
    Returns ``alpha``, the gradient ``2 K alpha - diag`` and the number of iterations.
    """
    n = diag.shape[0]
    alpha = np.zeros(n)
    full = int(np.floor(1.0 / C + 1e-12))
    alpha[:min(full, n)] = C
    if full < n:
        alpha[full] = 1.0 - full * C
    nonzero = np.flatnonzero(alpha)
    grad = 2 * column.product(nonzero, alpha[nonzero]) - diag
    tau = 1e-12
    it = 0
    while it < max_iter:
        up = alpha < C
        low = alpha > 0
        g_up = np.where(up, grad, np.inf)
        i = int(np.argmin(g_up))
        g_low = np.where(low, grad, -np.inf)
        if not np.isfinite(g_up[i]) or g_low.max() - g_up[i] <= tol:
            break
        k_i = column(i)
        b = grad - grad[i]  # > 0 where moving weight from t to i decreases the objective
        a = 2 * (diag[i] + diag - 2 * k_i)
        a = np.where(a > tau, a, tau)
        gain = np.where(low & (b > 0), b * b / a, -np.inf)
        j = int(np.argmax(gain))
        delta = min(b[j] / a[j], C - alpha[i], alpha[j])
        alpha[i] += delta
        alpha[j] -= delta
        if alpha[j] < 1e-15 * C:
            alpha[j] = 0.0
        grad += 2 * delta * (k_i - column(j))
        it += 1
    return alpha, grad, it


def _is_svdd(step):
    return isinstance(step, SVDD)


@register(_is_svdd, name="SVDD (sklrp.svm)")
class SVDDHead(SVMHead):
    """LRP for :class:`SVDD`: its outlierness ``a(x) - r^2`` (Eq. (A.12)).

    Sum-decomposable kernels (linear, histogram intersection, additive chi2): Eq. (A.13),
    ``R_d = k_d(x_d, x_d) - 2 sum_i alpha_i k_d(x_i(d), x_d) + sum_ij alpha_i alpha_j k_d(x_i(d), x_j(d))``
    and ``R_bias = -r^2``; exact. Kernels with constant ``k(x, x)`` (RBF, exponential chi2): the
    outlierness is the kernel expansion ``-2 sum_i alpha_i k(x_i, x) + const``, decomposed at a
    root point on the sphere (first-order or exact path integral, see :mod:`sklrp.svm`).

    The single explained output has index 0 (``target="predicted"`` or ``0``).

    Parameters
    ----------
    step : SVDD
        A fitted SVDD.

    Examples
    --------
    >>> import numpy as np
    >>> import sklrp
    >>> from sklrp.svm import SVDD
    >>> X = np.random.RandomState(0).randn(150, 2)
    >>> E = sklrp.LRPTransformer(SVDD(kernel="linear")).fit(X).explain(X[:2])
    >>> E.relevance.shape, E.target.tolist()
    ((2, 2), [0, 0])
    """

    def __init__(self, step):
        Head.__init__(self, step)
        check_is_fitted(step, "dual_coef_")
        kernel = step.kernel_
        if not kernel.is_sum_decomposable and not kernel.unit_diagonal:
            raise TypeError(
                f"sklrp explains SVDD with a sum-decomposable kernel (Eq. (A.13)) or one with constant k(x, x) "
                f"(RBF, exponential chi2; Taylor decomposition), got {kernel!r}: its k(x, x) term has no "
                "decomposition here."
            )
        self._train = None
        self._reference = None
        self._model_np = None
        self._cache = {}

    def build_model(self):
        st = self.step
        alpha = np.asarray(st.dual_coef_[0], dtype=float)
        sv = np.asarray(st.support_vectors_, dtype=float)
        r2 = st.radius_ ** 2
        center_sq = r2 - float(st.intercept_[0])
        kernel = st.kernel_
        blocks = [(np.arange(sv.shape[0]), -2 * alpha)]
        if kernel.is_sum_decomposable:
            return Model(kernel, sv, -2 * alpha[None], np.array([center_sq - r2]), blocks, np.ones((1, 1)),
                         diagonal=True)
        # k(x, x) = 1: the outlierness is one kernel expansion
        return Model(kernel, sv, -2 * alpha[None], np.array([1.0 + center_sq - r2]), blocks, np.ones((1, 1)))

    @property
    def classes(self):
        return None

    def predicted(self, scores):
        return np.zeros(scores.shape[0], dtype=int)

    def target_weights(self, labels, n_outputs):
        labels = np.asarray(labels)
        bad = [v for v in labels.tolist() if isinstance(v, bool) or v != 0]
        if bad:
            raise ValueError(
                f"SVDD has one explained output, its outlierness a(x) - r^2 (Eq. (A.12)), with index 0; "
                f"got target {bad[0]!r}. Use target='predicted' or 0."
            )
        return np.ones((labels.shape[0], 1))

    def relevance(self, x, weights, scores, config):
        model = self._model()
        if not model.kernel.is_sum_decomposable:
            return self._taylor(x, weights, scores, config)
        t = self._tensors(config)
        if "center" not in t:
            sv, alpha = t["sv"], -0.5 * t["coef"][0]
            t["center"] = alpha @ model.kernel.prepare_sums(sv, alpha)(sv)  # sum_ij a_i a_j k_d(x_i(d), x_j(d))
        # Eq. (A.13): k_d(x_d, x_d) - 2 sum_i alpha_i k_d(x_i(d), x_d) + sum_ij alpha_i alpha_j k_d(x_i(d), x_j(d))
        rel = model.kernel.per_dimension(x, x) + t["sums"][0](x) + t["center"]
        w = weights[:, 0]
        r2 = torch.as_tensor(self.step.radius_ ** 2, dtype=x.dtype, device=x.device)
        return HeadRelevance(w[:, None] * rel, -w * r2)

    def bias_weights(self, x, weights, config):
        return Head.bias_weights(self, x, weights, config)

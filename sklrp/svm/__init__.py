"""LRP for kernel machines: ``SVC``, ``NuSVC``, ``OneClassSVM``, ``SVR`` and :class:`SVDD` (Sections 2.3.1, A.1).

The decision function of a (pairwise) kernel SVM is ``f(x) = sum_i alpha_i y_i k(x_i, x) + b``
(Eq. (2.66); ``OneClassSVM``: ``sum_i alpha_i k(x_i, x) - rho``, Eq. (A.8)).

* **Sum-decomposable kernels** (linear, histogram intersection, additive chi2, any
  :class:`sklrp.kernels.Kernel` with ``per_dimension``): the exact decomposition
  ``R_d = sum_i alpha_i y_i k_d(x_i(d), x(d))``, ``R_b = b`` (Eqs. (2.70)-(2.72), (A.1),
  (A.3), (A.9)); ``relevance.sum() + bias_relevance == f(x)`` to rounding. The bias
  modes of ``LRPTransformer`` (Eqs. (2.73)-(2.74)) apply; ``bias="weighted"`` needs the
  linear kernel (``w = sum_i alpha_i y_i x_i``). The ``taylor*`` parameters do not apply.
* **Differentiable kernels** (RBF, exponential chi2, polynomial, sigmoid, kernels with
  a gradient): a Taylor decomposition at a root point ``x~`` on the decision boundary.
  ``LRPTransformer(taylor="first_order")`` is the thesis' ``R_d = (x - x~)_d df/dx_d(x~)``
  (Eqs. (2.75)-(2.76), (A.5), (A.7)); its remainder (Eq. (2.75)'s ``r``) is what the
  relevance leaves out. ``taylor="exact"`` (the default) integrates the gradient along the
  straight path from ``x~`` to ``x``, the integral form of the Taylor remainder::

      R_d = (x_d - x~_d) * int_0^1 df/dx_d(x~ + t (x - x~)) dt,   sum_d R_d = f(x) - f(x~),

  by Gauss-Legendre quadrature whose node count doubles per sample (8, 16, ..., at most
  ``taylor_max_nodes``) until ``|f(x) - f(x~) - sum_d R_d| <= taylor_tol * |f(x)|``. This
  goes beyond the thesis, which stops at the first order. For product kernels (RBF,
  polynomial, sigmoid) the integral is taken on ``<s, x>`` and ``||x||^2`` along the path,
  so it costs about one gradient evaluation whatever the node count.

  Where the expansion point lies is ``taylor_reference``: ``"root"``, a root point as
  below; ``"mean"``, the training mean (beyond the thesis: the integrated gradient from
  the average sample, ``f(x_bar)`` as the bias part); ``"auto"`` (the default), the mean for
  the exact form and a root point for the first order. The exact form expands at the mean by
  default because it measured better there (``benchmarks/bench_svm.py --vs-shap``: features
  ranked at least as well as KernelSHAP on 2-3 of 3 data sets in every run, 1 of 3 at root
  points, and no root search).

  In both forms ``bias_relevance`` holds ``f(x~)`` (``|f(x~)| <= root_tol`` at a root: the
  score of the expansion point) and ``Explanation.residual`` (``HeadRelevance.remainder``)
  holds ``f(x) - f(x~) - sum_d R_d``: the Taylor remainder of the first order, the
  quadrature error of the exact form. A :class:`TaylorRemainderWarning` is issued when the
  median ``|remainder| / |f(x)|`` of a batch exceeds :data:`REMAINDER_WARNING_FRACTION`
  (10 %).

  Root points are searched as in Section 2.3.1: the ``n_root_candidates`` reference
  samples nearest to ``x`` whose explained score has the opposite sign span segments
  ``x -> x_s``; a bracketed interval search (regula falsi with the Illinois modification,
  safeguarded by bisection) finds ``x~`` on each segment with ``|f(x~)| <= root_tol``; the
  root closest to ``x`` wins. ``Explanation.root_point`` holds the expansion point (in the
  SVM's input space). When no root is found (no reference sample of the opposite sign, or
  no convergence), the decomposition is taken relative to a **baseline** instead: the point
  of smallest ``|f|`` on the segment from ``x`` to the reference sample scored least in
  favour of the explained output. Its score ``f(baseline)``, which is not small, stays in
  ``bias_relevance``; ``extras["root_found"]`` is False and a :class:`RootPointWarning`
  says how many samples were affected.

The reference set is the data passed to ``LRPTransformer.fit`` (pushed through the
preceding pipeline steps), at most ``MAX_REFERENCE`` samples of it (evenly spaced; fewer,
down to 200, for models with more than ~16k support vectors, to bound memory). Taylor
decompositions always run in float64 (on the configured device), so ``root_tol`` and
``taylor_tol`` mean the same with ``dtype="float32"``. Inputs whose squared distances to
the reference overflow float64 are refused with an error naming the scale.

Targets
-------
Binary models have one score column (positive for ``classes_[1]``) and the default
target handling (explaining ``classes_[0]`` explains ``-f(x)``). Multi-class models
are one-vs-one: their score columns are the pairwise decisions ``f_ab`` (``a < b`` in
``classes_`` order, positive = evidence for ``a``) as returned by
``decision_function`` with ``decision_function_shape="ovo"``. Explaining class ``k``
(whatever ``decision_function_shape``) explains the **signed sum of the pairwise
decisions involving k**: ``g_k(x) = sum_{j != k} s_kj f_kj(x)`` with signs such that
positive = evidence for ``k``; it is one kernel expansion, so the root search, the
first-order and the exact decomposition apply to ``g_k`` itself. (``decision_function_shape="ovr"``
values are votes plus squashed confidences, not a smooth function; ``g_k`` is its
confidence part before squashing.) To explain one pairwise classifier, pass
``target=Pair(a, b)``: the decision between ``a`` and ``b``, positive = evidence for ``a``.
``OneClassSVM``: target ``1`` (default for inliers, ``predict`` = 1) explains the
inlier score ``f(x)``, target ``-1`` explains ``-f(x)``. ``SVR`` / ``NuSVR`` (output
index 0) are explained exactly for sum-decomposable kernels; a regressor has no decision
boundary to expand at, so other kernels are refused. :class:`SVDD` explains its
outlierness ``a(x) - r^2`` (Eqs. (A.12)-(A.13)), see there.
"""

from ._head import MAX_REFERENCE, Pair, SVMHead
from ._svdd import SVDD, SVDDHead
from ._taylor import (
    MAX_NODES_LIMIT,
    REMAINDER_WARNING_FRACTION,
    TAYLOR_MODES,
    RootPointWarning,
    TaylorRemainderWarning,
)

__all__ = [
    "Pair",
    "SVMHead",
    "SVDD",
    "SVDDHead",
    "RootPointWarning",
    "TaylorRemainderWarning",
    "MAX_REFERENCE",
    "MAX_NODES_LIMIT",
    "REMAINDER_WARNING_FRACTION",
    "TAYLOR_MODES",
]

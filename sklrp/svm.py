"""Propagators for kernel SVMs: ``SVC``, ``NuSVC``, ``OneClassSVM`` (and ``SVR``), thesis Sections 2.3.1, A.1.

The decision function of a (pairwise) kernel SVM is ``f(x) = sum_i alpha_i y_i k(x_i, x) + b``
(Eq. (2.66); ``OneClassSVM``: ``sum_i alpha_i k(x_i, x) - rho``, Eq. (A.8)).

* **Sum-decomposable kernels** (linear, histogram intersection, additive chi2, any
  :class:`sklrp.kernels.Kernel` with ``per_dimension``): the exact decomposition
  ``R_d = sum_i alpha_i y_i k_d(x_i(d), x(d))``, ``R_b = b`` (Eqs. (2.70)-(2.72), (A.1),
  (A.3), (A.9)); ``relevance.sum() + bias_relevance == f(x)`` to rounding. The bias
  modes of ``LRPTransformer`` (Eqs. (2.73)-(2.74)) apply; ``bias="weighted"`` needs the
  linear kernel (``w = sum_i alpha_i y_i x_i``).
* **Differentiable kernels** (RBF, exponential chi2, polynomial, sigmoid, kernels with
  a gradient): first-order Taylor decomposition at a root point ``x~`` on the decision
  boundary, ``R_d = (x - x~)_d * df/dx_d(x~)`` (Eqs. (2.75)-(2.76), (A.5), (A.7)).
  Root points are searched as in Section 2.3.1: the ``n_root_candidates`` reference
  samples nearest to ``x`` whose explained score has the opposite sign (i.e. that are
  predicted as the opposing class) span segments ``x -> x_s``; a bracketed interval
  search (regula falsi with the Illinois modification, safeguarded by bisection)
  finds ``x~`` on each segment with ``|f(x~)| <= root_tol``; the root closest to ``x``
  wins. ``Explanation.root_point`` holds ``x~`` (in the SVM's input space),
  ``Explanation.residual = f(x) - sum_d R_d`` (``f(x~)`` plus the Taylor remainder),
  ``extras["root_found"]`` flags samples without a root (no opposite-class candidate,
  or no convergence): their relevance is 0, their residual ``f(x)``, and a
  :class:`RootPointWarning` is issued.

The reference set is the data passed to ``LRPTransformer.fit`` (pushed through the
preceding pipeline steps), at most ``MAX_REFERENCE`` samples of it (evenly spaced; fewer,
down to 200, for models with more than ~16k support vectors, to bound memory). The root
search always runs in float64 (on the configured device), so ``root_tol`` means the
same with ``dtype="float32"``.

Targets
-------
Binary models have one score column (positive for ``classes_[1]``) and the default
target handling (explaining ``classes_[0]`` explains ``-f(x)``). Multi-class models
are one-vs-one: their score columns are the pairwise decisions ``f_ab`` (``a < b`` in
``classes_`` order, positive = evidence for ``a``) as returned by
``decision_function`` with ``decision_function_shape="ovo"``. Explaining class ``k``
(whatever ``decision_function_shape``) explains the **signed sum of the pairwise
decisions involving k**: ``g_k(x) = sum_{j != k} s_kj f_kj(x)`` with signs such that
positive = evidence for ``k``. (``decision_function_shape="ovr"`` values are votes
plus squashed confidences, not a smooth function; ``g_k`` is its confidence part
before squashing.) To explain one pairwise classifier, pass ``target=Pair(a, b)``:
the decision between ``a`` and ``b``, positive = evidence for ``a``.
``OneClassSVM``: target ``1`` (default for inliers, ``predict`` = 1) explains the
inlier score ``f(x)``, target ``-1`` explains ``-f(x)``. ``SVR`` / ``NuSVR`` (output
index 0) are explained exactly for sum-decomposable kernels; a regressor has no decision
boundary to expand at, so other kernels are refused.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM
from sklearn.utils.validation import check_is_fitted

from . import kernels as _kernels
from .propagators import Head, HeadRelevance, register

__all__ = ["Pair", "SVMHead", "RootPointWarning", "MAX_REFERENCE"]

#: Largest reference set kept for root-point candidates (memory: n_ref x n_support).
MAX_REFERENCE = 2000
# Largest (samples x candidates x support vectors) block of the root search.
_CHUNK = 1 << 22
_MAX_ITER = 200


class RootPointWarning(UserWarning):
    """Some samples got no root point for their Taylor decomposition (Eq. (2.76))."""


@dataclass(frozen=True)
class Pair:
    """Target for one pairwise (one-vs-one) classifier: ``a`` against ``b``.

    The explained output is the pairwise decision, positive = evidence for ``a``.

    Parameters
    ----------
    a, b : class labels
        Two different classes of the model.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> import sklrp
    >>> from sklrp.svm import Pair
    >>> X = np.random.RandomState(0).rand(60, 4); y = np.arange(60) % 3
    >>> lrp = sklrp.LRPTransformer(SVC(kernel=sklrp.kernels.intersection_kernel)).fit(X, y)
    >>> E = lrp.explain(X[:2], target=Pair(2, 0))
    >>> ovo = SVC(kernel=sklrp.kernels.intersection_kernel, decision_function_shape="ovo").fit(X, y)
    >>> bool(np.allclose(E.output, -ovo.decision_function(X[:2])[:, 1]))
    True
    """

    a: object
    b: object


def _check_param(value, name, kind):
    if kind == "int":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
        need = "a positive integer"
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) and value > 0
        need = "a positive finite number"
    if not ok:
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return value


@dataclass
class _Model:
    """The SVM as arrays: score column p is ``coef[p] @ k(sv, x) + intercept[p]``.

    ``blocks`` split the support vectors into groups sharing one coefficient row
    (one per class and dual-coefficient row for one-vs-one models); score column
    p is the sum of blocks ``incidence[p] == 1`` plus its intercept.
    """

    kernel: _kernels.Kernel
    sv: np.ndarray  # (S, D)
    coef: np.ndarray  # (P, S)
    intercept: np.ndarray  # (P,)
    blocks: list  # [(indices, coefficients)]
    incidence: np.ndarray  # (P, n_blocks)


def _is_kernel_svm(step):
    # subclasses too: _mismatch checks that the reconstruction reproduces their outputs
    return isinstance(step, (SVC, NuSVC, OneClassSVM, SVR, NuSVR))


@register(_is_kernel_svm, name="SVC, NuSVC, OneClassSVM, SVR, NuSVR (sklrp.svm)")
class SVMHead(Head):
    """LRP for kernel SVMs: exact for sum-decomposable kernels, Taylor at a root point otherwise.

    See the module docstring for the decompositions (Eqs. (2.72), (2.76), (A.1)-(A.9)),
    the root-point search and the targets of multi-class and one-class models.

    Parameters
    ----------
    step : SVC, NuSVC, OneClassSVM, SVR or NuSVR
        A fitted model. Its kernel must be a string kernel other than
        ``"precomputed"``, an sklrp kernel function/object or a matching
        ``sklearn.metrics.pairwise`` function.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> import sklrp
    >>> X = np.random.RandomState(0).rand(40, 5); y = (X[:, 0] > X[:, 1]).astype(int)
    >>> lrp = sklrp.LRPTransformer(SVC(kernel=sklrp.kernels.intersection_kernel)).fit(X, y)
    >>> E = lrp.explain(X[:3])
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance, E.output))
    True
    >>> E = sklrp.LRPTransformer(SVC(kernel="rbf")).fit(X, y).explain(X[:3])
    >>> E.root_point.shape
    (3, 5)
    """

    def __init__(self, step):
        super().__init__(step)
        check_is_fitted(step, "dual_coef_")
        kernel = step.kernel
        if isinstance(kernel, str) and kernel == "precomputed":
            raise ValueError(
                f"sklrp cannot explain {type(step).__name__}(kernel='precomputed'): relevance needs the kernel "
                "function itself. Fit the model with the kernel object instead, e.g. "
                "SVC(kernel=sklrp.kernels.intersection_kernel), SVC(kernel=sklrp.kernels.Chi2Kernel(gamma=...)), "
                "SVC(kernel='rbf'), or your own sklrp.kernels.Kernel subclass."
            )
        if not isinstance(kernel, str) and _kernels.as_kernel(kernel) is None:
            name = getattr(kernel, "__name__", repr(kernel))
            raise TypeError(
                f"sklrp does not know how to decompose the kernel {name}: it has no known per-dimension "
                "decomposition (Eq. (2.72)) and no gradient (Eq. (2.76)). Use a kernel from sklrp.kernels, "
                "or subclass sklrp.kernels.Kernel implementing per_dimension (exact) or matrix/gradient "
                "(Taylor), or wrap an element-wise term in sklrp.kernels.PerDimensionKernel."
            )
        self._train = None
        self._reference = None
        self._model_np = None
        self._cache = {}

    def __getstate__(self):
        # tensors derived from the model are rebuilt on demand; keep pickles small
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    # -- the model as arrays ---------------------------------------------------------------
    def _kernel(self, train):
        st = self.step
        if not isinstance(st.kernel, str):
            return _kernels.as_kernel(st.kernel)
        gamma = st.gamma
        if isinstance(gamma, str):
            if gamma == "auto":
                gamma = 1.0 / st.shape_fit_[1]
            elif train is not None and train.shape[0] == st.shape_fit_[0]:
                var = float(np.var(train))  # gamma="scale": 1 / (n_features * X.var())
                gamma = 1.0 / (train.shape[1] * var) if var != 0 else 1.0
            else:  # only stored privately by scikit-learn; checked against decision_function below
                gamma = float(st._gamma)
        if st.kernel == "linear":
            return _kernels.LinearKernel()
        if st.kernel == "rbf":
            return _kernels.RBFKernel(gamma=gamma)
        if st.kernel == "poly":
            return _kernels.PolynomialKernel(gamma=gamma, degree=st.degree, coef0=st.coef0)
        if st.kernel == "sigmoid":
            return _kernels.SigmoidKernel(gamma=gamma, coef0=st.coef0)
        raise ValueError(f"unknown SVC kernel {st.kernel!r}")

    def _support_vector_sources(self):
        st = self.step
        sv = st.support_vectors_
        sv = np.asarray(sv.toarray() if hasattr(sv, "toarray") else sv, dtype=float)  # sparse training data
        if sv.size:
            yield sv
            return
        # callable kernels: scikit-learn keeps no support vectors, only their indices
        # into the training data; use the data given to LRPTransformer.fit when it
        # is the training set, else scikit-learn's private copy of it
        if self._train is not None and self._train.shape[0] == st.shape_fit_[0]:
            yield self._train[st.support_]
        private = getattr(st, "_BaseLibSVM__Xfit", None)
        if private is not None and hasattr(private, "shape") and private.shape[0] == st.shape_fit_[0]:
            yield np.asarray(private.toarray() if hasattr(private, "toarray") else private, dtype=float)[st.support_]

    def _build(self, sv):
        st = self.step
        dual = st.dual_coef_
        dual = np.atleast_2d(np.asarray(dual.toarray() if hasattr(dual, "toarray") else dual, dtype=float))
        intercept = np.asarray(st.intercept_, dtype=float).ravel()
        n_classes = len(getattr(st, "classes_", [0, 1]))
        if isinstance(st, (OneClassSVM, SVR, NuSVR)) or n_classes == 2:
            blocks = [(np.arange(sv.shape[0]), dual[0])]
            return _Model(self._kernel(self._train), sv, dual[:1].copy(), intercept[:1], blocks, np.ones((1, 1)))
        starts = np.concatenate([[0], np.cumsum(st.n_support_)])
        pairs = [(a, b) for a in range(n_classes) for b in range(a + 1, n_classes)]
        coef = np.zeros((len(pairs), sv.shape[0]))
        block_index, blocks, rows = {}, [], []
        for p, (a, b) in enumerate(pairs):
            # libsvm one-vs-one layout: class a's vectors use row b-1, class b's use row a
            for cls, row in ((a, b - 1), (b, a)):
                idx = np.arange(starts[cls], starts[cls + 1])
                coef[p, idx] = dual[row, idx]
                if (cls, row) not in block_index:
                    block_index[(cls, row)] = len(blocks)
                    blocks.append((idx, dual[row, idx]))
                rows.append((p, block_index[(cls, row)]))
        incidence = np.zeros((len(pairs), len(blocks)))
        for p, j in rows:
            incidence[p, j] = 1.0
        return _Model(self._kernel(self._train), sv, coef, intercept, blocks, incidence)

    def _model(self):
        if self._model_np is None:
            errors = []
            for sv in self._support_vector_sources():
                model = self._build(sv)
                err = self._mismatch(model)
                if err is None:
                    self._model_np = model
                    break
                errors.append(err)
            else:
                if not errors:
                    raise ValueError(
                        f"{type(self.step).__name__} with a callable kernel stores no support vectors; sklrp needs "
                        "its training data: call LRPTransformer.fit with the data the model was trained on."
                    )
                raise RuntimeError(
                    f"sklrp could not reproduce {type(self.step).__name__}.decision_function (max abs difference "
                    f"{min(errors):.3g}); if the kernel is callable, pass the model's training data to "
                    "LRPTransformer.fit."
                )
        return self._model_np

    def _mismatch(self, model):
        """None when the reconstructed model reproduces decision_function, else the max error."""
        st = self.step
        x = model.sv[:16]
        reference = copy.copy(st)
        if hasattr(reference, "decision_function_shape"):
            reference.decision_function_shape = "ovo"  # a shallow copy: the explained model is untouched
        output = reference.predict if isinstance(st, (SVR, NuSVR)) else reference.decision_function
        expected = np.asarray(output(x), dtype=float).reshape(x.shape[0], -1)
        config_free = _tensors(model, torch.float64, torch.device("cpu"))
        with torch.no_grad():
            got = _scores(model, config_free, torch.as_tensor(x, dtype=torch.float64)).numpy()
        err = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
        scale = max(1.0, float(np.abs(expected).max()))
        return None if err <= 1e-7 * scale else err

    def _tensors(self, config):
        key = (config.dtype, config.device)
        if key not in self._cache:
            self._cache[key] = _tensors(self._model(), config.dtype, config.device)
        return self._cache[key]

    # -- Head interface ------------------------------------------------------------------------
    def prepare(self, x, y, config):
        """Keep the training data at the SVM's input: support vectors of callable kernels,
        ``gamma="scale"``, and the reference set of root-point candidates."""
        train = x.detach().cpu().numpy().astype(float, copy=False)
        self._train = train
        self._model_np = None
        self._cache = {}
        n_sv = self._model().sv.shape[0]  # resolve and verify now, so a bad model fails in fit
        # the root search keeps <reference, support vector> products: bound them to ~32M numbers
        cap = min(MAX_REFERENCE, max(200, (1 << 25) // max(1, n_sv)))
        n = train.shape[0]
        idx = np.linspace(0, n - 1, cap).astype(int) if n > cap else np.arange(n)
        self._reference = train[np.unique(idx)]
        self._train = None  # only needed to resolve the model; don't keep (or pickle) the training set

    def scores(self, x, config):
        model = self._model()
        model.kernel.check_input(x, "X")
        return _scores(model, self._tensors(config), x)

    @property
    def classes(self):
        if isinstance(self.step, OneClassSVM):
            return None
        return getattr(self.step, "classes_", None)  # None for SVR / NuSVR

    def predicted(self, scores):
        if isinstance(self.step, OneClassSVM):
            return np.where(scores[:, 0] < 0, -1, 1)
        classes = self.classes
        if classes is None or scores.shape[1] == 1:
            return super().predicted(scores)
        votes, confidence = _votes(scores, len(classes))
        if getattr(self.step, "break_ties", False) and self.step.decision_function_shape == "ovr":
            votes = votes + confidence / (3 * (np.abs(confidence) + 1))
        return classes[np.argmax(votes, axis=1)]  # ties: lowest class index, as libsvm

    def target_weights(self, labels, n_outputs):
        labels = np.asarray(labels)
        n = labels.shape[0]
        if isinstance(self.step, OneClassSVM):
            bad = [v for v in labels.tolist() if v not in (1, -1)]
            if bad:
                raise ValueError(f"OneClassSVM targets are 1 (inlier score f(x)) or -1 (outlier score -f(x)); "
                                 f"got {bad[0]!r}")
            return labels.astype(float).reshape(n, 1)
        if self.classes is None:  # regressors: output index 0
            return super().target_weights(labels, n_outputs)
        classes = np.asarray(self.step.classes_)
        is_pair = np.array([isinstance(v, Pair) for v in labels.ravel().tolist()], dtype=bool)
        if not is_pair.any():
            if n_outputs == 1:
                return super().target_weights(labels, n_outputs)
            pos = _positions(classes, labels)
            w = np.zeros((n, n_outputs))
            for p, (a, b) in enumerate(_pairs(len(classes))):
                w[pos == a, p] = 1.0
                w[pos == b, p] = -1.0
            return w
        if not is_pair.all():
            raise ValueError("mix of Pair and class-label targets; pass one kind per call")
        w = np.zeros((n, n_outputs))
        for i, pair in enumerate(labels.tolist()):
            a, b = _positions(classes, np.array([pair.a, pair.b], dtype=object))
            if a == b:
                raise ValueError(f"Pair needs two different classes, got {pair!r}")
            if n_outputs == 1:  # binary: the single column is positive for classes_[1]
                w[i, 0] = 1.0 if a == 1 else -1.0
                continue
            lo, hi = min(a, b), max(a, b)
            w[i, _pairs(len(classes)).index((lo, hi))] = 1.0 if a == lo else -1.0
        return w

    def relevance(self, x, weights, scores, config):
        model = self._model()
        t = self._tensors(config)
        if model.kernel.is_sum_decomposable:
            u = weights @ t["incidence"]  # (n, n_blocks): weight of each block in the target
            rel = torch.zeros_like(x)
            for j, sums in enumerate(t["sums"]):
                if bool((u[:, j] != 0).any()):
                    rel = rel + u[:, j:j + 1] * sums(x)  # Eq. (2.72)
            return HeadRelevance(rel, weights @ t["intercept"])
        if not model.kernel.is_differentiable:
            raise TypeError(f"kernel {model.kernel!r} is neither sum-decomposable nor differentiable")
        if isinstance(self.step, (SVR, NuSVR)):
            raise TypeError(
                f"{type(self.step).__name__} with kernel {model.kernel!r}: the Taylor decomposition (Eq. (2.76)) "
                "expands at a root point on a classifier's decision boundary, which a regressor does not have. "
                "Use a sum-decomposable kernel (linear, sklrp.kernels.intersection_kernel, additive_chi2_kernel) "
                "for exact relevance."
            )
        return self._taylor(x, weights, scores, config)

    def bias_weights(self, x, weights, config):
        model = self._model()
        if not isinstance(model.kernel, _kernels.LinearKernel):
            return super().bias_weights(x, weights, config)
        t = self._tensors(config)
        w = weights @ (t["coef"] @ t["sv"])  # w = sum_i alpha_i y_i x_i (Eq. (2.74))
        sq = w * w
        total = sq.sum(dim=1, keepdim=True)
        uniform = torch.full_like(sq, 1.0 / sq.shape[1])
        return torch.where(total > 0, sq / torch.where(total > 0, total, 1.0), uniform)

    # -- Taylor decomposition at a root point (Eqs. (2.75)-(2.76)) --------------------------
    def _reference_tensors(self, config):
        t = self._tensors(config)
        if "ref" not in t:
            ref = self._reference if self._reference is not None else self._model().sv
            ref = config.tensor(ref)
            t["ref"] = ref
            t["ref_sq"] = (ref * ref).sum(1)
            t["ref_scores"] = _scores(self._model(), t, ref)
            if self._model().kernel.uses_products:
                t["ref_sv"] = ref @ t["sv"].T
        return t

    def _taylor(self, x, weights, scores, config):
        tol = _check_param(config.root_tol, "root_tol", "float")
        n_cand = _check_param(config.n_root_candidates, "n_root_candidates", "int")
        if config.dtype != torch.float64:
            # |f(x~)| <= root_tol is a float64 promise (float32 cannot resolve 1e-6 on typical
            # scores): search in float64 on the same device, return in the configured dtype
            config64 = dataclasses.replace(config, dtype=torch.float64)
            x64, w64 = config64.tensor(x), config64.tensor(weights)
            out = self._taylor(x64, w64, self.scores(x64, config64), config64)
            extras = {k: v.to(config.dtype) if v.is_floating_point() else v for k, v in out.extras.items()}
            return HeadRelevance(out.relevance.to(config.dtype), out.bias.to(config.dtype), extras)
        t = self._reference_tensors(config)
        kernel = self._model().kernel
        n, d = x.shape
        g0 = (weights * scores).sum(1)
        c_eff = weights @ t["coef"]  # (n, S): the explained function is one kernel expansion
        b_eff = weights @ t["intercept"]
        g_ref = weights @ t["ref_scores"].T  # (n, N_ref)
        sign0 = torch.where(g0 >= 0, 1.0, -1.0).to(g0.dtype)
        opposite = (g_ref * sign0[:, None] < 0) | (g_ref.abs() <= tol)
        dist2 = ((x * x).sum(1, keepdim=True) + t["ref_sq"][None, :] - 2 * x @ t["ref"].T).clamp(min=0)
        dist2 = torch.where(opposite, dist2, torch.full_like(dist2, np.inf))
        k = min(n_cand, dist2.shape[1])
        cand_d2, cand = torch.topk(dist2, k, dim=1, largest=False)
        has_cand = torch.isfinite(cand_d2)

        root = x.clone()
        found = g0.abs() <= tol  # already on the boundary: x~ = x
        n_sv = t["sv"].shape[0]
        rows_per_chunk = max(1, _CHUNK // max(1, k * max(n_sv, d)))
        todo = torch.nonzero(~found & has_cand.any(1)).squeeze(1)
        for lo in range(0, todo.numel(), rows_per_chunk):
            rows = todo[lo:lo + rows_per_chunk]
            t_best, ok, d_best = _search_roots(kernel, t, x[rows], cand[rows], has_cand[rows], g_ref[rows],
                                               g0[rows], c_eff[rows], b_eff[rows], tol)
            root[rows] = torch.where(ok[:, None], x[rows] + t_best[:, None] * d_best, x[rows])
            found[rows] = ok
        grad = kernel.gradient(root, t["sv"], c_eff)
        rel = torch.where(found[:, None], grad * (x - root), torch.zeros_like(x))  # Eq. (2.76)
        root = torch.where(found[:, None], root, torch.full_like(root, np.nan))
        missing = int((~found).sum())
        if missing:
            no_cand = int((~found & ~has_cand.any(1)).sum())
            warnings.warn(
                f"no root point found for {missing} of {n} samples ({no_cand} without any reference sample of the "
                f"opposite prediction, {missing - no_cand} where the interval search did not reach "
                f"|f(x~)| <= root_tol={tol:g}); their relevance is 0 and residual = f(x) "
                "(extras['root_found'] is False). Fit LRPTransformer on data predicted as both classes, or raise "
                "n_root_candidates / root_tol.",
                RootPointWarning,
                stacklevel=4,
            )
        return HeadRelevance(rel, torch.zeros_like(g0), {"root_point": root, "root_found": found})


# -- array helpers ------------------------------------------------------------------------------

def _pairs(n_classes):
    return [(a, b) for a in range(n_classes) for b in range(a + 1, n_classes)]


def _positions(classes, labels):
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    out = []
    for lab in np.asarray(labels, dtype=object).ravel().tolist():
        key = lab.item() if hasattr(lab, "item") else lab
        if key not in lookup:
            raise ValueError(f"unknown target label {lab!r}; the model's classes are {classes.tolist()}")
        out.append(lookup[key])
    return np.array(out, dtype=int)


def _votes(scores, n_classes):
    """libsvm's one-vs-one votes and sklearn's summed confidences (positive = first class)."""
    n = scores.shape[0]
    votes = np.zeros((n, n_classes))
    confidence = np.zeros((n, n_classes))
    for p, (a, b) in enumerate(_pairs(n_classes)):
        wins_a = scores[:, p] > 0
        votes[wins_a, a] += 1
        votes[~wins_a, b] += 1
        confidence[:, a] += scores[:, p]
        confidence[:, b] -= scores[:, p]
    return votes, confidence


def _tensors(model, dtype, device):
    def tensor(a):
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

    sv = tensor(model.sv)
    t = {"sv": sv, "coef": tensor(model.coef), "intercept": tensor(model.intercept),
         "incidence": tensor(model.incidence)}
    if model.kernel.is_sum_decomposable:
        t["sums"] = [model.kernel.prepare_sums(sv[tensor(idx).long()], tensor(c)) for idx, c in model.blocks]
    return t


def _scores(model, t, x):
    """Score columns (n, P): the pairwise / binary decision values."""
    if model.kernel.is_sum_decomposable:
        totals = torch.stack([sums(x).sum(1) for sums in t["sums"]], dim=1)
        return totals @ t["incidence"].T + t["intercept"]
    out = []
    step = max(1, _CHUNK // max(1, t["sv"].shape[0]))
    for lo in range(0, x.shape[0], step):
        out.append(model.kernel.matrix(x[lo:lo + step], t["sv"]) @ t["coef"].T)
    return torch.cat(out) + t["intercept"]


def _search_roots(kernel, t, x, cand, has_cand, g_ref, g0, c_eff, b_eff, tol):
    """Nearest root on the segments ``x -> x_s`` over the candidates, for a few samples.

    Returns the segment parameter, a found flag and the direction of the chosen segment.
    """
    n, k = cand.shape
    S = t["sv"]
    xs = t["ref"][cand]  # (n, k, D)
    direction = xs - x[:, None, :]
    length2 = (direction * direction).sum(2)  # (n, k)
    f_hi = torch.gather(g_ref, 1, cand)
    sample = torch.arange(n, device=x.device)[:, None].expand(n, k).reshape(-1)
    if kernel.uses_products:
        # along x + t d: <s, x + t d> and ||x + t d||^2 are polynomials in t, so one
        # evaluation costs O(n_support) per segment instead of O(n_support * D)
        sx = x @ S.T  # (n, S)
        sd = (t["ref_sv"][cand] - sx[:, None, :]).reshape(n * k, -1)
        x_sq = (x * x).sum(1)
        xd = ((x[:, None, :] * xs).sum(2) - x_sq[:, None]).reshape(-1)
        dd = length2.reshape(-1)
        s_sq = (S * S).sum(1)[None, :]

        def evaluate(tt, rows):
            if rows.numel() == n * k:  # all segments active: broadcast instead of gathering copies
                tk = tt.view(n, k)
                dot = sx[:, None, :] + tk[:, :, None] * sd.view(n, k, -1)
                sq = (x_sq[:, None] + 2 * tk * xd.view(n, k) + tk * tk * dd.view(n, k))[:, :, None]
                values = torch.einsum("nks,ns->nk", kernel.from_products(dot, sq, s_sq[None]), c_eff)
                return (values + b_eff[:, None]).reshape(-1)
            i = sample[rows]
            dot = sx[i] + tt[:, None] * sd[rows]
            sq = (x_sq[i] + 2 * tt * xd[rows] + tt * tt * dd[rows])[:, None]
            return (kernel.from_products(dot, sq, s_sq) * c_eff[i]).sum(1) + b_eff[i]
    else:
        flat_dir = direction.reshape(n * k, -1)

        def evaluate(tt, rows):
            i = sample[rows]
            pts = x[i] + tt[:, None] * flat_dir[rows]
            return (kernel.matrix(pts, S) * c_eff[i]).sum(1) + b_eff[i]

    f_lo = g0[:, None].expand(n, k).reshape(-1)
    t_root, ok = _bracket(evaluate, f_lo, f_hi.reshape(-1), has_cand.reshape(-1), tol,
                          group=(sample, n, length2.reshape(-1).sqrt()))
    dist = torch.where(ok, t_root * length2.reshape(-1).sqrt(), torch.full_like(t_root, np.inf)).reshape(n, k)
    best = dist.argmin(1)
    rows = torch.arange(n, device=x.device)
    found = torch.isfinite(dist[rows, best])
    return t_root.reshape(n, k)[rows, best], found, direction[rows, best]


def _bracket(evaluate, f_lo, f_hi, valid, tol, group=None):
    """Vectorised bracketed root search on [0, 1] (Illinois regula falsi + bisection).

    ``f_lo`` and ``f_hi`` have opposite signs (or one is within ``tol`` of 0); stops
    when ``|f(t)| <= tol``. Returns ``t`` and a found flag per segment.

    ``group = (sample, n_samples, length)``: segments of one sample compete, only the
    root closest to the sample is wanted. A segment whose bracket ``[lo, hi]`` starts
    farther away (``lo * length``) than another segment's bracket ends (``hi * length``)
    cannot win and is dropped; this does not change the result, only the work.
    """
    m = f_lo.shape[0]
    lo, hi = torch.zeros_like(f_lo), torch.ones_like(f_lo)
    flo, fhi = f_lo.clone(), f_hi.clone()
    t = torch.full_like(f_lo, np.nan)
    found = torch.zeros(m, dtype=torch.bool, device=f_lo.device)
    at_lo = valid & (flo.abs() <= tol)
    at_hi = valid & ~at_lo & (fhi.abs() <= tol)
    t[at_lo], t[at_hi] = 0.0, 1.0
    found |= at_lo | at_hi
    active = valid & ~found
    last = torch.zeros(m, dtype=torch.int8, device=f_lo.device)  # side replaced last: -1 lo, +1 hi
    for it in range(_MAX_ITER):
        rows = torch.nonzero(active).squeeze(1)
        if rows.numel() == 0:
            break
        a, b, fa, fb = lo[rows], hi[rows], flo[rows], fhi[rows]
        mid = 0.5 * (a + b)
        tm = (a * fb - b * fa) / (fb - fa)
        # every sixth step (or when regula falsi leaves the bracket) bisect: guaranteed shrinkage
        bisect = ~torch.isfinite(tm) | (tm <= a) | (tm >= b) | (it % 6 == 5)
        tm = torch.where(bisect, mid, tm)
        fm = evaluate(tm, rows)
        conv = fm.abs() <= tol
        t[rows[conv]] = tm[conv]
        found[rows[conv]] = True
        to_lo = ~conv & ((fm > 0) == (fa > 0))
        to_hi = ~conv & ~to_lo
        prev = last[rows]
        # Illinois: the kept endpoint's value is halved when the same side moves twice
        fhi[rows] = torch.where(to_lo & (prev == -1), 0.5 * fb, fb)
        flo[rows] = torch.where(to_hi & (prev == 1), 0.5 * fa, fa)
        lo[rows] = torch.where(to_lo, tm, a)
        flo[rows] = torch.where(to_lo, fm, flo[rows])
        hi[rows] = torch.where(to_hi, tm, b)
        fhi[rows] = torch.where(to_hi, fm, fhi[rows])
        last[rows] = torch.where(to_lo, -1, torch.where(to_hi, 1, 0)).to(torch.int8)
        collapsed = (hi[rows] - lo[rows]) <= 1e-15
        active[rows] = ~conv & ~collapsed
        if group is not None:
            sample, n_samples, length = group
            inf = torch.full_like(lo, np.inf)
            upper = torch.where(found, t * length, torch.where(active, hi * length, inf))
            best = torch.full((n_samples,), np.inf, dtype=lo.dtype, device=lo.device)
            best = best.scatter_reduce(0, sample, upper, reduce="amin")
            active &= lo * length <= best[sample]
    return torch.where(found, t, torch.zeros_like(t)), found

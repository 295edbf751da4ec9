"""The SVM head: kernel SVMs as arrays, their targets and exact / Taylor decompositions.

See :mod:`sklrp.svm` for the decompositions and targets.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM
from sklearn.utils.validation import check_is_fitted

from .. import kernels as _kernels
from ..propagators import Head, HeadRelevance, register
from ._taylor import Expansion, Reference, check_settings, decompose

#: Largest reference set kept for root-point candidates (memory: n_ref x n_support).
MAX_REFERENCE = 2000
# Largest (samples x support vectors) block of one score evaluation.
_CHUNK = 1 << 22


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


@dataclass
class Model:
    """The SVM as arrays: score column p is ``coef[p] @ k(sv, x) + intercept[p]``.

    ``blocks`` split the support vectors into groups sharing one coefficient row
    (one per class and dual-coefficient row for one-vs-one models); score column
    p is the sum of blocks ``incidence[p] == 1`` plus its intercept, plus ``k(x, x)``
    when ``diagonal`` (SVDD's squared distance, Eq. (A.11)).
    """

    kernel: _kernels.Kernel
    sv: np.ndarray  # (S, D)
    coef: np.ndarray  # (P, S)
    intercept: np.ndarray  # (P,)
    blocks: list  # [(indices, coefficients)]
    incidence: np.ndarray  # (P, n_blocks)
    diagonal: bool = False


def _is_kernel_svm(step):
    # subclasses too: _mismatch checks that the reconstruction reproduces their outputs
    return isinstance(step, (SVC, NuSVC, OneClassSVM, SVR, NuSVR))


@register(_is_kernel_svm, name="SVC, NuSVC, OneClassSVM, SVR, NuSVR (sklrp.svm)")
class SVMHead(Head):
    """LRP for kernel SVMs: exact for sum-decomposable kernels, Taylor at a root point otherwise.

    See :mod:`sklrp.svm` for the decompositions (Eqs. (2.72), (2.76), (A.1)-(A.9) and the
    exact path integral), the root-point search and the targets of multi-class and one-class
    models.

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
    >>> E = sklrp.LRPTransformer(SVC(kernel="rbf"), device="cpu").fit(X, y).explain(X[:3])
    >>> E.root_point.shape
    (3, 5)
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-6))
    True
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
        self._mean = None
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
            return Model(self._kernel(self._train), sv, dual[:1].copy(), intercept[:1], blocks, np.ones((1, 1)))
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
        return Model(self._kernel(self._train), sv, coef, intercept, blocks, incidence)

    def _model(self):
        if self._model_np is None:
            self._model_np = self.build_model()
        return self._model_np

    def build_model(self):
        """The explained model as a :class:`Model`; subclasses for other kernel machines override this."""
        errors = []
        for sv in self._support_vector_sources():
            model = self._build(sv)
            _check_kernel(model)
            err = self._mismatch(model)
            if err is None:
                return model
            errors.append(err)
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

    def _mismatch(self, model):
        """None when the reconstructed model reproduces decision_function, else the max error."""
        st = self.step
        x = model.sv[:16]
        reference = copy.copy(st)
        if hasattr(reference, "decision_function_shape"):
            reference.decision_function_shape = "ovo"  # a shallow copy: the explained model is untouched
        output = reference.predict if isinstance(st, (SVR, NuSVR)) else reference.decision_function
        expected = np.asarray(output(x), dtype=float).reshape(x.shape[0], -1)
        config_free = model_tensors(model, torch.float64, torch.device("cpu"))
        with torch.no_grad():
            got = model_scores(model, config_free, torch.as_tensor(x, dtype=torch.float64)).numpy()
        err = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
        scale = max(1.0, float(np.abs(expected).max()))
        return None if err <= 1e-7 * scale else err

    def _tensors(self, config):
        key = (config.dtype, config.device)
        if key not in self._cache:
            self._cache[key] = model_tensors(self._model(), config.dtype, config.device)
        return self._cache[key]

    # -- Head interface ------------------------------------------------------------------------
    def prepare(self, x, y, config):
        """Keep the training data at the SVM's input: support vectors of callable kernels,
        ``gamma="scale"``, and the reference set of root-point candidates."""
        check_settings(config)
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
        self._mean = train.mean(axis=0)
        self._train = None  # only needed to resolve the model; don't keep (or pickle) the training set

    def scores(self, x, config):
        model = self._model()
        model.kernel.check_input(x, "X")
        out = model_scores(model, self._tensors(config), x)
        if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(x).all()):
            big = float(x.abs().max())
            raise ValueError(
                f"{type(self.step).__name__}'s kernel overflows float64 on X (largest |value| {big:.3g}): the "
                "scores are not finite. Rescale the input, e.g. with StandardScaler in the pipeline (the model "
                "must be fitted on data of the same scale)."
            )
        return out

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
            t["ref_scores"] = model_scores(self._model(), t, ref)
            if self._model().kernel.uses_products:
                t["ref_sv"] = ref @ t["sv"].T
        return t

    def _taylor(self, x, weights, scores, config):
        check_settings(config)
        if config.dtype != torch.float64:
            # |f(x~)| <= root_tol and taylor_tol are float64 promises (float32 cannot resolve 1e-6 on
            # typical scores): decompose in float64 on the same device, return in the configured dtype
            config64 = dataclasses.replace(config, dtype=torch.float64)
            x64, w64 = config64.tensor(x), config64.tensor(weights)
            out = self._taylor(x64, w64, self.scores(x64, config64), config64)
            extras = {k: v.to(config.dtype) if v.is_floating_point() else v for k, v in out.extras.items()}
            return HeadRelevance(out.relevance.to(config.dtype), out.bias.to(config.dtype), extras,
                                 remainder=out.remainder.to(config.dtype))
        t = self._reference_tensors(config)
        expansion = Expansion(self._model().kernel, t["sv"], weights @ t["coef"], weights @ t["intercept"])
        mean = self._mean if self._mean is not None else self._model().sv.mean(axis=0)
        reference = Reference(t["ref"], t["ref_sq"], weights @ t["ref_scores"].T, t.get("ref_sv"), config.tensor(mean))
        return decompose(expansion, x, (weights * scores).sum(1), reference, config)


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


def _check_kernel(model):
    """A kernel that is not sum-decomposable must have a usable gradient (Eq. (2.75)): fail in fit, not later."""
    kernel = model.kernel
    kernel.check_params()
    if kernel.is_sum_decomposable:
        return
    if not kernel.is_differentiable:
        raise TypeError(
            f"kernel {kernel!r} is neither sum-decomposable nor differentiable: implement per_dimension (exact, "
            "Eq. (2.72)) or matrix/gradient (Taylor, Eq. (2.76)) in your sklrp.kernels.Kernel subclass."
        )
    sv = torch.as_tensor(model.sv[:2], dtype=torch.float64)
    coef = torch.ones((sv.shape[0], sv.shape[0]), dtype=torch.float64)
    grad = kernel.gradient(sv.flip(0), sv, coef)  # TypeError naming the fix when autograd fails
    if tuple(grad.shape) != tuple(sv.shape):
        raise TypeError(
            f"{type(kernel).__name__}.gradient(X, S, coef) returned shape {tuple(grad.shape)}, expected "
            f"{tuple(sv.shape)} (one gradient row per row of X)"
        )


def model_tensors(model, dtype, device):
    def tensor(a):
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

    sv = tensor(model.sv)
    t = {"sv": sv, "coef": tensor(model.coef), "intercept": tensor(model.intercept),
         "incidence": tensor(model.incidence)}
    if model.kernel.is_sum_decomposable:
        t["sums"] = [model.kernel.prepare_sums(sv[tensor(idx).long()], tensor(c)) for idx, c in model.blocks]
    return t


def model_scores(model, t, x):
    """Score columns (n, P): the pairwise / binary decision values."""
    if model.kernel.is_sum_decomposable:
        totals = torch.stack([sums(x).sum(1) for sums in t["sums"]], dim=1)
        out = totals @ t["incidence"].T + t["intercept"]
    else:
        parts = []
        step = max(1, _CHUNK // max(1, t["sv"].shape[0]))
        for lo in range(0, x.shape[0], step):
            parts.append(model.kernel.matrix(x[lo:lo + step], t["sv"]) @ t["coef"].T)
        out = torch.cat(parts) + t["intercept"]
    if model.diagonal:
        out = out + model.kernel.diagonal(x)[:, None]
    return out

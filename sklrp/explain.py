"""``LRPTransformer``: the scikit-learn face of sklrp, and the ``Explanation`` it returns.

``explain`` asks the registry for the propagator of every step of the wrapped model,
runs the forward pass once per batch, and walks the steps backward handing relevance
down (Algorithm 1). The numerical work runs in torch; inputs and outputs are numpy.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, MetaEstimatorMixin, TransformerMixin, clone
from sklearn.svm import LinearSVC
from sklearn.utils import get_tags
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_is_fitted, validate_data

from .propagators import RuleConfig, build_chain
from .rules import make_rule

__all__ = ["LRPTransformer", "Explanation"]

_BIAS_MODES = ("keep", "uniform", "weighted")


@dataclass
class Explanation:
    """Relevance of a batch of samples and the quantities needed to audit it.

    Attributes
    ----------
    relevance : ndarray, same shape as X
        Input relevance ``R_d`` (Eq. (2.12) at the input layer).
    bias_relevance : ndarray of shape (n_samples,)
        All relevance absorbed by bias terms along the whole chain (Eq. (2.16)),
        after the ``bias`` redistribution mode (Eqs. (2.73)-(2.74)).
    output : ndarray of shape (n_samples,)
        The explained score ``f(x)`` (the target's decision value, sign-flipped for
        the negative class of a binary model).
    target : ndarray of shape (n_samples,)
        The class label (classifiers) or output index (regressors) explained.
    residual : ndarray of shape (n_samples,)
        ``output - relevance.sum() - bias_relevance``: what epsilon stabilisers and
        empty alpha-beta parts absorbed (Eq. (2.23)) plus, for Taylor decompositions,
        the remainder of Eq. (2.75). Zero (to rounding) for exact decompositions.
    root_point : ndarray or None
        For Taylor decompositions (Eqs. (2.75)-(2.76)): the root point ``x~`` in the
        input space of the explained model step, else None.
    extras : dict
        Further per-sample arrays a propagator reports (e.g. ``root_found``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import sklrp
    >>> X = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 1.0]]); y = X @ [2.0, -1.0] + 0.5
    >>> E = sklrp.LRPTransformer(LinearRegression()).fit(X, y).explain(X[:1])
    >>> E.relevance.round(6), E.bias_relevance.round(6), E.output.round(6)
    (array([[ 2., -2.]]), array([0.5]), array([0.5]))
    """

    relevance: np.ndarray
    bias_relevance: np.ndarray
    output: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    root_point: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


def _resolve_device(device):
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine")
    return dev


def _resolve_dtype(dtype, device):
    if dtype is None:
        return torch.float64 if device.type == "cpu" else torch.float32
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64, np.float32: torch.float32, np.float64: torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    return table[dtype]


class LRPTransformer(TransformerMixin, MetaEstimatorMixin, BaseEstimator):
    """Explain a fitted model with Layer-wise Relevance Propagation.

    ``transform(X)`` returns the relevance of every input feature for the target
    output; ``explain(X)`` returns the full :class:`Explanation`. The wrapped
    estimator may be a single model or a ``Pipeline``; relevance is propagated
    backward through every step down to the raw input (Algorithm 1). The final
    model is decomposed exactly where its structure allows (linear models,
    Eqs. (2.14)-(2.15)); intermediate linear steps use ``rule``.

    Parameters
    ----------
    estimator : estimator, default=None
        The model to explain; ``None`` means ``LinearSVC()``. It is cloned and
        fitted in :meth:`fit`, unless it is a ``FrozenEstimator`` (explained as is).
    rule : str or sklrp.rules.Rule, default="epsilon"
        Rule for linear-type layers: ``"z"`` (Eq. (2.13)), ``"epsilon"`` (Eq. (2.22)),
        ``"alphabeta"`` (Eq. (2.26)), ``"zplus"``, ``"flat"`` (Eq. (2.27)),
        ``"wsquare"`` (Eq. (2.28)), ``"zb"``, or a Rule instance.
    epsilon : float, default=1e-2
        Stabiliser of the epsilon rule.
    alpha, beta : float, default=2.0, -1.0
        Alpha-beta parameters in the thesis' convention ``alpha + beta = 1``.
    low, high : float or array-like, default=0.0, 1.0
        Input bounds of the ``"zb"`` rule.
    conv_rule, input_rule : str or Rule, default=None
        Rules for convolutional layers and for the input layer of torch networks
        (``sklrp.nn``); ``None`` uses ``rule``.
    flat_depth : int, default=None
        Torch networks: use the flat rule for the lowest ``flat_depth`` linear-type
        layers (decomposition depth, Section 5.4.2).
    target : {"predicted", "true"}, label or array-like, default="predicted"
        Which output to explain: the predicted class, the true class (needs ``y``),
        a fixed class label / output index, or one label per sample.
    bias : {"keep", "uniform", "weighted"}, default="keep"
        What to do with the relevance of the model's bias: keep it in
        ``bias_relevance`` (Eq. (2.72)), spread it uniformly over the model's input
        dimensions (Eq. (2.73)), or by the squared weights ``w_d^2 / ||w||^2``
        (Eq. (2.74) made conservative; linear projections only).
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the torch computations run; "auto" uses CUDA when available.
    dtype : {None, "float32", "float64"}, default=None
        None means float64 on the CPU and float32 on a GPU.
    batch_size : int, default=1024
        Samples per batch; bounds memory. A lone linear model, whose only temporaries are its scores,
        takes ``batch_size * n_features / (2 n_outputs + 2)`` rows at a time (the same memory).
    n_root_candidates : int, default=50
        Taylor decompositions (RBF/chi2 SVMs): number of opposite-class reference
        samples searched for a root point (Eqs. (2.75)-(2.76)).
    root_tol : float, default=1e-6
        Taylor decompositions: root points satisfy ``|f(x~)| <= root_tol``.
    taylor : {"exact", "first_order"}, default="exact"
        Taylor decompositions: ``"exact"`` integrates the gradient along the segment from the
        root point ``x~`` to ``x`` (the integral form of the Taylor remainder), so the relevance
        sums to ``f(x) - f(x~)`` up to ``taylor_tol``; ``"first_order"`` is the thesis'
        ``R_d = (x - x~)_d df/dx_d(x~)`` (Eq. (2.76)), whose remainder stays in the residual.
    taylor_tol : float, default=1e-8
        ``taylor="exact"``: the quadrature refines until ``|f(x) - f(x~) - sum_d R_d|`` is at most
        ``taylor_tol * |f(x)|``; in (0, 1).
    taylor_max_nodes : int, default=256
        ``taylor="exact"``: most Gauss-Legendre nodes per sample (doubling from 8); 1 to 1024.
    verbose : bool, default=False
        Show a progress bar over batches.

    Attributes
    ----------
    estimator_ : estimator
        The fitted (or frozen) estimator that is explained.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    classes_ : ndarray
        The explained classifier's classes, when it has them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.frozen import FrozenEstimator
    >>> import sklrp
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    >>> lrp = sklrp.LRPTransformer(FrozenEstimator(model), rule="z").fit(X, y)
    >>> R = lrp.transform(X[:5])
    >>> R.shape
    (5, 4)
    >>> E = lrp.explain(X[:5])
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output))
    True
    """

    def __init__(
        self,
        estimator=None,
        *,
        rule="epsilon",
        epsilon=1e-2,
        alpha=2.0,
        beta=-1.0,
        low=0.0,
        high=1.0,
        conv_rule=None,
        input_rule=None,
        flat_depth=None,
        target="predicted",
        bias="keep",
        device="auto",
        dtype=None,
        batch_size=1024,
        n_root_candidates=50,
        root_tol=1e-6,
        taylor="exact",
        taylor_tol=1e-8,
        taylor_max_nodes=256,
        verbose=False,
    ):
        self.estimator = estimator
        self.rule = rule
        self.epsilon = epsilon
        self.alpha = alpha
        self.beta = beta
        self.low = low
        self.high = high
        self.conv_rule = conv_rule
        self.input_rule = input_rule
        self.flat_depth = flat_depth
        self.target = target
        self.bias = bias
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.n_root_candidates = n_root_candidates
        self.root_tol = root_tol
        self.taylor = taylor
        self.taylor_tol = taylor_tol
        self.taylor_max_nodes = taylor_max_nodes
        self.verbose = verbose

    # -- configuration ---------------------------------------------------------
    def _make_rule(self, rule):
        return make_rule(rule, epsilon=self.epsilon, alpha=self.alpha, beta=self.beta,
                         low=self.low, high=self.high)

    def _config(self) -> RuleConfig:
        if self.bias not in _BIAS_MODES:
            raise ValueError(f"bias must be one of {_BIAS_MODES}, got {self.bias!r}")
        if not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        device = _resolve_device(self.device)
        return RuleConfig(
            self._make_rule(self.rule), _resolve_dtype(self.dtype, device), device,
            conv_rule=None if self.conv_rule is None else self._make_rule(self.conv_rule),
            input_rule=None if self.input_rule is None else self._make_rule(self.input_rule),
            flat_depth=self.flat_depth, n_root_candidates=self.n_root_candidates, root_tol=self.root_tol,
            taylor=self.taylor, taylor_tol=self.taylor_tol, taylor_max_nodes=self.taylor_max_nodes,
            batch_size=self.batch_size, bias=self.bias,
        )

    def _chain_accepts_nd(self):
        return getattr(self.chain_[0][0] if self.chain_[0] else self.chain_[1], "accepts_nd", False)

    # -- fitting ---------------------------------------------------------------
    def fit(self, X, y=None, **fit_params):
        """Fit the wrapped estimator (unless frozen) and prepare its propagators.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; also the reference set of Taylor decompositions.
        y : array-like of shape (n_samples,), default=None
            Targets, passed to the estimator's ``fit``.
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        self : LRPTransformer
        """
        config = self._config()
        from .bow import text  # raw documents: the vectoriser is handled in sklrp.bow.text

        if text.is_text_pipeline(self.estimator):
            return text.fit_text_explainer(self, X, y, **fit_params)
        self.text_explainer_ = None
        X = validate_data(self, X, reset=True, allow_nd=True, dtype=None)
        estimator = LinearSVC() if self.estimator is None else self.estimator
        self.estimator_ = clone(estimator).fit(X, y, **fit_params)
        body, head = build_chain(self.estimator_)
        self.chain_ = (body, head)
        if hasattr(head, "prepare"):
            x = config.tensor(np.asarray(X, dtype=float))
            for prop in body:
                x = prop.forward(x, config)
            head.prepare(x, y, config)
        classes = getattr(head.step, "classes_", None)
        if classes is not None:
            self.classes_ = classes
        return self

    # -- explaining ------------------------------------------------------------
    def _validate_X(self, X):
        check_is_fitted(self, "chain_")
        # Finiteness is checked per batch in explain(), while the batch is in cache: a separate
        # pass over X would cost as much as a linear model's whole decision function.
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=np.float64, ensure_all_finite=False)
        if X.ndim > 2 and not self._chain_accepts_nd():
            raise ValueError(
                f"{type(self.estimator_).__name__} expects 2-D input (n_samples, n_features); got X with "
                f"shape {X.shape}"
            )
        return X

    @staticmethod
    def _target_array(target, y, n):
        """Labels for all samples, or None when they depend on the scores ("predicted")."""
        if isinstance(target, str) and target == "predicted":
            return None
        if isinstance(target, str) and target == "true":
            if y is None:
                raise ValueError("target='true' needs y: call explain(X, y=y) or fit_transform(X, y)")
            return y
        arr = np.asarray(target)
        if arr.ndim == 0:
            return np.full(n, arr.item(), dtype=object if arr.dtype.kind in "USO" else arr.dtype)
        if arr.shape != (n,):
            raise ValueError(f"target array must have shape (n_samples,) = ({n},), got {arr.shape}")
        return arr

    def explain(self, X, target=None, y=None):
        """Explain the model's output for each sample of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to explain.
        target : {"predicted", "true"}, label or array-like, default=None
            Overrides the ``target`` parameter for this call.
        y : array-like of shape (n_samples,), default=None
            True labels, needed for ``target="true"``.

        Returns
        -------
        Explanation
            For a pipeline starting with a word vectoriser (raw documents in), ``relevance``
            is a sparse ``(n_documents, n_features)`` matrix over the vectoriser's columns and
            ``extras["tokens"]`` holds the ``(token, position, relevance)`` of each
            document's tokens (see :func:`sklrp.bow.explain_documents`).
        """
        if getattr(self, "text_explainer_", None) is not None:
            from .bow import text

            return text.explain_documents(self, X, target=target, y=y)
        X = self._validate_X(X)
        target = self.target if target is None else target
        if y is not None:
            y = np.asarray(y)
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"y has {y.shape[0]} samples but X has {X.shape[0]}")
        config = self._config()
        body, head = self.chain_
        n = X.shape[0]
        all_labels = self._target_array(target, y, n)
        # numpy's allocator asks the kernel for huge pages on large arrays; first-touch page faults
        # of a fresh (n, d) torch tensor used to cost more than the whole decision function.
        relevance = np.empty(X.shape, dtype=np.float64)
        bias_rel = np.zeros(n)
        output = np.zeros(n)
        relevance_sum = np.zeros(n)
        targets, extras = [], {}
        # A lone memory-bound head (a linear model) may stream into the output and let its
        # scores stand in for the input check: each saves a full pass over X.
        lone_head = not body
        check_scores = lone_head and head.scores_propagate_nonfinite
        write_into = (lone_head and head.writes_into and self.bias == "keep" and config.device.type == "cpu"
                      and config.dtype == torch.float64)
        rows = self.batch_size
        if write_into and head.temporaries_per_row():
            # the memory of one batch of batch_size x n_features, in far fewer (Python-bound) batches
            rows = max(rows, rows * int(np.prod(X.shape[1:])) // head.temporaries_per_row())
        batches = [slice(i, min(i + rows, n)) for i in range(0, n, rows)]
        if self.verbose:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="LRP", unit="batch")
        with torch.no_grad():
            for batch in batches:
                x = config.tensor(X[batch])
                if not check_scores and not torch.isfinite(x.sum()):
                    # sklearn's own check, for its error message (a finite sum that overflowed passes)
                    assert_all_finite(X[batch], input_name="X")
                acts = [x]
                for prop in body:
                    acts.append(prop.forward(acts[-1], config))
                scores = head.scores(acts[-1], config)
                if check_scores and not torch.isfinite(scores).all():
                    assert_all_finite(X[batch], input_name="X")
                scores_np = scores.detach().cpu().numpy()
                labels = head.predicted(scores_np) if all_labels is None else all_labels[batch]
                weights = config.tensor(head.target_weights(labels, scores.shape[1]))
                out = (weights * scores).sum(dim=1)
                if write_into:
                    hr = head.relevance(acts[-1], weights, scores, config, out=torch.from_numpy(relevance[batch]))
                else:
                    hr = head.relevance(acts[-1], weights, scores, config)
                r, rb = hr.relevance, hr.bias
                if self.bias == "uniform":
                    # reshape so n-D relevance (e.g. torch nets on images) broadcasts per sample
                    r = r + (rb / r[0].numel()).reshape(-1, *([1] * (r.ndim - 1)))
                    rb = torch.zeros_like(rb)
                elif self.bias == "weighted":
                    r = r + rb[:, None] * head.bias_weights(acts[-1], weights, config)
                    rb = torch.zeros_like(rb)
                for prop, a in zip(reversed(body), reversed(acts[:-1])):
                    step = prop.backward(a, r, config)
                    r, rb = step.input, rb + step.bias
                if hr.relevance_sum is not None and r is hr.relevance:
                    relevance_sum[batch] = hr.relevance_sum.cpu().numpy()
                else:
                    relevance_sum[batch] = r.reshape(r.shape[0], -1).sum(dim=1).cpu().numpy()
                if not (write_into and r is hr.relevance):
                    relevance[batch] = r.reshape(relevance[batch].shape).cpu().numpy()
                bias_rel[batch] = rb.detach().cpu().numpy()
                output[batch] = out.detach().cpu().numpy()
                targets.append(np.asarray(labels))
                for key, value in hr.extras.items():
                    extras.setdefault(key, []).append(
                        value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
                    )
        extras = {k: np.concatenate(v) for k, v in extras.items()}
        residual = output - relevance_sum - bias_rel
        return Explanation(
            relevance=relevance,
            bias_relevance=bias_rel,
            output=output,
            target=np.concatenate(targets) if targets else np.empty(0),
            residual=residual,
            root_point=extras.pop("root_point", None),
            extras=extras,
        )

    def transform(self, X):
        """Relevance of each input feature, with the shape of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        relevance : ndarray of shape (n_samples, n_features)
        """
        return self.explain(X).relevance

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return the relevance of ``X`` (``y`` is used for ``target="true"``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        relevance : ndarray of shape (n_samples, n_features)
        """
        self.fit(X, y, **fit_params)
        uses_y = isinstance(self.target, str) and self.target == "true"
        return self.explain(X, y=y if uses_y else None).relevance

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        estimator = LinearSVC() if self.estimator is None else self.estimator
        try:
            inner = get_tags(estimator)
            tags.target_tags.required = inner.target_tags.required
        except (TypeError, AttributeError):  # estimators predating the tags API
            tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        return tags

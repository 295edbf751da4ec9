"""The propagator registry and the backward chain through a pipeline.

Every forward step sklrp can explain has a *propagator*. Intermediate steps
(scalers, PCA, encoders) are :class:`Propagator` objects: they replay the forward
step in torch and map output relevance back to input relevance under a rule.
The last step of a chain (the model that produces the explained score) is a
:class:`Head`: it computes the score columns, turns a target into per-column
weights, and decomposes the weighted score into input relevance.

A new model type is one propagator class registered with :func:`register`; nothing
here knows about scikit-learn meta-estimators beyond ``Pipeline`` and
``FrozenEstimator``, which :func:`build_chain` unwraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .rules import LayerRelevance, Rule

__all__ = [
    "Propagator",
    "InputAdapter",
    "Head",
    "HeadRelevance",
    "RuleConfig",
    "register",
    "propagator_for",
    "build_chain",
    "check_supported",
    "is_supported",
    "input_adapter_for",
    "supported_steps",
]


@dataclass(frozen=True)
class RuleConfig:
    """Everything a propagator may need to choose and apply its rule, as typed fields.

    ``rule`` applies to every linear-type step. ``conv_rule``, ``input_rule`` and
    ``flat_depth`` refine it for torch networks (``sklrp.nn``: a rule per layer kind,
    flat bottom layers, Section 5.4.2); ``n_root_candidates`` and ``root_tol`` steer
    root-point Taylor decompositions (Eqs. (2.75)-(2.76)), ``taylor`` chooses between the
    first-order expansion (``"first_order"``, Eq. (2.76)) and its exact path-integral form
    (``"exact"``, to ``taylor_tol`` relative to ``|f(x)|`` with at most ``taylor_max_nodes``
    quadrature nodes per sample), ``taylor_reference`` where they expand (a root point, the
    training mean, or ``"auto"``: the mean for ``"exact"``, a root point for ``"first_order"``).
    ``dtype`` and ``device`` are
    the torch settings all tensors of one explanation use; ``bias`` is the bias mode
    of Eqs. (2.72)-(2.74); ``batch_size`` bounds the samples per batch. ``composite``
    (an :class:`sklrp.nn.Composite`, e.g. a named one of :func:`sklrp.nn.make_composite`)
    gives torch networks their rules instead of ``rule``, ``conv_rule``, ``input_rule`` and
    ``flat_depth``; ``rule`` then remains the rule of the chain's other linear steps.
    :class:`sklrp.LRPTransformer` validates its parameters before building one.
    """

    rule: Rule
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")
    conv_rule: Rule | None = None
    input_rule: Rule | None = None
    flat_depth: int | None = None
    n_root_candidates: int = 50
    root_tol: float = 1e-6
    taylor: str = "exact"
    taylor_tol: float = 1e-8
    taylor_max_nodes: int = 256
    taylor_reference: str = "auto"
    batch_size: int = 1024
    bias: str = "keep"
    composite: object = None

    def tensor(self, array) -> torch.Tensor:
        """Convert a numpy array (or tensor) to this configuration's dtype/device."""
        if isinstance(array, torch.Tensor):
            return array.to(dtype=self.dtype, device=self.device)
        array = np.asarray(array)
        if not array.flags.writeable:
            # torch cannot share read-only memory (e.g. memmaps); copy instead of warning
            array = array.copy()
        return torch.as_tensor(array, dtype=self.dtype, device=self.device)


class Propagator:
    """Forward replay and backward relevance mapping of one intermediate step.

    Subclasses set ``step`` (the fitted estimator) and implement :meth:`forward`
    and :meth:`backward`. Steps are torch-in, torch-out: ``x`` is a batch of shape
    ``(n, ...)`` in the configuration's dtype and device.

    Attributes
    ----------
    raw_input : bool, class attribute, default False
        True for :class:`InputAdapter` steps, which take the user's raw samples.
    accepts_nd : bool, class attribute, default False
        Whether the step takes samples of more than one dimension (images).
    """

    raw_input: ClassVar[bool] = False
    accepts_nd: ClassVar[bool] = False

    def __init__(self, step):
        self.step = step

    def forward(self, x: torch.Tensor, config: RuleConfig) -> torch.Tensor:  # pragma: no cover
        """Replay ``step.transform`` on a torch batch."""
        raise NotImplementedError

    def backward(self, x: torch.Tensor, relevance: torch.Tensor, config: RuleConfig) -> LayerRelevance:
        """Map relevance at the step's output back to its input ``x``."""
        raise NotImplementedError  # pragma: no cover


class InputAdapter(Propagator):
    """The first step of a chain when the user's samples are not numbers (documents, mixed-type frames).

    ``forward(x, config)`` receives the raw batch exactly as the user passed its rows (a
    list of documents, a numpy object array, the rows of a pandas DataFrame) and returns
    a float tensor; ``backward(x, relevance, config)`` receives the same raw batch and
    returns a :class:`~sklrp.rules.LayerRelevance` whose ``input`` is ``(n, n_columns)``:
    one relevance column per raw column (:meth:`feature_names`).

    The chain asks an adapter for a few more things, all declared here with defaults:
    :meth:`check_raw` and :meth:`check_input` validate the raw data before and after
    fitting, :meth:`n_rows` counts samples,
    :meth:`rows` slices a batch, :meth:`rows_per_batch` bounds the batch when the numeric
    representation is wide, :meth:`extras` adds per-sample results (e.g. the relevance of
    every token), and ``sparse_relevance`` makes the explanation's relevance a
    ``scipy.sparse`` CSR matrix.
    """

    raw_input: ClassVar[bool] = True
    sparse_relevance: ClassVar[bool] = False

    @classmethod
    def check_raw(cls, X):
        """Validate raw samples before anything is fitted; return them in the form :meth:`rows` slices."""
        return X

    def check_input(self, X):
        """Validate raw samples for the fitted step (by default :meth:`check_raw`)."""
        return self.check_raw(X)

    def n_rows(self, X) -> int:
        return len(X)

    def rows(self, X, batch: slice):
        """The raw samples ``batch`` of ``X`` (positional, also for a DataFrame)."""
        return X.iloc[batch] if hasattr(X, "iloc") else X[batch]

    def n_columns(self) -> int:  # pragma: no cover
        """Number of relevance columns."""
        raise NotImplementedError

    def feature_names(self):
        """Names of the relevance columns (ndarray of str), or None when unknown."""
        return None

    def rows_per_batch(self, batch_size: int) -> int:
        return batch_size

    def extras(self, x, relevance: np.ndarray) -> dict:
        """Per-sample extra results for the raw batch ``x`` and its relevance ``(n, n_columns)``."""
        return {}


@dataclass
class HeadRelevance:
    """What a head returns for one batch.

    ``relevance`` (n, d) at the head's input, ``bias`` (n,) absorbed by the model's
    bias, ``extras`` optional per-sample arrays (e.g. ``root_point``, ``root_found``).
    ``relevance_sum`` (n,), optional: ``relevance`` summed per sample, reported by heads
    that computed it while the data was in cache (the caller sums otherwise).
    ``remainder`` (n,), optional: what the head's decomposition leaves out *by
    construction*, ``f(x) - sum(relevance) - bias`` of a Taylor expansion (Eq. (2.75));
    ``None`` for exact heads. It is reported separately from the relevance that rules
    absorb further down the chain (``Explanation.taylor_remainder`` vs ``absorbed``).
    :meth:`Head.decompose` fills in ``output`` (n,), the explained score, and ``target``,
    the explained label of each sample.
    """

    relevance: torch.Tensor
    bias: torch.Tensor
    extras: dict = field(default_factory=dict)
    relevance_sum: torch.Tensor | None = None
    remainder: torch.Tensor | None = None
    output: torch.Tensor | None = None
    target: np.ndarray | None = None


class Head:
    """The model at the end of a chain: the function whose output is explained.

    The explained output of sample ``n`` is ``sum_k weights[n, k] * scores[n, k]``
    where ``scores`` are the columns of the model's decision function and
    ``weights`` encode the target (one-hot for multi-class, +-1 for binary, the
    pairwise combination for one-vs-one SVMs, ...).

    A head implements :meth:`scores` and :meth:`relevance`; :meth:`decompose` strings
    them together for one batch (scores, target labels, target weights, relevance, bias
    redistribution) and keeps every intermediate in local variables, so one head may
    serve several threads at once. Heads override it when they can do better (a torch
    network decomposes from the forward pass it already ran).

    Capabilities, declared here with their defaults:

    * ``accepts_nd``: the head takes samples of more than one dimension (images).
    * :meth:`prepare` / ``needs_reference``: heads that need training data (the
      reference samples of root-point searches) override :meth:`prepare`.
    * ``scores_propagate_nonfinite``: a NaN or inf in ``x`` always reaches the scores,
      so a lone head's input check may look at its output instead of reading ``x``.
    * :meth:`native_dtype`: the dtype the model computes in by itself (torch networks).
    * ``writes_into``: :meth:`relevance` accepts ``out=``, a preallocated tensor shaped
      like ``x`` (a slice of the result array). Such a head keeps only
      :meth:`temporaries_per_row` temporaries per sample, so when it is the only step it
      takes batches of ``batch_size * n_features / temporaries_per_row()`` rows: the
      memory of one ordinary batch, far fewer per-batch overheads.

    The default target handling covers estimators with ``classes_`` whose score
    columns are ``decision_function``'s (one column for binary problems, positive
    for ``classes_[1]``; one column per class otherwise), and regressors whose
    columns are the outputs.
    """

    accepts_nd: ClassVar[bool] = False
    scores_propagate_nonfinite: ClassVar[bool] = False
    writes_into: ClassVar[bool] = False

    def __init__(self, step):
        self.step = step

    def prepare(self, x: torch.Tensor, y, config: RuleConfig) -> None:
        """Keep what the decomposition needs from the training data ``x`` (at the head's input)."""

    @property
    def needs_reference(self) -> bool:
        """Whether :meth:`prepare` needs the training data (it is overridden)."""
        return type(self).prepare is not Head.prepare

    def temporaries_per_row(self) -> int | None:
        """Elements of temporary memory per sample when writing into ``out`` (``writes_into``)."""
        return None

    def native_dtype(self) -> torch.dtype | None:
        """The dtype the model computes in by itself, when it has one of its own (None: follow ``config``).

        A torch network returns its parameters' dtype. Perturbation analyses score many
        perturbed inputs and only need the model's own outputs, so they run it in this dtype
        (:meth:`sklrp.chain.Chain.score_columns` with ``native=True``) instead of the float64 copy
        an explanation uses on the CPU.
        """
        return None

    # -- scores and targets ----------------------------------------------------
    @property
    def classes(self):
        return getattr(self.step, "classes_", None)

    def scores(self, x: torch.Tensor, config: RuleConfig) -> torch.Tensor:  # pragma: no cover
        """Score columns ``(n, n_outputs)`` for a torch batch."""
        raise NotImplementedError

    def predicted(self, scores: np.ndarray) -> np.ndarray:
        """Predicted labels (classifiers) or output index 0 (single-output regressors)."""
        classes = self.classes
        if classes is None:
            if scores.shape[1] != 1:
                raise ValueError(
                    f"target='predicted' is ambiguous for a regressor with {scores.shape[1]} outputs; "
                    "pass target=<output index> (or an array of indices)."
                )
            return np.zeros(scores.shape[0], dtype=int)
        if scores.shape[1] == 1:
            return np.asarray(classes)[(scores[:, 0] > 0).astype(int)]
        return np.asarray(classes)[scores.argmax(axis=1)]

    def target_weights(self, labels: np.ndarray, n_outputs: int) -> np.ndarray:
        """Per-sample weights over score columns for the target labels / output indices."""
        labels = np.asarray(labels)
        classes = self.classes
        n = labels.shape[0]
        if classes is None:
            idx = _output_indices(labels, n_outputs)
            w = np.zeros((n, n_outputs))
            w[np.arange(n), idx] = 1.0
            return w
        classes = np.asarray(classes)
        pos = _class_positions(classes, labels)
        if n_outputs == 1 and len(classes) == 2:
            # binary: the single column scores classes_[1]; explain -f(x) for classes_[0]
            return np.where(pos == 1, 1.0, -1.0)[:, None]
        if n_outputs != len(classes):
            raise ValueError(
                f"{type(self.step).__name__} has {n_outputs} score columns for {len(classes)} classes; "
                "sklrp cannot map a class label to a score column."
            )
        w = np.zeros((n, n_outputs))
        w[np.arange(n), pos] = 1.0
        return w

    # -- decomposition ---------------------------------------------------------
    def relevance(self, x: torch.Tensor, weights: torch.Tensor, scores: torch.Tensor,
                  config: RuleConfig) -> HeadRelevance:  # pragma: no cover
        """Decompose ``(weights * scores).sum(1)`` onto the head's input ``x``.

        Heads with ``writes_into = True`` also take ``out=``, a tensor shaped like ``x``.
        """
        raise NotImplementedError

    def decompose(self, x: torch.Tensor, labels, config: RuleConfig, out=None) -> HeadRelevance:
        """One batch: scores, target labels (``labels=None``: the predicted ones), relevance.

        The relevance of the model's bias is redistributed onto ``x`` as ``config.bias``
        says (Eqs. (2.72)-(2.74)). ``out`` is passed on to :meth:`relevance` (only given
        to heads that declare ``writes_into``). Returns the :class:`HeadRelevance` with
        ``output`` and ``target`` filled in.
        """
        scores = self.scores(x, config)
        if labels is None:
            labels = self.predicted(scores.detach().cpu().numpy())
        weights = config.tensor(self.target_weights(labels, scores.shape[1]))
        if out is None:
            hr = self.relevance(x, weights, scores, config)
        else:
            hr = self.relevance(x, weights, scores, config, out=out)
        hr.output = (weights * scores).sum(dim=1)
        hr.target = np.asarray(labels)
        return self.spread_bias(hr, x, weights, config)

    def spread_bias(self, hr: HeadRelevance, x, weights, config: RuleConfig) -> HeadRelevance:
        """Move the bias relevance onto the inputs: ``"uniform"`` (Eq. (2.73)) or ``"weighted"`` (Eq. (2.74))."""
        if config.bias == "keep":
            return hr
        r, rb = hr.relevance, hr.bias
        if config.bias == "uniform":
            # reshaped so that n-D relevance (e.g. torch nets on images) broadcasts per sample
            share = (rb / r[0].numel()).reshape(-1, *([1] * (r.ndim - 1)))
        elif config.bias == "weighted":
            share = rb[:, None] * self.bias_weights(x, weights, config)
        else:
            raise ValueError(f"bias must be 'keep', 'uniform' or 'weighted', got {config.bias!r}")
        hr.relevance = r + share
        hr.bias = torch.zeros_like(rb)
        if hr.relevance_sum is not None:
            hr.relevance_sum = hr.relevance_sum + rb
        return hr

    def bias_weights(self, x: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> torch.Tensor:
        """Shares ``v_d`` (rows summing to 1) for ``bias="weighted"`` (Eq. (2.74))."""
        raise TypeError(
            f"bias='weighted' needs a linear projection w of the input (Eq. (2.74)), which "
            f"{type(self.step).__name__} does not have; use bias='keep' or 'uniform'."
        )


def _class_positions(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    def unknown(label):
        return ValueError(
            f"unknown target label {label!r}; the model's classes are {classes.tolist()}. target must be "
            "'predicted', 'true' (with y), one of the classes, or an array with one class per sample."
        )

    if _sortable(classes) and labels.dtype.kind in "biuf":
        pos = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
        ok = classes[pos] == labels
        if not np.all(ok):
            raise unknown(labels[~ok].tolist()[0])
        return pos
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    positions = []
    for lab in labels.tolist():
        try:
            positions.append(lookup[lab])
        except (KeyError, TypeError):  # TypeError: an unhashable label
            raise unknown(lab) from None
    return np.asarray(positions, dtype=int)


def _sortable(classes):
    return np.all(classes[:-1] <= classes[1:]) if classes.dtype.kind in "biuf" else False


def _output_indices(labels, n_outputs):
    try:
        idx = labels.astype(int)
    except (TypeError, ValueError):
        raise ValueError(f"a regressor's target must be an output index, got {labels[0]!r}") from None
    if not np.array_equal(idx, labels) or np.any(idx < 0) or np.any(idx >= n_outputs):
        raise ValueError(f"target output index must be an integer in [0, {n_outputs}), got {labels.tolist()[:5]}")
    return idx


# -- the registry --------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    fitted: Callable[[object], bool]
    unfitted: Callable[[object], bool]
    factory: Callable[[object], object]
    label: str


_REGISTRY: list[_Entry] = []


def register(match, *, name: str | None = None, unfitted=None):
    """Class decorator registering a propagator factory.

    Parameters
    ----------
    match : type, tuple of types, or callable
        Estimator classes the propagator handles, or a predicate ``step -> bool`` on
        the fitted step.
    name : str, optional
        Human-readable description used in error messages listing what is supported.
    unfitted : callable, optional
        Predicate ``step -> bool`` on the *unfitted* step, used to refuse an unsupported
        pipeline before anything is trained (:func:`check_supported`). Defaults to the
        class test for ``match`` given as types, and to ``match`` itself for a predicate
        (pass ``unfitted`` when ``match`` looks at fitted attributes).

    Examples
    --------
    >>> from sklrp.propagators import register, Propagator
    >>> class MyStep: pass
    >>> @register(MyStep)
    ... class MyPropagator(Propagator):
    ...     pass
    """

    if isinstance(match, type) or (isinstance(match, tuple) and all(isinstance(t, type) for t in match)):
        types = match if isinstance(match, tuple) else (match,)

        def predicate(step, _types=types):
            return type(step) in _types

        label = name or ", ".join(t.__name__ for t in types)
    else:
        predicate = match
        label = name or getattr(match, "__name__", repr(match))

    def decorator(factory):
        # later registrations win, so users can override built-in propagators
        _REGISTRY.insert(0, _Entry(predicate, unfitted or predicate, factory, label))
        return factory

    return decorator


def supported_steps() -> list[str]:
    """Names of the estimator types sklrp has propagators for."""
    _load_builtin_propagators()
    return sorted({entry.label for entry in _REGISTRY})


def _unsupported(step) -> TypeError:
    return TypeError(
        f"sklrp cannot explain a {type(step).__name__} step: no propagator is registered for it. "
        f"Supported: {', '.join(supported_steps())}. To add one, see sklrp.propagators.register."
    )


def propagator_for(step):
    """Return the propagator (or head) for one fitted pipeline step.

    Raises
    ------
    TypeError
        If no propagator is registered for ``type(step)``; the message names the
        class and lists what is supported.
    """
    _load_builtin_propagators()
    for entry in _REGISTRY:
        if entry.fitted(step):
            return entry.factory(step)
    raise _unsupported(step)


def is_supported(step) -> bool:
    """Whether a (fitted or unfitted) estimator step has a registered propagator."""
    _load_builtin_propagators()
    return any(entry.unfitted(step) or entry.fitted(step) for entry in _REGISTRY)


def input_adapter_for(estimator):
    """The :class:`InputAdapter` class of the first step of a (fitted or unfitted) estimator, or None."""
    _load_builtin_propagators()
    first = next(_unwrap(estimator))
    for entry in _REGISTRY:
        if entry.unfitted(first) or entry.fitted(first):
            factory = entry.factory
            return factory if isinstance(factory, type) and issubclass(factory, InputAdapter) else None
    return None


def check_supported(estimator) -> None:
    """Refuse an estimator or pipeline with an unsupported step, before anything is fitted.

    Walks the steps as :func:`build_chain` would and checks each against the registry's
    ``unfitted`` predicates, so that ``LRPTransformer.fit`` fails in milliseconds instead
    of after training the model.

    Raises
    ------
    TypeError
        Naming the first unsupported step and listing what is supported.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.propagators import check_supported
    >>> check_supported(make_pipeline(StandardScaler(), LogisticRegression()))
    """
    for step in _unwrap(estimator):
        if not is_supported(step):
            raise _unsupported(step)


def _unwrap(estimator):
    """Yield the elementary steps of (nested, frozen) pipelines in forward order."""
    inner = getattr(estimator, "estimator", None)
    if type(estimator).__name__ == "FrozenEstimator" and inner is not None:
        yield from _unwrap(inner)
    elif isinstance(estimator, Pipeline):
        for _, step in estimator.steps:
            if step is None or (isinstance(step, str) and step == "passthrough"):
                continue
            yield from _unwrap(step)
    else:
        yield estimator


def build_chain(estimator) -> tuple[list[Propagator], Head]:
    """Propagators for every step of a fitted estimator or pipeline, and its head.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.propagators import build_chain
    >>> X, y = np.random.RandomState(0).randn(20, 3), np.arange(20) % 2
    >>> steps, head = build_chain(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y))
    >>> [type(s).__name__ for s in steps], type(head).__name__
    (['StandardScalerPropagator'], 'LinearModelHead')
    """
    steps = list(_unwrap(estimator))
    for step in (s for s in steps if hasattr(s, "fit") and hasattr(s, "get_params")):
        # explaining an unfitted step would silently use garbage parameters
        check_is_fitted(step, msg=f"This {type(step).__name__} instance is not fitted yet; "
                        "sklrp can only explain fitted models (fit it, or pass it unfrozen so "
                        "LRPTransformer.fit fits it).")
    props = [propagator_for(s) for s in steps]
    *body, head = props
    if not isinstance(head, Head):
        raise TypeError(
            f"the last step of the explained model must be a predictor (classifier or regressor), "
            f"got {type(steps[-1]).__name__}"
        )
    for i, (s, p) in enumerate(zip(steps[:-1], body)):
        if isinstance(p, Head):
            raise TypeError(f"{type(s).__name__} can only be the last step of an explained pipeline")
        if p.raw_input and i > 0:
            raise TypeError(f"{type(s).__name__} takes raw samples and can only be the first step of an "
                            "explained pipeline")
    if isinstance(head, InputAdapter):
        raise TypeError(f"{type(steps[-1]).__name__} takes raw samples; it cannot be the explained model")
    return body, head


_LOADED = False


def _load_builtin_propagators():
    # importing the propagator modules registers them; done lazily to avoid import cycles
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for module in ("linear", "svm", "bow", "nn", "tabular"):
        try:
            importlib.import_module(f"sklrp.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sklrp.{module}":
                raise

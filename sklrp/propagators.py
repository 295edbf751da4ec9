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
from typing import Callable

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .rules import LayerRelevance, Rule

__all__ = [
    "Propagator",
    "Head",
    "HeadRelevance",
    "RuleConfig",
    "register",
    "propagator_for",
    "build_chain",
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
    quadrature nodes per sample). ``dtype`` and ``device`` are
    the torch settings all tensors of one explanation use; ``bias`` is the bias mode
    of Eqs. (2.72)-(2.74); ``batch_size`` bounds the samples per batch.
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
    batch_size: int = 1024
    bias: str = "keep"

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
    and :meth:`backward`. ``n_features_in`` / ``n_features_out`` are used to check
    that adjacent steps fit together.
    """

    def __init__(self, step):
        self.step = step

    def temporaries_per_row(self):
        """Elements of temporary memory per sample when writing into the result (``writes_into``)."""
        return None

    def forward(self, x: torch.Tensor, config: RuleConfig) -> torch.Tensor:  # pragma: no cover
        """Replay ``step.transform`` on a torch batch."""
        raise NotImplementedError

    def backward(self, x: torch.Tensor, relevance: torch.Tensor, config: RuleConfig) -> LayerRelevance:
        """Map relevance at the step's output back to its input ``x``."""
        raise NotImplementedError  # pragma: no cover


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
    """

    relevance: torch.Tensor
    bias: torch.Tensor
    extras: dict = field(default_factory=dict)
    relevance_sum: torch.Tensor | None = None
    remainder: torch.Tensor | None = None


class Head:
    """The model at the end of a chain: the function whose output is explained.

    The explained output of sample ``n`` is ``sum_k weights[n, k] * scores[n, k]``
    where ``scores`` are the columns of the model's decision function and
    ``weights`` encode the target (one-hot for multi-class, +-1 for binary, the
    pairwise combination for one-vs-one SVMs, ...).

    Two optional capabilities let a memory-bound head skip whole passes over the data
    when it is the only step of the chain: ``scores_propagate_nonfinite = True`` says
    that a NaN or inf in ``x`` always reaches ``scores`` (so the input check can look at
    the scores), and ``writes_into = True`` says that :meth:`relevance` accepts
    ``out=``, a preallocated tensor shaped like ``x`` to write the relevance into. Such a
    head keeps only ``(rows, n_outputs)`` temporaries (:meth:`temporaries_per_row`), so
    it takes batches of ``batch_size * n_features / n_outputs`` rows: the memory of one
    ordinary batch, far fewer per-batch overheads.

    The default target handling covers estimators with ``classes_`` whose score
    columns are ``decision_function``'s (one column for binary problems, positive
    for ``classes_[1]``; one column per class otherwise), and regressors whose
    columns are the outputs.
    """

    scores_propagate_nonfinite = False
    writes_into = False

    def __init__(self, step):
        self.step = step

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
        """Decompose ``(weights * scores).sum(1)`` onto the head's input ``x``."""
        raise NotImplementedError

    def bias_weights(self, x: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> torch.Tensor:
        """Shares ``v_d`` (rows summing to 1) for ``bias="weighted"`` (Eq. (2.74))."""
        raise TypeError(
            f"bias='weighted' needs a linear projection w of the input (Eq. (2.74)), which "
            f"{type(self.step).__name__} does not have; use bias='keep' or 'uniform'."
        )


def _class_positions(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(classes, labels) if _sortable(classes) else None
    if pos is None:
        lookup = {c: i for i, c in enumerate(classes.tolist())}
        bad = [lab for lab in labels.tolist() if lab not in lookup]
        if bad:
            raise ValueError(f"unknown target label {bad[0]!r}; the model's classes are {classes.tolist()}")
        return np.array([lookup[lab] for lab in labels.tolist()], dtype=int)
    pos = np.clip(pos, 0, len(classes) - 1)
    ok = classes[pos] == labels
    if not np.all(ok):
        bad = labels[~ok].tolist()[0]
        raise ValueError(f"unknown target label {bad!r}; the model's classes are {classes.tolist()}")
    return pos


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
_REGISTRY: list[tuple[Callable[[object], bool], Callable[[object], object], str]] = []


def register(match, *, name: str | None = None):
    """Class decorator registering a propagator factory.

    Parameters
    ----------
    match : type, tuple of types, or callable
        Estimator classes the propagator handles, or a predicate ``step -> bool``.
    name : str, optional
        Human-readable description used in error messages listing what is supported.

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
        _REGISTRY.insert(0, (predicate, factory, label))
        return factory

    return decorator


def supported_steps() -> list[str]:
    """Names of the estimator types sklrp has propagators for."""
    _load_builtin_propagators()
    return sorted({label for _, _, label in _REGISTRY})


def propagator_for(step):
    """Return the propagator (or head) for one fitted pipeline step.

    Raises
    ------
    TypeError
        If no propagator is registered for ``type(step)``; the message names the
        class and lists what is supported.
    """
    _load_builtin_propagators()
    for predicate, factory, _ in _REGISTRY:
        if predicate(step):
            return factory(step)
    raise TypeError(
        f"sklrp cannot explain a {type(step).__name__} step: no propagator is registered for it. "
        f"Supported: {', '.join(supported_steps())}."
    )


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
    for s, p in zip(steps[:-1], body):
        if isinstance(p, Head):
            raise TypeError(f"{type(s).__name__} can only be the last step of an explained pipeline")
    return body, head


_LOADED = False


def _load_builtin_propagators():
    # importing the propagator modules registers them; done lazily to avoid import cycles
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for module in ("linear", "svm", "bow", "nn"):
        try:
            importlib.import_module(f"sklrp.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sklrp.{module}":
                raise

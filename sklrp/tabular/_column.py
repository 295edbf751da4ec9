"""``ColumnTransformer`` and ``FeatureUnion``: parallel transformers whose outputs are concatenated."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils.validation import check_is_fitted

from ..propagators import Head, InputAdapter, is_supported, propagator_for, register, supported_steps
from ..rules import LayerRelevance
from ._base import TabularAdapter, as_tensor, n_rows, sklearn_input

__all__ = ["ColumnTransformerPropagator", "FeatureUnionPropagator"]


def _flatten(step):
    """The elementary steps of a (nested) Pipeline in forward order; ``None``/"passthrough" steps skipped."""
    if isinstance(step, Pipeline):
        for _, s in step.steps:
            if s is None or (isinstance(s, str) and s == "passthrough"):
                continue
            yield from _flatten(s)
    else:
        yield step


def _is_str(value):
    return isinstance(value, str)


def _column_indices(step, columns):
    """Integer positions of a ColumnTransformer column selection among its input columns."""
    n = step.n_features_in_
    names = getattr(step, "feature_names_in_", None)
    lookup = {} if names is None else {name: i for i, name in enumerate(names)}

    def by_name(name):
        if name not in lookup:
            raise ValueError(f"column {name!r} of the ColumnTransformer is not among its input columns")
        return lookup[name]

    if _is_str(columns):
        return np.array([by_name(columns)])
    if isinstance(columns, slice) and (_is_str(columns.start) or _is_str(columns.stop)):
        start = 0 if columns.start is None else by_name(columns.start)
        stop = n if columns.stop is None else by_name(columns.stop) + 1  # label slices include the end
        return np.arange(start, stop)
    if isinstance(columns, numbers.Integral) and not isinstance(columns, bool):
        return np.arange(n)[[columns]]
    if isinstance(columns, slice):
        return np.arange(n)[columns]
    columns = list(columns)
    if columns and all(_is_str(c) for c in columns):
        return np.array([by_name(c) for c in columns], dtype=np.int64)
    arr = np.asarray(columns)
    if arr.dtype == bool:
        return np.flatnonzero(arr)
    return np.arange(n)[arr.astype(np.int64)] if arr.size else np.zeros(0, dtype=np.int64)


def _take(x, idx):
    """Columns ``idx`` of a batch, keeping its kind (DataFrame columns stay a DataFrame)."""
    if hasattr(x, "iloc"):
        return x.iloc[:, idx]
    return x[:, idx]


@dataclass
class _Branch:
    """One transformer of a ColumnTransformer/FeatureUnion: its steps, their propagators and positions."""

    name: str
    columns: np.ndarray | None  # input positions (None: all columns, FeatureUnion)
    outputs: slice | None  # output positions (None: after the previous branch, FeatureUnion)
    steps: list
    propagators: list


def _branch(owner, name, transformer, columns, outputs):
    steps = list(_flatten(transformer))
    props = []
    for s in steps:
        try:
            prop = propagator_for(s)
        except TypeError as exc:
            raise TypeError(f"{type(owner).__name__} transformer {name!r}: {exc}") from None
        if isinstance(prop, Head):
            raise TypeError(f"{type(owner).__name__} transformer {name!r}: {type(s).__name__} is a predictor; "
                            "only transformers can be explained inside it")
        props.append(prop)
    return _Branch(name, columns, outputs, steps, props)


def _check_inner(owner, transformers):
    """Before fitting: every transformer inside ``owner`` must have a propagator.

    Raises the ``TypeError`` itself, naming the transformer, so that
    :func:`sklrp.propagators.check_supported` does not blame the container.
    """
    for name, transformer in transformers:
        if isinstance(transformer, str):
            continue  # "drop" / "passthrough"
        for s in _flatten(transformer):
            if not is_supported(s):
                raise TypeError(
                    f"{type(owner).__name__} transformer {name!r}: sklrp cannot explain a {type(s).__name__} step: "
                    f"no propagator is registered for it. Supported: {', '.join(supported_steps())}."
                )
    return True


class _ParallelPropagator(TabularAdapter):
    """Backward pass shared by ColumnTransformer and FeatureUnion: every branch replayed and
    propagated on its own, the input relevance of all branches summed (Eq. (2.12))."""

    branches: list

    def needs_raw(self):
        # raw samples are needed when a transformer inside was fitted on non-numeric values
        return any(b.propagators[0].raw_input for b in self.branches)

    def _check_output(self, out):
        if not torch.isfinite(out).all():
            bad = torch.nonzero(~torch.isfinite(out).all(dim=0)).flatten().tolist()
            try:
                names = [str(v) for v in self.step.get_feature_names_out()[bad]]
            except (AttributeError, ValueError, IndexError, TypeError):
                names = [str(i) for i in bad]
            raise ValueError(
                f"the output of the {type(self.step).__name__} contains NaN or infinity in columns {names[:10]}; "
                "sklrp explains finite model inputs only. Impute missing values inside it (e.g. "
                "make_pipeline(SimpleImputer(), StandardScaler()) for numeric columns)."
            )
        return out

    def forward(self, x, config):
        out = as_tensor(self.step.transform(sklearn_input(self.step, x)), config, self.step)
        return self._check_output(out)

    def backward(self, x, relevance, config):
        x = sklearn_input(self.step, x)
        n = n_rows(x)
        if relevance.shape[0] != n:
            raise ValueError(f"relevance has {relevance.shape[0]} rows but the batch has {n}")
        r_in = relevance.new_zeros((n, self.step.n_features_in_))
        bias = relevance.new_zeros(n)
        start = 0
        for branch in self.branches:
            acts = [x if branch.columns is None else _take(x, branch.columns)]
            for s in branch.steps:
                acts.append(s.transform(acts[-1]))
            outputs = branch.outputs if branch.outputs is not None else slice(start, start + acts[-1].shape[1])
            start = outputs.stop
            r = relevance[:, outputs]
            for prop, a in zip(reversed(branch.propagators), reversed(acts[:-1])):
                step_input = a if isinstance(prop, InputAdapter) else as_tensor(a, config, prop.step, "input")
                lr = prop.backward(step_input, r, config)
                r, bias = lr.input, bias + lr.bias
            if branch.columns is None:
                r_in += r
            else:
                r_in.index_add_(1, torch.as_tensor(branch.columns, device=r_in.device), r)
        if start != relevance.shape[1] and all(b.outputs is None for b in self.branches):
            raise ValueError(f"the {type(self.step).__name__} produced {start} columns but relevance has "
                             f"{relevance.shape[1]}")
        return LayerRelevance(r_in, bias)


def _column_transformer_supported(step):
    return isinstance(step, ColumnTransformer) and _check_inner(step, [(n, t) for n, t, _ in step.transformers])


def _feature_union_supported(step):
    return isinstance(step, FeatureUnion) and _check_inner(step, step.transformer_list)


@register(ColumnTransformer, unfitted=_column_transformer_supported)
class ColumnTransformerPropagator(_ParallelPropagator):
    """``ColumnTransformer``: each transformer's relevance returns to the columns it reads.

    Each transformer (any supported step, a nested ``Pipeline`` of them, or
    ``"passthrough"``) is replayed on its columns and its output relevance is propagated
    back through its own steps with their own propagators and the configured rule;
    the input relevance of a column is the sum over the transformers that read it
    (Eq. (2.12)). ``"drop"`` columns, and columns no transformer reads
    (``remainder="drop"``), get exactly zero relevance. Relevance absorbed inside a
    transformer (a scaler's shift) goes to the bias, as everywhere.

    Accepts the raw batch (a DataFrame with string columns, an object array) as the
    first step of a chain, and float tensors otherwise. The forward pass is the fitted
    ``ColumnTransformer``'s own ``transform`` (sparse output densified); the backward
    pass replays each transformer once more on its columns. A NaN or infinity in the
    output (e.g. a numeric column with missing values and no imputer) is an error.

    Raises
    ------
    TypeError
        If a transformer inside it has no propagator; the message names the transformer
        and lists the supported steps.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.compose import make_column_transformer
    >>> from sklearn.preprocessing import OneHotEncoder
    >>> from sklrp.propagators import propagator_for, RuleConfig
    >>> from sklrp.rules import Z
    >>> X = np.array([[1.5, "a"], [2.0, "b"]], dtype=object)
    >>> ct = make_column_transformer((OneHotEncoder(), [1]), remainder="passthrough").fit(X)
    >>> prop = propagator_for(ct)
    >>> prop.forward(X, RuleConfig(Z()))
    tensor([[1.0000, 0.0000, 1.5000],
            [0.0000, 1.0000, 2.0000]], dtype=torch.float64)
    >>> R = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]], dtype=torch.float64)
    >>> prop.backward(X, R, RuleConfig(Z())).input
    tensor([[4., 3.],
            [4., 3.]], dtype=torch.float64)
    """

    def __init__(self, step):
        check_is_fitted(step, "transformers_")
        self.branches = []
        for name, transformer, columns in step.transformers_:
            outputs = step.output_indices_.get(name, slice(0, 0))
            if outputs.stop == outputs.start or (isinstance(transformer, str) and transformer == "drop"):
                continue
            self.branches.append(_branch(step, name, transformer, _column_indices(step, columns), outputs))
        super().__init__(step)


@register(FeatureUnion, unfitted=_feature_union_supported)
class FeatureUnionPropagator(_ParallelPropagator):
    """``FeatureUnion``: every transformer reads all columns; their input relevances add up (Eq. (2.12)).

    ``transformer_weights`` scale a transformer's output by a constant, through which
    relevance passes unchanged (a diagonal map without bias under the z-rule).
    Accepts the raw batch as the first step of a chain.
    """

    def __init__(self, step):
        self.branches = []
        for name, transformer in step.transformer_list:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            if isinstance(transformer, str) and transformer == "passthrough":
                raise TypeError(f"FeatureUnion transformer {name!r}: 'passthrough' is not supported by sklrp; use "
                                "FunctionTransformer() (the identity) instead")
            self.branches.append(_branch(step, name, transformer, None, None))
        super().__init__(step)

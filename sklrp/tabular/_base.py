"""Shared parts of the tabular propagators: routing relevance to source columns, raw batches.

Most tabular preprocessing steps are not linear maps of their input: an output column
is a function of one input column (one-hot and ordinal codes, bins, splines, imputed
values), of a fixed set of columns (polynomial products), or a copy (selectors). Such
a step has no weights for a rule to decompose; its relevance is *routed*: output
column ``j`` hands its relevance to its source columns ``i`` in fixed shares
``s_ij >= 0`` with ``sum_i s_ij = 1``,

    R_i = sum_j s_ij R_j,

which is exactly conservative. For a single source this is the identity of
element-wise layers (Eq. (2.37)) generalised to several outputs per input, i.e. the
routing of relevance through a concatenation (Eq. (2.41)) read backwards: the outputs
computed from one column give their relevance back to it. Outputs that are constant
(a polynomial's ``1`` column) have no source; their relevance is absorbed like a
bias (Eq. (2.16)). The configured rule is not used by these steps; it acts on the
linear layers around them.

Raw samples
-----------
Encoders, imputers and column transformers are :class:`sklrp.propagators.InputAdapter`
steps (:class:`TabularAdapter`): as the first step of a chain they receive the rows of
``X`` as the user passed them (a DataFrame with string columns and missing values, an
object array) and return a float tensor, and their relevance has one column per raw
column. A fitted step that saw only numbers also takes float tensors anywhere in a
chain: its ``raw_input`` is then ``False`` (set per instance), so
:func:`sklrp.propagators.build_chain` accepts it after the first step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from ..propagators import InputAdapter, Propagator
from ..rules import LayerRelevance

__all__ = ["Routing", "RoutingPropagator", "TabularAdapter"]


def sklearn_input(step, x):
    """``x`` as the fitted ``step`` expects it: numpy for tensors, a DataFrame if it was fitted on one."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    names = getattr(step, "feature_names_in_", None)
    if names is not None and isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == len(names):
        import pandas as pd

        x = pd.DataFrame(x, columns=names)
    return x


def n_rows(x) -> int:
    """Number of samples of a tensor, array or DataFrame batch."""
    return int(x.shape[0])


def as_tensor(out, config, step, what="output"):
    """A dense float tensor from a transformer's output (ndarray, sparse matrix or DataFrame).

    Raises a ``TypeError`` naming ``step`` when the values are not numeric.
    """
    if isinstance(out, torch.Tensor):
        return out.to(dtype=config.dtype, device=config.device)
    if sparse.issparse(out):
        out = out.toarray()
    try:
        if hasattr(out, "to_numpy"):  # pandas: nullable dtypes need an explicit NaN
            arr = out.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"the {what} of {type(step).__name__} is not numeric (e.g. strings); sklrp needs numbers after each "
            "step it explains. Encode categorical columns (OneHotEncoder, OrdinalEncoder), and keep steps that "
            "pass strings on (e.g. SimpleImputer(strategy='most_frequent')) together with their encoder in one "
            "Pipeline inside a ColumnTransformer."
        ) from None
    return config.tensor(arr)


@dataclass(frozen=True)
class Routing:
    """Fixed shares from output columns to input columns, as sparse triplets.

    Output ``out_idx[k]`` hands ``share[k]`` of its relevance to input ``in_idx[k]``;
    the shares of every output with a source sum to one. Outputs listed nowhere are
    constants: their relevance goes to the bias.

    Parameters
    ----------
    out_idx, in_idx : ndarray of int
    share : ndarray of float
    n_in, n_out : int
    """

    out_idx: np.ndarray
    in_idx: np.ndarray
    share: np.ndarray
    n_in: int
    n_out: int

    @classmethod
    def from_sources(cls, sources, n_in):
        """One source per output: ``sources[j]`` is the input of output ``j`` (``-1``: a constant)."""
        sources = np.asarray(sources, dtype=np.int64)
        out = np.flatnonzero(sources >= 0)
        return cls(out, sources[out], np.ones(out.size), int(n_in), int(sources.size))

    def constants(self):
        """Indices of the outputs without a source."""
        mask = np.ones(self.n_out, dtype=bool)
        mask[self.out_idx] = False
        return np.flatnonzero(mask)

    def propagate(self, relevance: torch.Tensor) -> LayerRelevance:
        """``R_i = sum_j s_ij R_j``; constants' relevance summed into the bias."""
        if relevance.ndim != 2 or relevance.shape[1] != self.n_out:
            raise ValueError(f"relevance must have shape (n_samples, {self.n_out}), got {tuple(relevance.shape)}")
        dev = relevance.device
        out_idx = torch.as_tensor(self.out_idx, device=dev)
        msgs = relevance.index_select(1, out_idx)
        if not np.all(self.share == 1.0):
            msgs = msgs * torch.as_tensor(self.share, dtype=relevance.dtype, device=dev)
        r_in = relevance.new_zeros((relevance.shape[0], self.n_in))
        r_in.index_add_(1, torch.as_tensor(self.in_idx, device=dev), msgs)
        const = self.constants()
        if const.size:
            bias = relevance.index_select(1, torch.as_tensor(const, device=dev)).sum(dim=1)
        else:
            bias = relevance.new_zeros(relevance.shape[0])
        return LayerRelevance(r_in, bias)


def numeric_kind(values) -> bool:
    """Whether an array (or every array of a list) holds numbers."""
    if isinstance(values, (list, tuple)):
        return all(numeric_kind(v) for v in values)
    return np.asarray(values).dtype.kind in "biuf"


class TabularAdapter(InputAdapter):
    """A tabular step that takes the raw samples as the first step of a chain (and tensors elsewhere).

    ``raw_input`` is set per fitted instance by :meth:`needs_raw`: True when the step was
    fitted on non-numeric values (then it can only be the first step: nothing but
    numbers flows between steps), False when it saw only numbers (then it takes float
    tensors wherever it stands, and the raw rows when it is first).
    """

    def __init__(self, step):
        super().__init__(step)
        self.raw_input = self.needs_raw()

    def needs_raw(self) -> bool:
        """Whether the fitted step needs the raw samples (it was fitted on non-numeric values)."""
        return True

    @classmethod
    def check_raw(cls, X):
        """A 2-D table: a DataFrame is kept as is, array-likes become numpy (object dtype for mixed lists)."""
        if hasattr(X, "iloc") and hasattr(X, "columns"):
            return X
        if sparse.issparse(X):
            X = X.tocsr()
        else:
            arr = np.asarray(X)
            if arr.dtype.kind in "US" and not isinstance(X, np.ndarray):
                arr = np.asarray(X, dtype=object)  # keep the numbers of mixed rows numbers
            X = arr
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D table (n_samples, n_columns) or a DataFrame, got an array of shape "
                             f"{X.shape}")
        return X

    def check_input(self, X):
        X = self.check_raw(X)
        n = self.n_columns()
        if X.shape[1] != n:
            raise ValueError(f"X has {X.shape[1]} columns, but the {type(self.step).__name__} was fitted on {n}")
        return X

    def n_rows(self, X) -> int:
        return n_rows(X)

    def n_columns(self) -> int:
        return int(self.step.n_features_in_)

    def feature_names(self):
        names = getattr(self.step, "feature_names_in_", None)
        return None if names is None else np.asarray(names, dtype=object)


class RoutingPropagator(Propagator):
    """A step whose relevance is routed to source columns by fixed shares (see :class:`Routing`).

    Subclasses implement :meth:`routing`. The forward pass replays the fitted step's own
    ``transform`` (on the host; sparse output is densified), so it reproduces exactly
    what the model saw.
    """

    def routing(self) -> Routing:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def _routing(self):
        cached = getattr(self, "_routing_cache", None)
        if cached is None:
            cached = self._routing_cache = self.routing()
        return cached

    def forward(self, x, config):
        return as_tensor(self.step.transform(sklearn_input(self.step, x)), config, self.step)

    def backward(self, x, relevance, config):
        routing = self._routing()
        if relevance.shape[0] != n_rows(x):
            raise ValueError(f"relevance has {relevance.shape[0]} rows but the batch has {n_rows(x)}")
        return routing.propagate(relevance)

"""Dask collections: explanations and perturbation analyses computed block by block, lazily.

:meth:`sklrp.LRPTransformer.explain` / :meth:`~sklrp.LRPTransformer.transform`,
:func:`sklrp.aopc_score` and :func:`sklrp.perturbation_curve` hand a Dask array or Dask
DataFrame to this module. Every block of samples is explained by the in-memory code path
on a worker (the same :class:`~sklrp.chain.Chain`, the same batches inside a block); the
results are lazy Dask collections, and nothing is computed until you ask (apart from the
first sample, read on the spot to check the input against the model, and, for the AOPC,
the per-feature statistics a data-dependent perturbation needs).

Layout. LRP explains whole samples, so a block holds whole samples: Dask arrays are
chunked along the first (sample) axis only. A Dask array chunked along its feature axes is
rechunked into one chunk per row block, with a :class:`dask.array.PerformanceWarning`
(rechunking moves every element between workers once). Dask DataFrames are explained
partition by partition (pandas frames, so feature-name checks and input adapters see what
they see in memory); their partition lengths are unknown to Dask, and so are the row chunks
of the results.

Shipping. The fitted explainer (or the evaluated model) is one node of the task graph:
it is serialised once per graph and sent once to each worker that needs it, never pickled
into every task.

Equality with the in-memory results. Each block runs the in-memory code, so per-sample
results are the in-memory ones: identical when the row chunks are multiples of
``batch_size`` (the batches are then the same), otherwise equal to rounding (BLAS
evaluates kernels and products of differently shaped batches in a different order;
differences of ~1e-15 were seen with RBF SVMs). The AOPC is Eq. (3.7) evaluated by
:func:`sklrp.evaluation.aopc_from_curves` on the mean perturbation curve, which block sums
give without gathering the ``(n_samples, L + 1)`` curves: the same value up to rounding.

Randomness. Random perturbations and random orderings draw from one stream per block,
seeded by :func:`block_seeds` from ``random_state``: results are reproducible for equal
``random_state`` and row chunks, and equal to the in-memory function run on each block with
that block's seed, but not to one in-memory run over all samples (which draws from a single
stream in sample order; a distributed computation has no such order).

Why one module: the block-wise twins of ``explain``, ``perturbation_curve`` and
``aopc_score`` share one way of splitting rows, shipping the fitted model once and
reassembling fields; spreading them over modules would repeat that machinery.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import operator
import sys
import uuid
import warnings

import numpy as np
from sklearn.utils import check_random_state

from . import _blockwise
from .evaluation.perturbations import Perturbation
from .explanation import Explanation

__all__ = [
    "is_dask_collection",
    "explain",
    "perturbation_curve",
    "aopc_score",
    "block_seeds",
    "compute",
    "persist",
    "spray_preprocess",
]


def is_dask_collection(obj) -> bool:
    """Whether ``obj`` is a Dask collection (array, DataFrame, ...), without importing Dask.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.dask import is_dask_collection
    >>> is_dask_collection(np.zeros(3))
    False
    """
    return _blockwise.is_lazy(obj)


# -- the layout of the samples ----------------------------------------------------------------
@dataclasses.dataclass
class _Rows:
    """Samples as row blocks: one ``Delayed`` per block (ndarray or pandas frame) and its length."""

    parts: list
    lengths: tuple  # int per block, or nan where Dask does not know it (DataFrame partitions)

    @property
    def known(self) -> bool:
        return not any(math.isnan(n) for n in self.lengths)

    @property
    def n_samples(self) -> float:
        return sum(self.lengths) if self.known else math.nan


def _is_frame(obj) -> bool:
    if "dask.dataframe" not in sys.modules:
        return False
    import dask.dataframe as dd

    return isinstance(obj, (dd.DataFrame, dd.Series))


def _whole_samples(X, name):
    """A Dask array chunked along its first axis only (rechunked, with a warning, when it is not)."""
    import dask
    import dask.array as da
    from dask.array import PerformanceWarning

    if any(math.isnan(s) for s in X.shape):
        raise ValueError(
            f"{name} is a Dask array of unknown shape {X.shape} (chunk sizes unknown, e.g. after boolean "
            f"indexing or DataFrame.values); call {name}.compute_chunk_sizes() first (one pass over the data), "
            "or pass the Dask DataFrame itself"
        )
    if X.ndim < 2:
        raise ValueError(
            f"{name} must have shape (n_samples, n_features, ...), got a Dask array of shape {X.shape}; "
            f"reshape a single sample with {name}.reshape(1, -1) or a single feature with {name}.reshape(-1, 1)"
        )
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric Dask array, got dtype {X.dtype}")
    if all(nb == 1 for nb in X.numblocks[1:]):
        return X
    itemsize = max(X.dtype.itemsize, 8)  # explained in float64
    sample_bytes = int(np.prod(X.shape[1:])) * itemsize
    limit = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
    if sample_bytes > limit:
        raise ValueError(
            f"{name} is chunked along its feature axes (chunks {X.chunks[1:]}) and one sample alone "
            f"({dask.utils.format_bytes(sample_bytes)}) is larger than Dask's array.chunk-size "
            f"({dask.utils.format_bytes(limit)}); LRP explains whole samples, so a block must hold whole samples. "
            f"Chunk {name} along its first axis only, or raise array.chunk-size (dask.config.set)."
        )
    rows = max(X.chunks[0])
    target = {i: -1 for i in range(1, X.ndim)}
    target[0] = X.chunks[0] if rows * sample_bytes <= limit else max(1, limit // sample_bytes)
    warnings.warn(
        f"{name} is chunked along its feature axes (chunks {X.chunks[1:]}); LRP explains whole samples, so "
        f"sklrp rechunks it into one chunk per row block, which moves every element between workers once. "
        f"Chunk {name} along its first axis only, e.g. dask.array.from_array(X, chunks=(rows, -1)).",
        PerformanceWarning,
        stacklevel=5,  # the caller of explain / aopc_score
    )
    return da.rechunk(X, target)


def _rows(X, name="X") -> _Rows:
    """The row blocks of a Dask array or DataFrame (a clear error for anything else)."""
    import dask.array as da

    if isinstance(X, da.Array):
        X = _whole_samples(X, name)
        parts = list(X.to_delayed().ravel())
        return _Rows(parts, tuple(X.chunks[0]))
    if _is_frame(X):
        import dask.dataframe as dd

        if isinstance(X, dd.Series):
            raise ValueError(
                f"{name} is a Dask Series; pass a DataFrame of the features (e.g. ddf[['{X.name}']]), "
                "with one column per feature"
            )
        return _Rows(list(X.to_delayed()), (math.nan,) * X.npartitions)
    raise TypeError(
        f"{name} is a Dask collection of type {type(X).__name__}; sklrp explains Dask arrays (chunked along "
        "samples) and Dask DataFrames. Convert it, e.g. dask.array.from_delayed or dask.bag.to_dataframe."
    )


def _per_block(obj, rows: _Rows, name, sample_ndim=0):
    """``obj`` split into the row blocks of ``rows``: a list with one item (or ``Delayed``) per block.

    Scalars and strings (``target="predicted"``, a class label) go to every block unchanged;
    per-sample arrays (numpy, Dask arrays, Dask Series/DataFrames) are cut like the samples.
    """
    import dask.array as da

    nb = len(rows.parts)
    if _is_scalar(obj):
        return [obj] * nb
    if _is_frame(obj):
        if obj.npartitions != nb:
            raise ValueError(
                f"{name} is a Dask {type(obj).__name__} with {obj.npartitions} partitions but X has {nb} row blocks; "
                f"partition {name} like X (e.g. take it from the same DataFrame)"
            )
        return list(obj.to_delayed())
    if is_dask_collection(obj) and not isinstance(obj, da.Array):
        raise TypeError(f"{name} must be an array, a Dask array or a Dask Series, got {type(obj).__name__}")
    if not isinstance(obj, da.Array):
        arr = np.asarray(obj)
        if not rows.known:
            raise ValueError(
                f"X is a Dask DataFrame (partition lengths unknown), so {name} must be a Dask Series or array "
                f"partitioned like X (e.g. ddf['label'], or the output of an explanation of X), not an in-memory "
                f"{type(obj).__name__}"
            )
        if arr.ndim < 1 + sample_ndim or arr.shape[0] != rows.n_samples:
            raise ValueError(f"{name} has shape {arr.shape} but X has {int(rows.n_samples)} samples")
        cuts = np.cumsum((0,) + rows.lengths)
        return [arr[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    if any(math.isnan(s) for s in obj.shape[1:]):
        raise ValueError(f"{name} is a Dask array of unknown shape {obj.shape}; call compute_chunk_sizes() first")
    if obj.ndim < 1 + sample_ndim:
        raise ValueError(f"{name} must have shape (n_samples, ...), got a Dask array of shape {obj.shape}")
    tail = {i: -1 for i in range(1, obj.ndim)}
    if rows.known and not math.isnan(obj.shape[0]):
        if obj.shape[0] != rows.n_samples:
            raise ValueError(f"{name} has shape {obj.shape} but X has {int(rows.n_samples)} samples")
        if obj.chunks[0] != rows.lengths or any(nb_ > 1 for nb_ in obj.numblocks[1:]):
            obj = obj.rechunk({0: rows.lengths, **tail})
    else:
        if obj.numblocks[0] != nb:
            raise ValueError(
                f"{name} has {obj.numblocks[0]} row blocks but X has {nb} (and their lengths are not known); "
                f"compute {name} from X itself (e.g. explain(X).relevance) so that the blocks line up"
            )
        if any(nb_ > 1 for nb_ in obj.numblocks[1:]):
            obj = obj.rechunk(tail)
    return list(obj.to_delayed().ravel())


def _is_scalar(obj) -> bool:
    """None, a string or a single label: the same for every block (as opposed to per-sample arrays)."""
    return obj is None or isinstance(obj, str) or (not is_dask_collection(obj) and np.ndim(obj) == 0)


def _is_pandas(obj) -> bool:
    if "pandas" not in sys.modules:
        return False
    import pandas as pd

    return isinstance(obj, (pd.DataFrame, pd.Series))


def _labels(part):
    """A block of per-sample labels as numpy (pandas Series partitions included); scalars unchanged."""
    return part if _is_scalar(part) or not _is_pandas(part) else part.to_numpy()


def _same_length(X, part, name, index):
    if not _is_scalar(part) and len(part) != len(X):
        raise ValueError(f"row block {index}: {name} has {len(part)} samples but X has {len(X)}")


def _head(value):
    """The first sample of a block and the block's length (run where the block is: one row travels)."""
    return (value.iloc[:1] if _is_pandas(value) else value[:1]), len(value)


def _first_nonempty(rows: _Rows, *others):
    """``(X[:1], other[:1], ...)`` from the first non-empty block, computed now."""
    import dask

    head = dask.delayed(_head, pure=True)
    for i, part in enumerate(rows.parts):
        if rows.known and rows.lengths[i] == 0:
            continue
        per_sample = [blocks[i] for blocks in others if not _is_scalar(blocks[i])]
        (x, n), *heads = dask.compute(head(part), *[head(p) for p in per_sample])
        if n:
            heads = iter(heads)
            return [x] + [b[i] if _is_scalar(b[i]) else _labels(next(heads)[0]) for b in others]
    raise ValueError("X has no samples (every row block is empty)")


def _ship(obj):
    """``obj`` as one node of the task graph: serialised once per graph, not into every task."""
    import dask

    return dask.delayed(obj, name=f"sklrp-{type(obj).__name__}-{uuid.uuid4().hex}")


def _concatenate(blocks, lengths, tail, dtype):
    import dask.array as da

    parts = [da.from_delayed(b, shape=(n,) + tuple(tail), dtype=dtype) for b, n in zip(blocks, lengths)]
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


# -- explanations -------------------------------------------------------------------------------
def _per_sample_fields():
    """The fields of :class:`~sklrp.Explanation` with one entry per sample (all but the names and extras)."""
    return [f.name for f in dataclasses.fields(Explanation) if f.name not in ("feature_names", "extras")]


def _aligned(a):
    """``a`` in memory aligned like a fresh numpy array (16 bytes).

    Blocks deserialised from network frames may start at any 8-byte offset, and torch's
    vectorised kernels round differently on such memory (seen: 1e-15 in root points of RBF
    Taylor decompositions); a copy makes a block's numbers those of the in-memory run.
    """
    if isinstance(a, np.ndarray) and a.size and a.ctypes.data % 16:
        return np.array(a, order="C", copy=True)
    return a


def _as_read_in_memory(X):
    """A DataFrame partition with Dask's string columns as pandas reads them in memory.

    Dask stores string columns as pandas' ``string`` dtype whose missing values are ``pd.NA``,
    which scikit-learn's imputers and encoders do not take (``boolean value of NA is
    ambiguous``); as object columns with NaN for missing values they are what the model was
    fitted on.
    """
    if not _is_pandas(X) or X.ndim != 2:
        return X
    import pandas as pd

    na_strings = [c for c, t in X.dtypes.items() if isinstance(t, pd.StringDtype) and t.na_value is pd.NA]
    if not na_strings:
        return X
    X = X.copy(deep=False)
    for c in na_strings:
        X[c] = X[c].astype(object).where(X[c].notna(), np.nan)
    return X


def _explain_block(lrp, X, target, y, index):
    X, target, y = _as_read_in_memory(_aligned(X)), _labels(target), _labels(y)
    _same_length(X, target, "target", index)
    _same_length(X, y, "y", index)
    E = lrp.explain(X, target=target, y=y)  # in memory: the block is a numpy array or pandas frame
    out = {key: getattr(E, key) for key in _per_sample_fields()}
    out.update({("extras", key): value for key, value in E.extras.items()})
    return out


def explain(lrp, X, target=None, y=None) -> Explanation:
    """Explain a Dask array or DataFrame block by block: an :class:`~sklrp.Explanation` of Dask arrays.

    This is what :meth:`sklrp.LRPTransformer.explain` runs for Dask input. Every row block is
    explained on a worker by the in-memory code path; the fields of the result
    (``relevance``, ``bias_relevance``, ``output``, ``target``, ``residual``,
    ``taylor_remainder``, ``root_point`` and array ``extras``) are lazy Dask arrays with the
    row chunks of ``X`` (unknown lengths for a DataFrame). Compute them together, e.g. with
    :func:`compute` or ``dask.compute(E.relevance, E.output)``: each field computed on its
    own runs the explanation again. The first sample is explained on the spot, to check the
    input against the model with the in-memory messages and to learn the result's layout.

    Parameters
    ----------
    lrp : LRPTransformer
        A fitted explainer; it is shipped to the workers once per graph.
    X : dask.array.Array or dask.dataframe.DataFrame
        Samples; arrays are chunked along the first axis (see the module notes).
    target : {"predicted", "true"}, label or array-like, default=None
        As in :meth:`~sklrp.LRPTransformer.explain`; per-sample labels may be a numpy array,
        a Dask array or a Dask Series partitioned like ``X``.
    y : array-like, dask.array.Array or dask Series, default=None
        True labels, for ``target="true"``.

    Returns
    -------
    Explanation
        With Dask arrays as fields; ``extras`` that are not arrays are ``Delayed`` lists.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import sklrp
    >>> X = np.random.RandomState(0).randn(100, 3)
    >>> lrp = sklrp.LRPTransformer(LinearRegression(), rule="z").fit(X, X @ [1.0, 2.0, 3.0])
    >>> E = lrp.explain(da.from_array(X, chunks=(25, 3)))
    >>> E.relevance
    dask.array<concatenate, shape=(100, 3), dtype=float64, chunksize=(25, 3), chunktype=numpy.ndarray>
    >>> bool(np.allclose(E.relevance.compute(), lrp.explain(X).relevance))
    True
    """
    import dask

    lrp.get_chain()  # fitted, parameters valid: the in-memory errors, now
    target = lrp.target if target is None else target
    rows = _rows(X)
    targets = _per_block(target, rows, "target")
    ys = _per_block(y, rows, "y")
    x0, t0, y0 = _first_nonempty(rows, targets, ys)
    probe = lrp.explain(_as_read_in_memory(x0), target=t0, y=y0)  # checks X against the model; the result's layout
    shipped = copy.copy(lrp).set_params(verbose=False)  # no progress bars on the workers
    model = _ship(shipped)
    results = [
        dask.delayed(_explain_block, pure=True)(model, part, t, yy, i)
        for i, (part, t, yy) in enumerate(zip(rows.parts, targets, ys))
    ]
    get = dask.delayed(operator.getitem, pure=True)

    def field(key, like):
        like = np.asarray(like)
        return _concatenate([get(r, key) for r in results], rows.lengths, like.shape[1:], like.dtype)

    fields = {key: field(key, getattr(probe, key)) for key in _per_sample_fields() if getattr(probe, key) is not None}
    extras = {}
    for key, value in probe.extras.items():
        if isinstance(value, np.ndarray) and value.ndim >= 1:
            extras[key] = field(("extras", key), value)
        else:  # lists (e.g. tokens): one Delayed list over all blocks
            extras[key] = dask.delayed(_join_lists, pure=True)([get(r, ("extras", key)) for r in results])
    return Explanation(**fields, feature_names=probe.feature_names, extras=extras)


def _join_lists(parts):
    return [item for part in parts for item in part]


def compute(explanation, **kwargs) -> Explanation:
    """An :class:`~sklrp.Explanation` of Dask arrays computed into numpy, in one pass over the data.

    Parameters
    ----------
    explanation : Explanation
        As :meth:`sklrp.LRPTransformer.explain` returns for Dask input.
    **kwargs
        Passed to :func:`dask.compute` (e.g. ``scheduler=``).

    Returns
    -------
    Explanation

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import sklrp
    >>> X = np.random.RandomState(0).randn(40, 2)
    >>> lrp = sklrp.LRPTransformer(LinearRegression()).fit(X, X @ [1.0, -1.0])
    >>> E = sklrp.dask.compute(lrp.explain(da.from_array(X, chunks=(10, 2))))
    >>> type(E.relevance).__name__, E.output.shape
    ('ndarray', (40,))
    """
    import dask

    (values,) = dask.compute(_as_dict(explanation), **kwargs)
    return Explanation(**values)


def persist(explanation, **kwargs) -> Explanation:
    """An :class:`~sklrp.Explanation` whose Dask arrays are computed and kept in (cluster) memory.

    Use it before working with several fields, so that the explanation runs once.

    Parameters
    ----------
    explanation : Explanation
    **kwargs
        Passed to :func:`dask.persist`.

    Returns
    -------
    Explanation
    """
    import dask

    (values,) = dask.persist(_as_dict(explanation), **kwargs)
    return Explanation(**values)


def _as_dict(E):
    return {f.name: dict(E.extras) if f.name == "extras" else getattr(E, f.name) for f in dataclasses.fields(E)}


# -- perturbation analysis ----------------------------------------------------------------------
def block_seeds(random_state, n_blocks):
    """The seed of each row block's random stream in a block-wise perturbation analysis.

    Block ``i`` perturbs (and orders, for ``order="random"``) with
    ``numpy.random.RandomState(block_seeds(random_state, n_blocks)[i])``, exactly as the
    in-memory :func:`sklrp.evaluation.perturbation_curve` would with that seed.

    Parameters
    ----------
    random_state : int, RandomState or None
    n_blocks : int

    Returns
    -------
    ndarray of shape (n_blocks,) of int

    Examples
    --------
    >>> from sklrp.dask import block_seeds
    >>> bool((block_seeds(0, 3) == block_seeds(0, 3)).all())
    True
    """
    return check_random_state(random_state).randint(0, np.iinfo(np.int32).max, size=n_blocks)


class _OverAllSamples(Perturbation):
    """A perturbation bound to the value range of *all* samples, not of the block it runs on.

    A wrapper that follows the :class:`sklrp.evaluation.Perturbation` protocol: ``bind``
    hands the inner perturbation the range computed over the whole data set; everything else
    is the inner perturbation's.
    """

    def __init__(self, inner, value_range):
        self.inner, self.value_range = inner, value_range

    @property
    def random(self):
        return self.inner.random

    def bind(self, X, grid, value_range):
        self.inner.bind(X, grid, self.value_range)
        return self

    def set_order(self, order):
        self.inner.set_order(order)
        return self

    def region_scores(self, relevance):
        return self.inner.region_scores(relevance)

    def start(self, rows, rng):
        return self.inner.start(rows, rng)

    def step(self, state, rows, regions, rng):
        return self.inner.step(state, rows, regions, rng)

    def model_input(self, state):
        return self.inner.model_input(state)

    def initial_input(self, rows):
        return self.inner.initial_input(rows)


def _global_perturbation(perturbation, X, value_range, grid_args):
    """The perturbation every block uses: data-dependent parts (mean, value range) from all of ``X``.

    Computes the per-feature statistics it needs now (one pass over ``X``), as the in-memory
    functions take them from the whole ``X`` they are given.
    """
    import dask

    from .evaluation import BlurPerturbation, FunctionPerturbation, MeanPerturbation, RegionGrid
    from .evaluation.perturbations import make_perturbation, resolve_value_range

    grid = RegionGrid(X.shape[1:], **grid_args)
    if isinstance(perturbation, str) and perturbation == "auto":
        # the documented default of aopc_score: mean replacement for tabular samples, uniform noise for images
        perturbation = "mean" if len(grid.layout) == 1 else "uniform"
    g = make_perturbation(perturbation)
    flat = X.reshape(X.shape[0], -1) if X.ndim > 2 else X
    flat = flat.astype(np.float64)
    if type(g) is MeanPerturbation and g.mean is None:
        (mean,) = dask.compute(flat.mean(axis=0))
        return MeanPerturbation(mean=mean)
    if isinstance(g, (BlurPerturbation, FunctionPerturbation, MeanPerturbation)) or not isinstance(g, Perturbation):
        return g  # per sample (or its own mean): nothing taken from the other samples
    needs_data = value_range is None or isinstance(value_range, str)
    if needs_data:
        lo, hi = dask.compute(flat.min(axis=0), flat.max(axis=0))
        summary = np.stack([lo, hi])  # min and max over these two rows are those over all of X
    else:
        summary = np.zeros((1, int(np.prod(X.shape[1:]))))
    return _OverAllSamples(g, resolve_value_range(value_range, summary, grid))


def _curve_block(model, X, R, target, y, seed, index, kwargs, relative, changes, reduce):
    from .evaluation import perturbation_curve as curve

    target, y = _labels(target), _labels(y)
    _same_length(X, R, "relevance", index)
    _same_length(X, target, "target", index)
    _same_length(X, y, "y", index)
    X, R = _aligned(np.asarray(X)), _aligned(np.asarray(R))
    rng = np.random.RandomState(seed)
    out = curve(model, X, R, target=target, y=y, random_state=rng, return_prediction_changes=changes, **kwargs)
    if relative:
        base = curve(model, X, R, target=target, y=y, random_state=rng,
                     **dict(kwargs, order="random"))
        out = (out, base)
    if reduce:  # the sum over samples of each curve: the mean curve, and so Eq. (3.7), from block sums
        parts = out if relative else (out,)
        return tuple(c.sum(axis=0) for c in parts), len(X)
    return out


def _prepare_curves(model_or_fn, X, relevance, target, y, kwargs, random_state, changes):
    """Blocks, eager checks (the first sample's curve, in memory) and the per-block tasks' inputs."""
    import dask.array as da

    from .evaluation import perturbation_curve as curve

    if _is_frame(X):
        if isinstance(X, sys.modules["dask.dataframe"].Series):
            raise ValueError("X is a Dask Series; pass a DataFrame with one column per feature")
        X = X.to_dask_array()  # numeric frames; partition lengths stay unknown
    elif not isinstance(X, da.Array):
        if not isinstance(relevance, da.Array):
            raise TypeError(f"relevance is a Dask {type(relevance).__name__}; pass a Dask array (or numpy)")
        X = np.asarray(X)
        if X.ndim < 1 or any(math.isnan(s) for s in relevance.shape[:1]) or X.shape[0] != relevance.shape[0]:
            raise ValueError(f"relevance has shape {relevance.shape} but X has shape {X.shape}")
        X = da.from_array(X, chunks=(relevance.chunks[0],) + tuple(-1 for _ in X.shape[1:]))
    if any(math.isnan(s) for s in X.shape[1:]):
        raise ValueError(f"X is a Dask array of unknown shape {X.shape}; call X.compute_chunk_sizes() first")
    if any(math.isnan(s) for s in X.shape[:1]):  # a DataFrame's array: keep its (unknown) partitions
        if X.ndim < 2:
            raise ValueError(f"X must have shape (n_samples, n_features, ...), got {X.shape}")
        if any(nb > 1 for nb in X.numblocks[1:]):
            X = X.rechunk({i: -1 for i in range(1, X.ndim)})
        rows = _Rows(list(X.to_delayed().ravel()), (math.nan,) * X.numblocks[0])
    else:
        X = _whole_samples(X, "X")
        rows = _Rows(list(X.to_delayed().ravel()), tuple(X.chunks[0]))
    Rs = _per_block(relevance, rows, "relevance", sample_ndim=1)
    targets, ys = _per_block(target, rows, "target"), _per_block(y, rows, "y")
    x0, r0, t0, y0 = _first_nonempty(rows, Rs, targets, ys)
    # the first sample in memory: every argument checked now, with the in-memory messages
    probe = curve(model_or_fn, np.asarray(x0), np.asarray(r0), target=t0, y=y0, random_state=0,
                  return_prediction_changes=changes, **kwargs)
    n_columns = (probe[0] if changes else probe).shape[1]
    grid_args = {k: kwargs[k] for k in ("region_size", "image_shape", "channel_axis")}
    kwargs = dict(kwargs, perturbation=_global_perturbation(kwargs["perturbation"], X, kwargs["value_range"],
                                                            grid_args))
    seeds = block_seeds(random_state, len(rows.parts))
    # the arguments (a mean or value range per feature) go to the workers once, like the model
    return rows, Rs, targets, ys, seeds, _ship(kwargs), n_columns


def _curve_kwargs(region_size, n_steps, order, perturbation, n_repeats, value_range, image_shape, channel_axis,
                  batch_size):
    return dict(region_size=region_size, n_steps=n_steps, order=order, perturbation=perturbation,
                n_repeats=n_repeats, value_range=value_range, image_shape=image_shape,
                channel_axis=channel_axis, batch_size=batch_size)


def perturbation_curve(
    model_or_fn, X, relevance, *, target="predicted", y=None, region_size=1, n_steps=None, order="morf",
    perturbation="auto", n_repeats=1, value_range=None, image_shape=None, channel_axis=None,
    random_state=None, batch_size=1024, verbose=False, return_prediction_changes=False,
):
    """:func:`sklrp.evaluation.perturbation_curve` of Dask input: a Dask array of curves, block by block.

    Parameters are those of :func:`sklrp.evaluation.perturbation_curve`; ``X`` and
    ``relevance`` may be Dask arrays (``X`` also a numeric Dask DataFrame), chunked along
    samples; per-sample ``target``/``y`` as in :func:`explain`. The mean and value ranges of
    data-dependent perturbations are computed over all of ``X`` first (one pass, now).
    Random draws follow :func:`block_seeds`. ``verbose`` has no effect (watch the Dask
    dashboard or use ``dask.diagnostics.ProgressBar``).

    Returns
    -------
    curves : dask.array.Array of shape (n_samples, n_steps + 1)
    changes : dask.array.Array of shape (n_samples, n_steps + 1)
        Only with ``return_prediction_changes``.
    """
    import dask

    kwargs = _curve_kwargs(region_size, n_steps, order, perturbation, n_repeats, value_range, image_shape,
                           channel_axis, batch_size)
    rows, Rs, targets, ys, seeds, kwargs, n_columns = _prepare_curves(
        model_or_fn, X, relevance, target, y, kwargs, random_state, return_prediction_changes)
    model = _ship(model_or_fn)
    blocks = [
        dask.delayed(_curve_block, pure=True)(model, p, r, t, yy, int(s), i, kwargs, False,
                                              return_prediction_changes, False)
        for i, (p, r, t, yy, s) in enumerate(zip(rows.parts, Rs, targets, ys, seeds))
    ]
    if not return_prediction_changes:
        return _concatenate(blocks, rows.lengths, (n_columns,), np.float64)
    get = dask.delayed(operator.getitem, pure=True)
    return tuple(_concatenate([get(b, k) for b in blocks], rows.lengths, (n_columns,), np.float64)
                 for k in (0, 1))


def _combine_aopc(sums, cumulative):
    from .evaluation import aopc_from_curves

    lengths = {len(s[0][0]) for s in sums}
    if len(lengths) > 1:
        raise ValueError(
            f"the row blocks' perturbation curves have different lengths {sorted(lengths)} (samples with fewer "
            "regions); pass n_steps"
        )
    n = sum(count for _, count in sums)
    means = [sum(s[0][k] for s in sums) / n for k in range(len(sums[0][0]))]
    result = aopc_from_curves(means[0], cumulative=cumulative)  # Eq. (3.7) on the mean curve
    if len(means) > 1:
        result = result - aopc_from_curves(means[1], cumulative=cumulative)
    return np.asarray(result, dtype=np.float64)


def aopc_score(
    model_or_fn, X, relevance, *, target="predicted", y=None, region_size=1, n_steps=None, order="morf",
    perturbation="auto", n_repeats=1, value_range=None, image_shape=None, channel_axis=None, relative_to=None,
    cumulative=False, random_state=None, batch_size=1024, verbose=False,
):
    """:func:`sklrp.evaluation.aopc_score` of Dask input: a lazy 0-d Dask array (``float(...)`` computes it).

    Every row block computes its perturbation curves on a worker and returns their sum over
    samples; Eq. (3.7) is :func:`sklrp.evaluation.aopc_from_curves` of the mean curve, which
    equals the AOPC of all curves (it is linear in the curves). Parameters are those of
    :func:`sklrp.evaluation.aopc_score`; see :func:`perturbation_curve` for Dask input.

    Returns
    -------
    dask.array.Array
        Of shape ``()``, or ``(n_steps + 1,)`` with ``cumulative``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklrp.evaluation import aopc_score
    >>> w = np.array([1.0, 2.0, 3.0, 4.0])
    >>> X = da.ones((6, 4), chunks=(2, 4))
    >>> float(aopc_score(lambda X: X @ w, X, X * w, perturbation="flip", value_range=(-1, 1)))
    12.0
    """
    import dask
    import dask.array as da

    if relative_to not in (None, "random"):
        raise ValueError(f"relative_to must be None or 'random', got {relative_to!r}")
    kwargs = _curve_kwargs(region_size, n_steps, order, perturbation, n_repeats, value_range, image_shape,
                           channel_axis, batch_size)
    rows, Rs, targets, ys, seeds, kwargs, n_columns = _prepare_curves(
        model_or_fn, X, relevance, target, y, kwargs, random_state, False)
    model = _ship(model_or_fn)
    sums = [
        dask.delayed(_curve_block, pure=True)(model, p, r, t, yy, int(s), i, kwargs, relative_to == "random",
                                              False, True)
        for i, (p, r, t, yy, s) in enumerate(zip(rows.parts, Rs, targets, ys, seeds))
    ]
    result = dask.delayed(_combine_aopc, pure=True)(sums, cumulative)
    return da.from_delayed(result, shape=(n_columns,) if cumulative else (), dtype=np.float64)



# -- SpRAy ---------------------------------------------------------------------------------------
def _spray_block(block, preprocessing):
    from sklearn.utils import check_array

    from .spray._preprocess import preprocess

    block = check_array(np.asarray(block), allow_nd=True, ensure_min_samples=0,
                        dtype=[np.float64, np.float32], input_name="X")
    return preprocess(block, **preprocessing)


def spray_preprocess(X, **preprocessing):
    """SpRAy's per-map steps on a Dask array of maps, block by block on the workers.

    This is what :meth:`sklrp.SpRAy.fit` runs for Dask input: Algorithm 3, lines 6-8 (channel
    sum, optional low-pass, sum pooling, normalisation; Section 6.3) are computed for every
    row block on a worker, and the pooled rows are gathered into memory, where the
    neighbourhood graph and the spectrum (which couple all maps) are computed. Only the
    pooled maps travel: a million 64 x 64 maps pooled to 20 x 20 arrive as 1.6 GB of float32
    instead of 16 GB. The result equals the in-memory preprocessing (every step acts on one
    map at a time).

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features), (n_samples, H, W) or (n_samples, H, W, C)
        Relevance maps, chunked along the first axis (see the module notes).
    **preprocessing
        ``map_shape``, ``channel_axis``, ``smoothing_sigma``, ``pool_shape``, ``normalize``
        as in :class:`~sklrp.SpRAy`.

    Returns
    -------
    ndarray of shape (n_samples, n_pooled)
        float32 for float32 maps, float64 otherwise.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklrp import SpRAy
    >>> maps = np.random.RandomState(0).rand(200, 16, 16)
    >>> maps[:100, :4, :4] += 5.0  # half of the maps share a hot corner
    >>> spray = SpRAy(pool_shape=(8, 8), embedding=None, random_state=0)
    >>> labels = spray.fit(da.from_array(maps, chunks=(50, 16, 16))).labels_
    >>> bool(np.array_equal(labels, SpRAy(pool_shape=(8, 8), embedding=None, random_state=0).fit(maps).labels_))
    True
    """
    import dask
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(
            f"SpRAy takes Dask arrays of maps, got a Dask {type(X).__name__}; convert it with "
            "X.to_dask_array(lengths=True) (a DataFrame) or dask.array.from_delayed"
        )
    X = _whole_samples(X, "X")
    blocks = [dask.delayed(_spray_block, pure=True)(part, preprocessing) for part in X.to_delayed().ravel()]
    parts = dask.compute(*blocks)
    return np.concatenate(parts, axis=0)


# the in-memory entry points hand Dask input to these (sklrp._blockwise)
for _function in (explain, perturbation_curve, aopc_score, spray_preprocess):
    _blockwise.register(_function.__name__, _function)
del _function

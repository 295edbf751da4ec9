"""The chain: one fitted estimator as a sequence of propagators and a head (Algorithm 1).

This is the one execution seam of sklrp. :class:`Chain` is built from a fitted
estimator or pipeline; its :meth:`~Chain.forward` replays the steps, :meth:`~Chain.scores`
gives the score columns, :meth:`~Chain.target_weights` turns target labels into weights
over those columns, :meth:`~Chain.decompose` runs Algorithm 1 on one batch (forward pass,
decomposition of the explained output at the head, then every step backward), and
:meth:`~Chain.explain` does that batch by batch into an :class:`~sklrp.Explanation`.
:class:`sklrp.LRPTransformer`, the evaluation functions and the audit all call it; none
of them repeats any of it.

A chain holds no per-call state: every intermediate lives in local variables of the
call, so one chain may serve several threads at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import sparse
from sklearn.utils import assert_all_finite

from .explanation import Explanation
from .propagators import HeadRelevance, InputAdapter, RuleConfig, build_chain
from .rules import Epsilon

__all__ = ["Chain", "ChainRelevance", "resolve_target"]


@dataclass
class ChainRelevance:
    """The result of :meth:`Chain.decompose` for one batch (torch tensors, numpy ``target``).

    Attributes
    ----------
    relevance : torch.Tensor
        Relevance at the chain's input, shaped like the batch (``(n, n_columns)`` for raw input).
    bias : torch.Tensor of shape (n,)
        Relevance absorbed by biases along the chain.
    output : torch.Tensor of shape (n,)
        The explained score.
    target : ndarray of shape (n,)
        The explained labels.
    relevance_sum : torch.Tensor of shape (n,)
        ``relevance`` summed per sample.
    remainder : torch.Tensor of shape (n,) or None
        The head's Taylor remainder (:attr:`sklrp.propagators.HeadRelevance.remainder`).
    extras : dict
        The head's per-sample extras.
    """

    relevance: torch.Tensor
    bias: torch.Tensor
    output: torch.Tensor
    target: np.ndarray
    relevance_sum: torch.Tensor
    remainder: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


def resolve_target(target, y, n):
    """Target labels for ``n`` samples, or None when they depend on the scores (``"predicted"``).

    Parameters
    ----------
    target : {"predicted", "true"}, label or array-like
        ``"true"`` takes ``y``; a single label applies to every sample; an array gives
        one label per sample.
    y : array-like of shape (n,) or None
    n : int

    Returns
    -------
    ndarray of shape (n,) or None

    Examples
    --------
    >>> from sklrp.chain import resolve_target
    >>> resolve_target(2, None, 3)
    array([2, 2, 2])
    >>> resolve_target("predicted", None, 3) is None
    True
    """
    if isinstance(target, str) and target == "predicted":
        return None
    if isinstance(target, str) and target == "true":
        if y is None:
            raise ValueError("target='true' needs y: call explain(X, y=y) or fit_transform(X, y)")
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"y must have shape (n_samples,) = ({n},), got {y.shape}")
        return y
    arr = np.asarray(target)
    if arr.ndim == 0:
        if isinstance(target, float) and not np.isfinite(target):
            raise ValueError(f"target must be 'predicted', 'true', a class label or an array of labels, got {target!r}")
        return np.full(n, arr.item(), dtype=object if arr.dtype.kind in "USO" else arr.dtype)
    if arr.shape != (n,):
        raise ValueError(f"target array must have shape (n_samples,) = ({n},), got {arr.shape}")
    return arr


class Chain:
    """A fitted estimator as propagators and a head, with the operations of Algorithm 1.

    Parameters
    ----------
    estimator : estimator
        A fitted model, ``Pipeline`` (nested and frozen ones too) or ``FrozenEstimator``
        of one; every step must have a registered propagator
        (:func:`sklrp.propagators.supported_steps`).
    config : RuleConfig, default=None
        Rules, dtype and device; None means the epsilon rule in float64 on the CPU.

    Attributes
    ----------
    steps : list of Propagator
        The intermediate steps in forward order.
    head : Head
        The explained model.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.chain import Chain
    >>> from sklrp.propagators import RuleConfig
    >>> from sklrp.rules import Z
    >>> X, y = np.random.RandomState(0).randn(20, 3), np.arange(20) % 2
    >>> chain = Chain(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), RuleConfig(Z()))
    >>> E = chain.explain(X[:4])
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance, E.output))
    True
    """

    def __init__(self, estimator, config: RuleConfig | None = None):
        self.estimator = estimator
        self.steps, self.head = build_chain(estimator)
        self.config = RuleConfig(Epsilon()) if config is None else config

    def with_config(self, config: RuleConfig) -> Chain:
        """The same propagators under another configuration (no rebuild)."""
        other = object.__new__(Chain)
        other.estimator, other.steps, other.head, other.config = self.estimator, self.steps, self.head, config
        return other

    # -- what the chain takes and gives ---------------------------------------------
    @property
    def adapter(self) -> InputAdapter | None:
        """The first step when it takes raw samples (documents, mixed-type frames), else None."""
        return self.steps[0] if self.steps and isinstance(self.steps[0], InputAdapter) else None

    @property
    def accepts_nd(self) -> bool:
        """Whether samples may have more than one dimension (images)."""
        return (self.steps[0] if self.steps else self.head).accepts_nd

    @property
    def classes(self):
        """The explained classifier's classes, or None for regressors."""
        return self.head.classes

    def feature_names(self):
        """Names of the relevance columns when the chain knows them (raw-input adapters), else None."""
        adapter = self.adapter
        return None if adapter is None else adapter.feature_names()

    def n_samples(self, X) -> int:
        adapter = self.adapter
        return adapter.n_rows(X) if adapter is not None else len(X)

    def _rows(self, X, batch):
        adapter = self.adapter
        return adapter.rows(X, batch) if adapter is not None else self.config.tensor(X[batch])

    def _batches(self, n, rows):
        return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]

    def _batch_rows(self):
        adapter = self.adapter
        bs = self.config.batch_size
        return adapter.rows_per_batch(bs) if adapter is not None else bs

    # -- forward ------------------------------------------------------------------
    def prepare(self, X, y=None) -> None:
        """Give the head the training data it needs (root-point references); a no-op for most heads."""
        if not self.head.needs_reference:
            return
        n = self.n_samples(X)
        with torch.no_grad():
            parts = [self.forward(self._rows(X, b))[-1] for b in self._batches(n, self._batch_rows())]
        x = torch.cat(parts) if parts else self.config.tensor(np.zeros((0, 0)))
        self.head.prepare(x, y, self.config)

    def forward(self, x) -> list:
        """Activations ``[x, step_1(x), ..., step_L(...)]`` of one batch (the head's input last)."""
        acts = [x]
        for prop in self.steps:
            acts.append(prop.forward(acts[-1], self.config))
        return acts

    def scores(self, x) -> torch.Tensor:
        """Score columns ``(n, n_outputs)`` of one batch.

        Differentiable with respect to a tensor ``x`` that requires grad, wherever the steps
        stay in torch (used by sensitivity analysis, Eq. (3.1)).
        """
        return self.head.scores(self.forward(x)[-1], self.config)

    def score_columns(self, X, *, native=False) -> np.ndarray:
        """Score columns of all samples of ``X`` (numpy in, numpy out), batch by batch.

        ``native=True`` runs the chain in the dtype the model computes in by itself
        (:meth:`~sklrp.propagators.Head.native_dtype`, e.g. a float32 torch network) instead of
        the configured one: the model's own outputs, at its own cost (a float64 copy of a
        convolutional net costs 2-4x on a CPU). Perturbation analyses use it.
        """
        dtype = self.head.native_dtype() if native else None
        if dtype is not None and dtype != self.config.dtype:
            return self.with_config(replace(self.config, dtype=dtype)).score_columns(X)
        n = self.n_samples(X)
        with torch.no_grad():
            cols = [self.scores(self._rows(X, b)).detach().cpu().numpy() for b in self._batches(n, self._batch_rows())]
        return np.concatenate(cols).astype(np.float64).reshape(n, -1) if cols else np.zeros((0, 0))

    def predicted(self, scores: np.ndarray) -> np.ndarray:
        """Predicted labels for score columns (what ``target="predicted"`` explains)."""
        return self.head.predicted(scores)

    def target_weights(self, labels, n_outputs: int) -> np.ndarray:
        """Weights ``(n, n_outputs)`` over the score columns: the explained output is ``(weights * scores).sum(1)``."""
        return self.head.target_weights(np.asarray(labels), n_outputs)

    # -- Algorithm 1 ----------------------------------------------------------------
    def decompose(self, x, labels=None, *, out=None) -> ChainRelevance:
        """Algorithm 1 for one batch: forward, decompose the explained output, walk the steps backward.

        Parameters
        ----------
        x : torch.Tensor, or the raw batch for a chain with an input adapter
        labels : ndarray of shape (n,), default=None
            Target labels; None explains the predicted ones.
        out : torch.Tensor, default=None
            A buffer shaped like ``x`` that a lone head declaring ``writes_into`` may fill.

        Returns
        -------
        ChainRelevance
        """
        acts = self.forward(x)
        lone = not self.steps
        hr: HeadRelevance = self.head.decompose(
            acts[-1], labels, self.config, out=out if lone and self.head.writes_into else None)
        r, rb = hr.relevance, hr.bias
        for prop, a in zip(reversed(self.steps), reversed(acts[:-1])):
            step = prop.backward(a, r, self.config)
            r, rb = step.input, rb + step.bias
        if r is hr.relevance and hr.relevance_sum is not None:
            total = hr.relevance_sum
        else:
            total = r.reshape(r.shape[0], -1).sum(dim=1)
        return ChainRelevance(r, rb, hr.output, hr.target, total, hr.remainder, hr.extras)

    def explain(self, X, target="predicted", y=None, *, verbose=False) -> Explanation:
        """Explain every sample of ``X`` batch by batch.

        ``X`` must be validated by the caller (numeric arrays: finite values are checked
        here, per batch, while the batch is in cache).

        Parameters
        ----------
        X : ndarray, or raw samples for a chain with an input adapter
        target : {"predicted", "true"}, label or array-like, default="predicted"
        y : array-like of shape (n_samples,), default=None
        verbose : bool, default=False
            Show a progress bar over batches.

        Returns
        -------
        Explanation
        """
        cfg, head, adapter = self.config, self.head, self.adapter
        n = self.n_samples(X)
        all_labels = resolve_target(target, y, n)
        lone = not self.steps
        # A lone memory-bound head (a linear model) may write straight into the result array and let
        # its output stand in for the input check: each saves a full pass over X.
        write_into = lone and head.writes_into and cfg.device.type == "cpu" and cfg.dtype == torch.float64
        check_output_only = lone and head.scores_propagate_nonfinite
        rows = self._batch_rows()
        if write_into and head.temporaries_per_row():
            # the memory of one batch of batch_size x n_features, in far fewer (Python-bound) batches
            rows = max(rows, rows * int(np.prod(X.shape[1:])) // head.temporaries_per_row())
        if adapter is not None:
            shape = (n, adapter.n_columns())
        else:
            shape = X.shape
        # numpy's allocator asks the kernel for huge pages on large arrays; first-touch page faults
        # of a fresh (n, d) torch tensor used to cost more than the whole decision function.
        dense = not (adapter is not None and adapter.sparse_relevance)
        relevance = np.empty(shape, dtype=np.float64) if dense else []
        bias, output, total, remainder = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        targets, extras = [], {}
        batches = self._batches(n, rows)
        if verbose:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="LRP", unit="batch")
        with torch.no_grad():
            for batch in batches:
                x = self._rows(X, batch)
                if adapter is None and not check_output_only and not torch.isfinite(x.sum()):
                    # sklearn's own check, for its message (a finite sum that overflowed passes)
                    assert_all_finite(X[batch], input_name="X")
                buf = torch.from_numpy(relevance[batch]) if write_into else None
                part = self.decompose(x, None if all_labels is None else all_labels[batch], out=buf)
                self._check_finite(part, X, batch)
                r = part.relevance
                r_np = None
                if not (write_into and r is buf):
                    r_np = r.detach().reshape(r.shape[0], *shape[1:]).cpu().numpy()
                    if dense:
                        relevance[batch] = r_np
                    else:
                        relevance.append(sparse.csr_matrix(r_np))
                bias[batch] = part.bias.detach().cpu().numpy()
                output[batch] = part.output.detach().cpu().numpy()
                total[batch] = part.relevance_sum.detach().cpu().numpy()
                if part.remainder is not None:
                    remainder[batch] = part.remainder.detach().cpu().numpy()
                targets.append(np.asarray(part.target))
                items = dict(part.extras)
                if adapter is not None:
                    items.update(adapter.extras(x, relevance[batch] if r_np is None else r_np))
                for key, value in items.items():
                    if isinstance(value, torch.Tensor):
                        value = value.detach().cpu().numpy()
                    extras.setdefault(key, []).append(value)
        if not dense:
            relevance = sparse.vstack(relevance, format="csr") if relevance else sparse.csr_matrix(shape)
        extras = {k: (list(itertools.chain.from_iterable(parts)) if isinstance(parts[0], list)
                      else np.concatenate(parts)) for k, parts in extras.items()}
        return Explanation(
            relevance=relevance,
            bias_relevance=bias,
            output=output,
            target=np.concatenate(targets) if targets else np.empty(0),
            residual=output - total - bias,
            taylor_remainder=remainder,
            root_point=extras.pop("root_point", None),
            feature_names=self.feature_names(),
            extras=extras,
        )

    def _check_finite(self, part: ChainRelevance, X, batch):
        """Non-finite outputs or relevance are errors, never NaN relevance handed to the user."""
        if bool(torch.isfinite(part.output).all()) and bool(torch.isfinite(part.relevance_sum).all()):
            return
        if self.adapter is None:
            assert_all_finite(X[batch], input_name="X")  # the input's fault: sklearn's message
        bad = np.flatnonzero(~np.isfinite(part.output.detach().cpu().numpy()))
        what = "output" if bad.size else "relevance"
        if not bad.size:
            bad = np.flatnonzero(~np.isfinite(part.relevance_sum.detach().cpu().numpy()))
        first = (batch.start or 0) + int(bad[0])
        raise ValueError(
            f"the explained model's {what} is not finite for {bad.size} sample(s) (first: row {first}) although the "
            "input is: an intermediate value overflowed. Rescale the input (e.g. a StandardScaler in front of the "
            f"model) or use dtype='float64'. Estimator: {type(self.estimator).__name__}."
        )


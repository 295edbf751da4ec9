"""Propagators for linear models and linear preprocessing steps.

* Linear predictors (anything exposing ``coef_`` / ``intercept_``): the exact
  decomposition ``R_d = w_d x_d``, ``R_b = b`` of Eqs. (2.14)-(2.15).
* ``StandardScaler``, ``MinMaxScaler``, ``Normalizer``: element-wise affine maps
  decomposed as in Eqs. (2.48)-(2.54), the subtracted mean (or offset) acting as an
  absorbing bias.
* ``PCA`` / ``IncrementalPCA`` / ``TruncatedSVD``: dense linear maps (incl. mean and
  whitening) decomposed with the configured rule (Eqs. (2.10)-(2.28)).
* ``FunctionTransformer``: only when its function is element-wise (a unary numpy
  ufunc, ``func=None``, or a function marked with :func:`elementwise`); relevance
  passes unchanged as through an activation (Eq. (2.37)).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA, IncrementalPCA, TruncatedSVD
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, Normalizer, StandardScaler

from .propagators import Head, HeadRelevance, Propagator, register
from .rules import DenseMap, DiagonalMap, LayerRelevance

__all__ = [
    "LinearModelHead",
    "StandardScalerPropagator",
    "MinMaxScalerPropagator",
    "NormalizerPropagator",
    "PCAPropagator",
    "FunctionTransformerPropagator",
    "elementwise",
]


def _is_linear_predictor(step) -> bool:
    # libsvm models with a linear kernel also expose coef_; they belong to sklrp.svm
    return (
        hasattr(step, "coef_")
        and hasattr(step, "intercept_")
        and not hasattr(step, "support_vectors_")
        and (hasattr(step, "decision_function") or hasattr(step, "predict"))
    )


def _may_be_linear_predictor(step) -> bool:
    # before fitting there is no coef_: recognise scikit-learn's linear model families by class
    from sklearn.svm import LinearSVC, LinearSVR

    return _is_linear_predictor(step) or (
        (type(step).__module__.startswith("sklearn.linear_model") or isinstance(step, (LinearSVC, LinearSVR)))
        and (hasattr(step, "decision_function") or hasattr(step, "predict"))
    )


@register(_is_linear_predictor, unfitted=_may_be_linear_predictor,
          name="linear models with coef_/intercept_ (LogisticRegression, LinearSVC, SGDClassifier, "
               "RidgeClassifier, LinearRegression, Ridge, ...)")
class LinearModelHead(Head):
    """Exact LRP for a linear predictor ``f(x) = W x + b`` (Eqs. (2.14)-(2.15)).

    For target weights ``c`` over the score columns the explained output is
    ``c . f(x)`` and ``R_d = x_d (c W)_d``, ``R_b = c . b``: the decomposition is
    exact whatever the rule (the rule only matters for layers below).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> import sklrp
    >>> X, y = np.random.RandomState(0).randn(30, 4), np.arange(30) % 3
    >>> E = sklrp.LRPTransformer(LogisticRegression()).fit(X, y).explain(X[:2])
    >>> np.allclose(E.relevance.sum(1) + E.bias_relevance, E.output)
    True
    """

    def _params(self, config):
        # Converted once per (coef_, intercept_, dtype, device): explain() asks twice per batch.
        # The cache holds the arrays themselves, so a refit that replaces them is noticed.
        coef, intercept = self.step.coef_, self.step.intercept_
        cached = getattr(self, "_params_cache", None)
        if cached is not None and cached[0] is coef and cached[1] is intercept and cached[2] == (
                config.dtype, config.device):
            return cached[3]
        dense = np.atleast_2d(coef.toarray() if hasattr(coef, "toarray") else np.asarray(coef))
        b = np.broadcast_to(np.asarray(intercept, dtype=float).ravel(), (dense.shape[0],))
        params = config.tensor(dense), config.tensor(b.copy())
        self._params_cache = (coef, intercept, (config.dtype, config.device), params)
        return params

    def scores(self, x, config):
        w, b = self._params(config)
        if w.shape[0] == 1:
            return (torch.mv(x, w[0]) + b)[:, None]  # a matrix-vector product beats an (n, 1) matmul
        return x @ w.T + b

    # NaN/inf in x always reach x @ W.T, and the decomposition can stream into a buffer
    scores_propagate_nonfinite = True
    writes_into = True

    def temporaries_per_row(self):
        # scores, target weights and the output per sample; the (rows, d) work runs in cache blocks
        return 2 * np.atleast_2d(self.step.coef_).shape[0] + 2

    def relevance(self, x, weights, scores, config, out=None):
        w, b = self._params(config)
        bias = weights @ b
        if out is None:
            out = torch.empty_like(x)
        # Writing into the caller's buffer (a slice of the result array) spares a fresh (n, d)
        # tensor its first-touch page faults, which cost more than the arithmetic. Rows go in
        # cache-sized blocks so that the sign (or the gathered target weights) and the row sums
        # re-read the block from cache, not from memory.
        sums = out.new_empty(x.shape[0])
        step = max(1, _BLOCK_ELEMENTS // max(1, x.shape[1]))
        for i in range(0, x.shape[0], step):
            block, r = slice(i, i + step), out[i:i + step]
            if w.shape[0] == 1:
                # binary / single output: a sign per row, no (rows, d) weight matrix
                torch.mul(x[block], w[0], out=r)
                r.mul_(weights[block])
            else:
                torch.mul(x[block], _target_rows(weights[block], w), out=r)
            torch.sum(r, dim=1, out=sums[block])
        return HeadRelevance(out, bias, relevance_sum=sums)

    def bias_weights(self, x, weights, config):
        w, _ = self._params(config)
        sq = (weights @ w) ** 2
        total = sq.sum(dim=1, keepdim=True)
        uniform = torch.full_like(sq, 1.0 / sq.shape[1])
        return torch.where(total > 0, sq / torch.where(total > 0, total, 1.0), uniform)


_BLOCK_ELEMENTS = 1 << 17  # 1 MiB of float64 (A/B on a 1 MiB-L2 EPYC: 1 MiB 3.43x, 8 MiB 3.69x, none 3.71x)


def _target_rows(weights, w):
    """The explained weight vector ``(c W)`` of every sample, ``(n, d)``.

    One-hot targets (one class per sample) gather rows of ``W`` instead of multiplying
    ``(n, k) @ (k, d)``: k times fewer operations for the common case.
    """
    idx = weights.argmax(dim=1)
    if torch.equal(weights, torch.nn.functional.one_hot(idx, weights.shape[1]).to(weights.dtype)):
        return torch.index_select(w, 0, idx)
    return weights @ w


class _ElementwiseAffinePropagator(Propagator):
    """Common backward pass for element-wise affine maps ``z = x * w + b``."""

    def affine(self, x, config):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def forward(self, x, config):
        w, b = self.affine(x, config)
        return x * w if b is None else torch.addcmul(b, x, w)

    def backward(self, x, relevance, config):
        w, b = self.affine(x, config)
        return config.rule.propagate(DiagonalMap(w, b), x, relevance)


@register(StandardScaler)
class StandardScalerPropagator(_ElementwiseAffinePropagator):
    """``StandardScaler`` as ``z = x / s - mu / s`` (Eqs. (2.48)-(2.54)).

    With the z-rule this is Eq. (2.54): ``R_x = x s R_z / z`` (with ``s = 1/scale``)
    and the mean absorbs ``R_mu = -mu s R_z / z`` (Eq. (2.53)).
    """

    def affine(self, x, config):
        st = self.step
        scale = st.scale_ if st.with_std and st.scale_ is not None else np.ones(st.n_features_in_)
        w = config.tensor(1.0 / np.asarray(scale, dtype=float))
        b = None
        if st.with_mean and st.mean_ is not None:
            b = -config.tensor(st.mean_) * w
        return w, b


@register(MinMaxScaler)
class MinMaxScalerPropagator(_ElementwiseAffinePropagator):
    """``MinMaxScaler`` as ``z = x * scale + min`` (bias-type offset, Eq. (2.50)).

    With ``clip=True`` a clipped value no longer depends on its input: it becomes a
    constant (all of its relevance goes to the bias term).
    """

    def affine(self, x, config):
        st = self.step
        w = config.tensor(st.scale_)
        b = config.tensor(st.min_)
        if getattr(st, "clip", False):
            lo, hi = st.feature_range
            y = x * w + b
            clipped = (y < lo) | (y > hi)
            w = torch.where(clipped, torch.zeros_like(y), w.expand_as(y))
            b = torch.where(clipped, y.clamp(lo, hi), b.expand_as(y))
        return w, b


@register(Normalizer)
class NormalizerPropagator(_ElementwiseAffinePropagator):
    """``Normalizer``: ``z_d = x_d / ||x||`` with the per-sample norm held constant.

    Each output depends on its own input only, so relevance passes through unchanged
    (exactly conservative), as for the normalisation steps of Section 4.2 (Eq. (4.8)).
    """

    def affine(self, x, config):
        norm = self.step.norm
        if norm == "l1":
            n = x.abs().sum(dim=1, keepdim=True)
        elif norm == "l2":
            n = x.pow(2).sum(dim=1, keepdim=True).sqrt()
        else:  # "max"
            n = x.abs().amax(dim=1, keepdim=True)
        n = torch.where(n == 0, torch.ones_like(n), n)
        return (1.0 / n).expand_as(x), None

    def backward(self, x, relevance, config):
        # each output is its own input rescaled by a per-sample constant: relevance passes
        # unchanged whatever the rule (a stabiliser would absorb most of it on rows of norm 1)
        return LayerRelevance(relevance, x.new_zeros(x.shape[0]))


@register((PCA, IncrementalPCA, TruncatedSVD))
class PCAPropagator(Propagator):
    """PCA-type projection ``z = (x - mu) V^T [/ sqrt(lambda)]`` as a dense layer.

    The mean enters as the bias ``b = -mu W`` and absorbs relevance like any bias
    (Eq. (2.16)); the configured rule decomposes the mixing (Eqs. (2.10)-(2.28)).
    """

    def _map(self, config):
        st = self.step
        w = np.asarray(st.components_, dtype=float).T
        if getattr(st, "whiten", False):
            w = w / np.sqrt(st.explained_variance_)
        mean = getattr(st, "mean_", None)
        b = None if mean is None else -np.asarray(mean, dtype=float) @ w
        return DenseMap(config.tensor(w), None if b is None else config.tensor(b))

    def forward(self, x, config):
        return self._map(config).output(x)

    def backward(self, x, relevance, config):
        return config.rule.propagate(self._map(config), x, relevance)


def elementwise(func):
    """Mark ``func`` as element-wise so ``FunctionTransformer(func)`` can be explained.

    Element-wise steps pass relevance unchanged, like activations (Eq. (2.37)).
    Unary numpy ufuncs (``np.log1p``, ``np.sqrt``, ...) need no marking.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklrp.linear import elementwise
    >>> @elementwise
    ... def signed_sqrt(X):
    ...     return np.sign(X) * np.sqrt(np.abs(X))
    >>> step = FunctionTransformer(signed_sqrt)
    """
    func._sklrp_elementwise = True
    return func


def _is_elementwise_function_transformer(step):
    if not isinstance(step, FunctionTransformer):
        return False
    func = step.func
    return func is None or (isinstance(func, np.ufunc) and func.nin == 1) or getattr(
        func, "_sklrp_elementwise", False
    )


# registered before the element-wise propagator so that one (registered later) takes precedence
@register(FunctionTransformer, name="FunctionTransformer (element-wise only)")
def _reject_function_transformer(step):
    raise TypeError(
        f"sklrp cannot explain FunctionTransformer(func={getattr(step.func, '__name__', step.func)!r}): "
        "only element-wise functions can be explained. Use a unary numpy ufunc or mark the function "
        "with sklrp.linear.elementwise if it acts on each feature independently."
    )


@register(_is_elementwise_function_transformer,
          name="FunctionTransformer with an element-wise function (ufunc or sklrp.linear.elementwise)")
class FunctionTransformerPropagator(Propagator):
    """Element-wise ``FunctionTransformer``: identity backward pass (Eq. (2.37))."""

    def forward(self, x, config):
        if self.step.func is None:
            return x
        out = self.step.transform(x.detach().cpu().numpy())
        return config.tensor(out)

    def backward(self, x, relevance, config):
        return LayerRelevance(relevance, x.new_zeros(x.shape[0]))

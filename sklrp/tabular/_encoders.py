"""Encoders and basis expansions: one-hot, ordinal, bins, splines, polynomial features."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import (
    KBinsDiscretizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    SplineTransformer,
)

from ..propagators import register
from ._base import Routing, RoutingPropagator, TabularAdapter, numeric_kind

__all__ = [
    "OneHotEncoderPropagator",
    "OrdinalEncoderPropagator",
    "KBinsDiscretizerPropagator",
    "SplineTransformerPropagator",
    "PolynomialFeaturesPropagator",
]


def _checked(routing, step):
    """Guard against an output layout sklrp does not know: the routing must cover every output column."""
    n_out = len(step.get_feature_names_out())
    if routing.n_out != n_out:
        raise TypeError(
            f"sklrp cannot map the {n_out} output columns of this {type(step).__name__} to its input columns "
            f"(it expected {routing.n_out}); please report this configuration: {step!r}"
        )
    return routing


@register(OneHotEncoder)
class OneHotEncoderPropagator(TabularAdapter, RoutingPropagator):
    """``OneHotEncoder``: the relevance of a categorical column is the sum over its one-hot columns.

    Every output column is a function of one input column (the indicator of one
    category, or of the group of infrequent categories), so its relevance returns to
    that column (routing, Eqs. (2.37), (2.41); see :mod:`sklrp.tabular`). Exactly
    conservative.

    * ``drop=``: a dropped category is encoded as all zeros; its effect lives in the
      model's intercept, i.e. in the bias relevance, never in the feature's.
    * ``handle_unknown="ignore"``: an unknown category is an all-zero row. Under the
      rules that multiply by the input (z, epsilon, alpha-beta) zero columns receive no
      relevance, so the feature gets none: the model did not use it. Input-independent
      rules (flat, w^2 at the input layer of an MLP) do give zero columns relevance.
    * infrequent categories share one column, whose relevance goes to the feature.
    * ``sparse_output=True`` is handled: the forward pass densifies the batch.

    Accepts the raw batch (strings, DataFrame columns) as the first step of a chain.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.preprocessing import OneHotEncoder
    >>> from sklrp.propagators import propagator_for, RuleConfig
    >>> from sklrp.rules import Z
    >>> X = np.array([["a", "x"], ["b", "y"], ["c", "y"]], dtype=object)
    >>> prop = propagator_for(OneHotEncoder().fit(X))
    >>> R = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0]], dtype=torch.float64)
    >>> prop.backward(X[:1], R, RuleConfig(Z())).input
    tensor([[ 7., 24.]], dtype=torch.float64)
    """

    def needs_raw(self):
        return not numeric_kind(list(self.step.categories_))

    def routing(self):
        st = self.step
        infrequent = getattr(st, "infrequent_categories_", None) or [None] * len(st.categories_)
        drop = st.drop_idx_ if st.drop_idx_ is not None else [None] * len(st.categories_)
        counts = []
        for cats, infreq, dropped in zip(st.categories_, infrequent, drop):
            count = len(cats)
            if infreq is not None:
                count -= len(infreq) - 1  # infrequent categories share one column
            if dropped is not None:
                count -= 1
            counts.append(count)
        sources = np.repeat(np.arange(len(counts)), counts)
        return _checked(Routing.from_sources(sources, len(counts)), st)


@register(OrdinalEncoder)
class OrdinalEncoderPropagator(TabularAdapter, RoutingPropagator):
    """``OrdinalEncoder``: each code column passes its relevance to its categorical column (Eq. (2.37)).

    The code (and ``unknown_value`` / ``encoded_missing_value``) is a number the model
    multiplies like any other: a linear model gives ``R = w * code``, which depends on the
    arbitrary order of the categories. Accepts the raw batch as the first step of a chain.
    """

    def needs_raw(self):
        return not numeric_kind(list(self.step.categories_))

    def routing(self):
        n = len(self.step.categories_)
        return _checked(Routing.from_sources(np.arange(n), n), self.step)


@register(KBinsDiscretizer)
class KBinsDiscretizerPropagator(RoutingPropagator):
    """``KBinsDiscretizer``: the bin columns (or the bin index) of a feature return to it.

    ``encode="onehot"`` / ``"onehot-dense"``: ``n_bins_[i]`` indicator columns per feature,
    summed back; ``encode="ordinal"``: one column per feature, passed unchanged
    (Eq. (2.37)). Exactly conservative.
    """

    def routing(self):
        st = self.step
        n_bins = np.asarray(st.n_bins_, dtype=np.int64)
        if st.encode == "ordinal":
            sources = np.arange(n_bins.size)
        else:
            sources = np.repeat(np.arange(n_bins.size), n_bins)
        return _checked(Routing.from_sources(sources, n_bins.size), st)


@register(SplineTransformer)
class SplineTransformerPropagator(RoutingPropagator):
    """``SplineTransformer``: the B-spline columns of a feature return to it.

    The feature's relevance is the sum over its spline columns; for a linear model on
    top it is the value of the fitted shape function ``sum_k w_k B_k(x_i)`` of that
    feature (as in an additive model). No baseline is subtracted: with
    ``include_bias=True`` the splines of a feature sum to one, so a constant level of
    the shape function stays with the feature. Exactly conservative.
    """

    def routing(self):
        st = self.step
        n_in, n_out = st.n_features_in_, st.n_features_out_
        if n_out % n_in:
            raise TypeError(f"sklrp cannot map the {n_out} spline columns to {n_in} features")
        return _checked(Routing.from_sources(np.repeat(np.arange(n_in), n_out // n_in), n_in), st)


@register(PolynomialFeatures)
class PolynomialFeaturesPropagator(RoutingPropagator):
    """``PolynomialFeatures``: a monomial's relevance is split over its features by their exponents.

    Output ``j`` is the monomial ``m_j(x) = prod_i x_i^{p_ji}`` of degree
    ``d_j = sum_i p_ji`` (``powers_``). Its relevance goes to feature ``i`` in the share
    ``p_ji / d_j``; the constant column (``include_bias=True``, ``d_j = 0``) is absorbed
    as bias relevance. Exactly conservative.

    Why these shares: they are the exact decomposition of ``m_j`` by the integral form of
    a Taylor expansion at the root point ``x~ = 0`` (``m_j(0) = 0`` for ``d_j > 0``; cf.
    Eqs. (2.75)-(2.76)) along the straight path ``t x``:
    ``int_0^1 x_i dm_j/dx_i(t x) dt = p_ji / d_j * m_j(x)``, summing to ``m_j(x)``
    (the same as Integrated Gradients with a zero baseline). The shares do not depend
    on the input, keep the monomial's sign, and give a power ``x_a^k`` wholly to ``a``.
    They go beyond the thesis, which decomposes sums, not products. For square-free
    monomials (``interaction_only=True``, e.g. ``x_a x_b``: half each) they coincide with
    the Shapley value of the monomial with a zero baseline (a unanimity game, equal
    split); the two differ when exponents differ (``x_a^2 x_b``: 2/3 and 1/3 here,
    1/2 each for Shapley).
    """

    def routing(self):
        st = self.step
        powers = np.asarray(st.powers_, dtype=np.float64)
        degree = powers.sum(axis=1)
        out_idx, in_idx = np.nonzero(powers)
        share = powers[out_idx, in_idx] / degree[out_idx]
        routing = Routing(out_idx.astype(np.int64), in_idx.astype(np.int64), share, powers.shape[1],
                          powers.shape[0])
        return _checked(routing, st)

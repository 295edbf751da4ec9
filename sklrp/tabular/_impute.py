"""Imputers: ``SimpleImputer`` (with ``add_indicator``) and ``MissingIndicator``."""

from __future__ import annotations

import numpy as np
from sklearn.impute import MissingIndicator, SimpleImputer

from ..propagators import register
from ._base import Routing, RoutingPropagator, TabularAdapter, numeric_kind

__all__ = ["SimpleImputerPropagator", "MissingIndicatorPropagator"]


def _is_missing_statistic(value):
    try:
        return bool(value != value)  # NaN (float or in an object array)
    except (TypeError, ValueError):  # e.g. pandas.NA
        return True


@register(SimpleImputer)
class SimpleImputerPropagator(TabularAdapter, RoutingPropagator):
    """``SimpleImputer``: element-wise, relevance passes unchanged (Eq. (2.37)).

    An imputed cell is explained as the value used: the model saw the fill value
    (mean, median, most frequent or constant), and the cell's relevance is what that
    value contributed, attributed to the cell's column. The relevance of the
    ``add_indicator=True`` columns (``1`` where the value was missing) goes to the
    column whose missingness they indicate, so a column's relevance includes what its
    being missing contributed. Columns dropped by the imputer (no observed value at fit
    time, ``keep_empty_features=False``) get zero relevance. Exactly conservative.

    Accepts the raw batch as the first step of a chain; its output must be numeric
    there (a ``strategy="most_frequent"`` imputer on strings belongs in a Pipeline with
    its encoder, inside a ``ColumnTransformer``).
    """

    def needs_raw(self):
        return not numeric_kind(self.step.statistics_)

    def routing(self):
        st = self.step
        stats = np.asarray(st.statistics_, dtype=object)
        if st.keep_empty_features:
            kept = np.arange(stats.size)
        else:
            kept = np.flatnonzero([not _is_missing_statistic(v) for v in stats])
        sources = [kept]
        if st.add_indicator:
            sources.append(np.asarray(st.indicator_.features_, dtype=np.int64))
        return Routing.from_sources(np.concatenate(sources), stats.size)


@register(MissingIndicator)
class MissingIndicatorPropagator(TabularAdapter, RoutingPropagator):
    """``MissingIndicator``: each indicator column's relevance goes to the column it watches.

    Accepts the raw batch as the first step of a chain. Exactly conservative.
    """

    def needs_raw(self):
        return False  # its transform takes numbers as well as the raw values it was fitted on

    def routing(self):
        st = self.step
        return Routing.from_sources(np.asarray(st.features_, dtype=np.int64), st.n_features_in_)

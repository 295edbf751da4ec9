"""Feature selectors (``SelectKBest``, ``SelectPercentile``, ``VarianceThreshold``, ``SelectFromModel``,
``RFE``, ``RFECV``, ``SequentialFeatureSelector``, ...): everything built on ``SelectorMixin``."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.feature_selection import SelectorMixin

from ..propagators import register
from ._base import Routing, RoutingPropagator

__all__ = ["SelectorPropagator"]


def _is_selector(step):
    return isinstance(step, SelectorMixin)


@register(_is_selector, name="feature selectors (SelectorMixin: SelectKBest, SelectPercentile, VarianceThreshold, "
          "SelectFromModel, RFE, RFECV, SequentialFeatureSelector, ...)")
class SelectorPropagator(RoutingPropagator):
    """A feature selector: kept columns pass their relevance back, dropped columns get exactly zero.

    The selection is a routing of columns (Eq. (2.41)), exactly conservative; the
    forward pass indexes the batch with ``get_support()`` on the tensor's device.
    """

    def _support(self, device):
        cached = getattr(self, "_support_cache", None)
        if cached is None or cached.device != device:
            cached = self._support_cache = torch.as_tensor(self.step.get_support(indices=True), device=device)
        return cached

    def forward(self, x, config):
        if not isinstance(x, torch.Tensor):
            return super().forward(x, config)
        return x.index_select(1, self._support(x.device))

    def routing(self):
        support = np.asarray(self.step.get_support(indices=True), dtype=np.int64)
        return Routing.from_sources(support, self.step.n_features_in_)

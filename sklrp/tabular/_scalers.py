"""``MaxAbsScaler`` and ``RobustScaler``: element-wise affine maps decomposed with the configured rule."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import MaxAbsScaler, RobustScaler

from ..propagators import Propagator, register
from ..rules import DiagonalMap

__all__ = ["MaxAbsScalerPropagator", "RobustScalerPropagator"]


class _DiagonalPropagator(Propagator):
    """``z = x * w + b`` as a :class:`sklrp.rules.DiagonalMap` (Eqs. (2.48)-(2.54))."""

    def diagonal(self, config) -> DiagonalMap:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def forward(self, x, config):
        return self.diagonal(config).output(x)

    def backward(self, x, relevance, config):
        return config.rule.propagate(self.diagonal(config), x, relevance)


@register(MaxAbsScaler)
class MaxAbsScalerPropagator(_DiagonalPropagator):
    """``MaxAbsScaler``: ``z = x / max|x|``, a scaling without offset.

    Each output is its input times a constant, so the z- and epsilon-rules pass
    relevance unchanged (up to the stabiliser): nothing is absorbed.
    """

    def diagonal(self, config):
        return DiagonalMap(config.tensor(1.0 / np.asarray(self.step.scale_, dtype=np.float64)))


@register(RobustScaler)
class RobustScalerPropagator(_DiagonalPropagator):
    """``RobustScaler``: ``z = (x - center) / scale``, the centre acting as a bias (Eqs. (2.50), (2.53)).

    As for ``StandardScaler``, with the z-rule ``R_x = x / scale * R_z / z`` and the
    centre absorbs ``-center / scale * R_z / z`` (Eq. (2.54)).
    """

    def diagonal(self, config):
        st = self.step
        n = st.n_features_in_
        scale = np.asarray(st.scale_, dtype=np.float64) if st.with_scaling else np.ones(n)
        w = config.tensor(1.0 / scale)
        b = -config.tensor(np.asarray(st.center_, dtype=np.float64)) * w if st.with_centering else None
        return DiagonalMap(w, b)

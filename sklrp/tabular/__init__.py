"""Propagators for tabular preprocessing: column transformers, encoders, imputers, selectors, expansions.

Relevance comes back with one column per original input column, whatever the
preprocessing expanded, selected or encoded in between.

===============================================  ====================================================
step                                             relevance of the input columns
===============================================  ====================================================
ColumnTransformer, FeatureUnion                  each transformer propagated on its own, summed per
                                                 column (Eq. (2.12)); dropped columns get zero
OneHotEncoder, OrdinalEncoder                    sum over the column's codes (routing, Eq. (2.37))
SimpleImputer, MissingIndicator                  unchanged; indicator columns go to their source
SelectKBest, SelectPercentile, VarianceThreshold,
SelectFromModel, RFE, ... (SelectorMixin)        kept columns unchanged, dropped ones exactly zero
KBinsDiscretizer, SplineTransformer              sum over the feature's bin / spline columns
PolynomialFeatures                               a monomial split by exponent shares ``p_i / degree``;
                                                 the constant column goes to the bias
MaxAbsScaler, RobustScaler                       the configured rule on ``x * w + b`` (Eq. (2.54))
===============================================  ====================================================

The encoders, imputers and column transformers accept the raw batch (string
categories, DataFrame columns) when they are the first step of the explained
pipeline (``raw_input = True``). See :mod:`sklrp.tabular._base` for the routing of
relevance through steps that are not linear maps.
"""

from ._base import Routing, RoutingPropagator
from ._column import ColumnTransformerPropagator, FeatureUnionPropagator
from ._encoders import (
    KBinsDiscretizerPropagator,
    OneHotEncoderPropagator,
    OrdinalEncoderPropagator,
    PolynomialFeaturesPropagator,
    SplineTransformerPropagator,
)
from ._impute import MissingIndicatorPropagator, SimpleImputerPropagator
from ._scalers import MaxAbsScalerPropagator, RobustScalerPropagator
from ._select import SelectorPropagator

__all__ = [
    "ColumnTransformerPropagator",
    "FeatureUnionPropagator",
    "KBinsDiscretizerPropagator",
    "MaxAbsScalerPropagator",
    "MissingIndicatorPropagator",
    "OneHotEncoderPropagator",
    "OrdinalEncoderPropagator",
    "PolynomialFeaturesPropagator",
    "RobustScalerPropagator",
    "Routing",
    "RoutingPropagator",
    "SelectorPropagator",
    "SimpleImputerPropagator",
    "SplineTransformerPropagator",
]

"""sklrp: Layer-wise Relevance Propagation, SpRAy and AOPC evaluation for scikit-learn.

Equation numbers in docstrings refer to the thesis that defines the methods.
"""

from . import chain, propagators, rules
from .explain import LRPTransformer
from .explanation import Explanation
from .propagators import propagator_for, register, supported_steps

__version__ = "0.1.0"

__all__ = [
    "LRPTransformer",
    "Explanation",
    "rules",
    "chain",
    "propagators",
    "propagator_for",
    "register",
    "supported_steps",
]

from . import datasets  # noqa: E402
from .spray import SpRAy, spray_spectra  # noqa: E402

__all__ += ["SpRAy", "spray_spectra", "datasets"]

from .evaluation import (  # noqa: E402
    aopc_score,
    context_ratio,
    deconvolution_heatmap,
    guided_backprop_heatmap,
    make_aopc_scorer,
    perturbation_curve,
    sensitivity_heatmap,
)

__all__ += ["aopc_score", "context_ratio", "make_aopc_scorer", "perturbation_curve", "sensitivity_heatmap",
            "deconvolution_heatmap", "guided_backprop_heatmap"]

from . import kernels  # noqa: E402

__all__ += ["kernels"]

from . import nn  # noqa: E402

__all__ += ["nn"]

from . import plotting  # noqa: E402

__all__ += ["plotting"]

from . import bow  # noqa: E402

__all__ += ["bow"]

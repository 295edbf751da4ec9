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

# Submodules that are not needed to explain a model are loaded on first use (PEP 562), so that
# ``import sklrp`` stays fast and ``sklrp.svm.Pair`` works whatever was imported before.
_LAZY_SUBMODULES = ("bow", "cli", "kernels", "linear", "nn", "plotting", "svm", "tabular")

__all__ += ["bow", "kernels", "nn", "plotting", "tabular"]


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))

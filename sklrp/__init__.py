"""sklrp: Layer-wise Relevance Propagation, SpRAy and AOPC evaluation for scikit-learn.

Equation numbers in docstrings refer to the thesis that defines the methods.
"""

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
__all__ += ["SpRAy", "spray_spectra", "datasets"]
__all__ += ["aopc_score", "context_ratio", "make_aopc_scorer", "perturbation_curve", "sensitivity_heatmap",
            "deconvolution_heatmap", "guided_backprop_heatmap"]

# Everything is loaded on first use (PEP 562): ``import sklrp`` stays fast, ``sklrp.svm.Pair``
# works whatever was imported before, and ``sklrp audit`` reports a bad argument or file before
# torch is imported.
_LAZY_SUBMODULES = ("audit", "bow", "chain", "cli", "dask", "datasets", "evaluation", "explain", "explanation",
                    "kernels", "linear", "nn", "plotting", "propagators", "rules", "spray", "svm", "tabular")
_LAZY_NAMES = {
    "LRPTransformer": "explain",
    "Explanation": "explanation",
    "propagator_for": "propagators",
    "register": "propagators",
    "supported_steps": "propagators",
    "SpRAy": "spray",
    "spray_spectra": "spray",
    "aopc_score": "evaluation",
    "context_ratio": "evaluation",
    "make_aopc_scorer": "evaluation",
    "perturbation_curve": "evaluation",
    "sensitivity_heatmap": "evaluation",
    "deconvolution_heatmap": "evaluation",
    "guided_backprop_heatmap": "evaluation",
}

__all__ += ["audit", "bow", "kernels", "nn", "plotting", "tabular"]


def __getattr__(name):
    import importlib

    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value
    elif name in _LAZY_SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES) | set(_LAZY_NAMES))

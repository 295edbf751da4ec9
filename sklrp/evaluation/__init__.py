"""Heatmap evaluation (thesis Chapters 3 and 4): region perturbation, AOPC, baselines, context.

A heatmap orders the regions of an input (Eqs. (3.4)-(3.5)); perturbing the regions in that
order (Eq. (3.6)) and recording the explained score ``f(x^(k))`` gives the *perturbation
curve*; the area over it, AOPC (Eq. (3.7)), is large when the heatmap ranks the regions that
matter first.

Modules by job:

* :mod:`~sklrp.evaluation.regions` -- the region grid of Eq. (3.4) and relevance per region (Eq. (3.5)).
* :mod:`~sklrp.evaluation.perturbations` -- the perturbation ``g`` of Eq. (3.6) (uniform noise,
  flipping, mean, blur, your own) and the input domain it draws from.
* :mod:`~sklrp.evaluation.response` -- the model response ``f`` on perturbed inputs (an
  :class:`~sklrp.LRPTransformer` scores them with its own :class:`~sklrp.chain.Chain`).
* :mod:`~sklrp.evaluation.aopc` -- :func:`perturbation_curve`, :func:`aopc_score`,
  :func:`aopc_from_curves` (the one implementation of Eq. (3.7)), :func:`make_aopc_scorer`.
* :mod:`~sklrp.evaluation.baselines` -- sensitivity (Eq. (3.1)), deconvolution (Eq. (3.3)),
  guided backpropagation.
* :mod:`~sklrp.evaluation.context` -- the outside/inside relevance ratio of Eq. (4.11).
"""

from .aopc import ORDERS, aopc_from_curves, aopc_score, make_aopc_scorer, perturbation_curve
from .baselines import deconvolution_heatmap, guided_backprop_heatmap, sensitivity_heatmap
from .context import context_ratio
from .perturbations import (
    BlurPerturbation,
    FlipPerturbation,
    FunctionPerturbation,
    MeanPerturbation,
    Perturbation,
    UniformPerturbation,
)
from .regions import RegionGrid

__all__ = [
    "perturbation_curve",
    "aopc_score",
    "aopc_from_curves",
    "make_aopc_scorer",
    "sensitivity_heatmap",
    "deconvolution_heatmap",
    "guided_backprop_heatmap",
    "context_ratio",
    "RegionGrid",
    "Perturbation",
    "UniformPerturbation",
    "FlipPerturbation",
    "MeanPerturbation",
    "BlurPerturbation",
    "FunctionPerturbation",
    "ORDERS",
]

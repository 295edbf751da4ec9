"""Bag-of-Words and Fisher-vector stages with their LRP propagators (Sections 2.4, 4.2-4.3).

Stages (scikit-learn transformers, usable in a ``Pipeline``)::

    images (n, H, W) -> DenseSIFT -> BoWEncoder ------------------------------> SVM
                                  -> FisherVectorEncoder -> PowerNormalizer ---> SVM

Explaining such a pipeline with :class:`sklrp.LRPTransformer` gives pixel relevance:
SVM -> BoW/FV dimensions (Eqs. (2.72)-(2.74), (4.8)) -> descriptors (Eqs. (2.78)-(2.83),
(4.9)-(4.10), (D.3)) -> pixels (Eqs. (2.84)-(2.85)).
"""

from ._bow import BoWEncoder, BoWEncoderPropagator
from ._fisher import FisherVectorEncoder, FisherVectorPropagator, PowerNormalizer, PowerNormalizerPropagator
from ._geometry import N_GEOMETRY, DescriptorGeometry, project_to_pixels, split_descriptors
from ._replacement import DescriptorReplacement
from ._sift import DenseSIFT, DenseSIFTPropagator, has_opencv, has_vlfeat
from ._tiling import TiledExplanation, explain_tiled, tile_positions
from .text import (
    TextAdapter,
    TextExplanation,
    TfidfTransformerPropagator,
    explain_text,
    tokenize_with_positions,
)

__all__ = [
    "DenseSIFT",
    "DenseSIFTPropagator",
    "BoWEncoder",
    "BoWEncoderPropagator",
    "FisherVectorEncoder",
    "FisherVectorPropagator",
    "PowerNormalizer",
    "PowerNormalizerPropagator",
    "DescriptorGeometry",
    "N_GEOMETRY",
    "split_descriptors",
    "project_to_pixels",
    "has_opencv",
    "has_vlfeat",
    "DescriptorReplacement",
    "explain_tiled",
    "TiledExplanation",
    "tile_positions",
    "explain_text",
    "TextAdapter",
    "TextExplanation",
    "TfidfTransformerPropagator",
    "tokenize_with_positions",
]

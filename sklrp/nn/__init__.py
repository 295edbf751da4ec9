"""LRP for torch networks (Section 2.3): modified backward pass, composites, canonizers, skorch.

* :func:`lrp` / :func:`forward` (``engine``): LRP as a modified gradient (Eqs. (2.57)-(2.61)).
* :class:`Composite`, :data:`THESIS_COMPOSITE`, :func:`make_composite` and the named
  composites :data:`COMPOSITES` (``composites``): rules by layer type and position
  (Sections 5.4.1, 5.4.2), zennit's composites by name.
* ``tracing``: tensor operations in ``forward`` (``x + y``, ``torch.cat``, ``F.relu``, ...)
  followed as they run and given their LRP steps (Eqs. (2.37)-(2.41)).
* :class:`GraphedLRP` (``graphs``): :func:`lrp` replayed from CUDA graphs (small batches
  on GPUs without the per-kernel host cost).
* :func:`fold_batchnorm` (``canonizers``): batch norm folded into the preceding layer, found
  in the network's graph.
* :class:`Add`, :class:`Concat` (``merge``): mark merge points of non-sequential nets
  (Eqs. (2.38)-(2.41)).
* :class:`TorchModel` and the registry heads (``heads``): skorch nets and plain modules
  inside :class:`sklrp.LRPTransformer`.
* :class:`MLPHead`, :func:`mlp_module` (``sklearn_mlp``): scikit-learn's ``MLPClassifier``
  and ``MLPRegressor`` as torch networks.
"""

from .canonizers import fold_batchnorm
from .composites import COMPOSITES, THESIS_COMPOSITE, Composite, make_composite
from .engine import LRPResult, attached, forward, lrp, supported_layers
from .graphs import GraphedLRP
from .heads import TorchModel, TorchNetHead
from .merge import Add, Concat
from .sklearn_mlp import MLPHead, mlp_module

__all__ = [
    "COMPOSITES",
    "THESIS_COMPOSITE",
    "Add",
    "Composite",
    "Concat",
    "GraphedLRP",
    "LRPResult",
    "MLPHead",
    "TorchModel",
    "TorchNetHead",
    "attached",
    "fold_batchnorm",
    "forward",
    "lrp",
    "make_composite",
    "mlp_module",
    "supported_layers",
]

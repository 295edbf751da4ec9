"""Plots of relevance maps, tabular relevance, perturbation curves and SpRAy spectra.

Every function returns matplotlib objects (``Axes``, ``Figure``) or, for text,
an HTML string; nothing here calls ``plt.show()``. Figures are created through
``matplotlib.figure.Figure`` when no ``ax`` is given, so the functions work under
any backend (including Agg) without touching pyplot's global state.

* Relevance maps (``heatmap``, ``heatmap_grid``, ``render_heatmap``,
  ``normalize_relevance``, ``highlight_text``), curves and spectra live in
  ``sklrp.plotting._core``.
* Tabular relevance (``plot_feature_importance``, ``plot_relevance_summary``,
  ``plot_waterfall``) lives in ``sklrp.plotting._tabular``.
"""

import inspect as _inspect

from ._core import *  # noqa: F401,F403
from ._core import __all__ as _core_all
from ._core import _cmap, _finite, _new_ax  # noqa: F401  (helpers shared by the plot modules)
from ._tabular import plot_feature_importance, plot_relevance_summary, plot_waterfall

__all__ = [*_core_all, "plot_feature_importance", "plot_relevance_summary", "plot_waterfall"]

# doctest.testmod(sklrp.plotting) finds the examples of the functions defined in the submodules here
__test__ = {name: globals()[name] for name in __all__ if _inspect.isfunction(globals()[name])}

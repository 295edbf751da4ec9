"""The audit behind ``sklrp audit``: explain, evaluate, search for separate strategies, report.

* :func:`audit` -- explain fitted models on data and write ``report.html``, figures and
  ``summary.json``.
* :func:`shortcut_scan` -- the flagging rule: per class, the most separated subgroup of relevance
  maps with its own region, and how unusual it is among the model's classes;
  :func:`feature_scan` -- the same for tabular relevance (one feature per region).
* :func:`reliance_probe` -- paste a region into other classes' images and count flipped predictions.
* :func:`make_explainer`, :func:`explain_parallel` -- the explanation step, chunked through joblib.
"""

from .errors import AuditError
from .verdict import ClassFinding, Region, feature_scan, reliance_probe, shortcut_scan

__all__ = ["AuditError", "ClassFinding", "Region", "audit", "explain_parallel", "feature_scan", "make_explainer",
           "reliance_probe", "shortcut_scan"]


def __getattr__(name):
    # the explaining part needs torch; keep ``import sklrp.audit`` (and CLI errors) free of it
    if name in ("audit", "explain_parallel", "make_explainer"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

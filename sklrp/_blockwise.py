"""The extension point through which the in-memory entry points hand over lazy collections.

:meth:`sklrp.LRPTransformer.explain` (and so ``transform``), :func:`sklrp.aopc_score`,
:func:`sklrp.perturbation_curve` and :meth:`sklrp.SpRAy.fit` ask :func:`is_lazy` about their input; when it is a Dask
collection they call :func:`handler` for their block-wise twin, which :mod:`sklrp.dask`
registers when it is imported (:func:`handler` imports it by name on first use). This module
imports neither Dask nor any other part of sklrp at import time, so the layers stay
one-directional: :mod:`sklrp.dask` uses the explainer and the evaluation, not the other way
round.
"""

from __future__ import annotations

import sys

__all__ = ["is_lazy", "handler", "register"]

_HANDLERS: dict = {}


def is_lazy(obj) -> bool:
    """Whether ``obj`` is a Dask collection (array, DataFrame, ...), without importing Dask."""
    if "dask" not in sys.modules:  # nothing can be a Dask collection before Dask is imported
        return False
    import dask

    return dask.is_dask_collection(obj)


def register(name, function):
    """Make ``function`` the block-wise twin of the entry point ``name``."""
    _HANDLERS[name] = function
    return function


def handler(name):
    """The block-wise twin of the entry point ``name`` (``"explain"``, ``"aopc_score"``, ...)."""
    if name not in _HANDLERS:
        import importlib

        importlib.import_module("sklrp.dask")  # registers the twins
    return _HANDLERS[name]

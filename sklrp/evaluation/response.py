"""The model response ``f`` evaluated on (perturbed) inputs, and the target it tracks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from sklearn.base import is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..propagators import Head

__all__ = ["ModelResponse", "EvalMode", "is_explainer", "logit_module"]


def is_explainer(model):
    from ..explain import LRPTransformer

    return isinstance(model, LRPTransformer)


_OUTPUT_NONLINEARITIES = (
    torch.nn.Softmax,
    torch.nn.LogSoftmax,
    torch.nn.Softmax2d,
    torch.nn.Sigmoid,
)


def logit_module(module):
    """Drop a terminal softmax/sigmoid of a ``Sequential``: the logits are the score (Section 2.3.1)."""
    if (
        isinstance(module, torch.nn.Sequential)
        and len(module) > 1
        and isinstance(module[-1], _OUTPUT_NONLINEARITIES)
    ):
        return module[:-1]
    return module


class EvalMode:
    """Run a module in eval mode (dropout off, batch-norm statistics fixed), restoring every submodule's mode."""

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.module.modules()]
        if any(mode for _, mode in self.modes):
            self.module.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            if m.training != mode:
                m.training = mode


class ModelResponse:
    """The model response ``f`` of a perturbation analysis: score columns and the target weights.

    The explained score of a row is ``sum_k weights[k] * columns[k]``. For an
    :class:`~sklrp.LRPTransformer` it is the score ``Explanation.output`` reports: the
    explainer's own :class:`~sklrp.chain.Chain` scores the (perturbed) inputs, with the same
    head and the same target weights (with ``dtype=None``, a torch network in its own dtype,
    see :meth:`~sklrp.chain.Chain.score_columns`). Other models: ``decision_function`` (else
    ``predict_proba``, ``predict`` for regressors), a torch module's or skorch net's logits,
    or a callable.
    """

    def __init__(self, model, batch_size):
        self.model, self.batch_size = model, batch_size
        self.kind = self._kind(model)
        self.module, self.input_shape, self.chain = None, None, None
        if self.kind == "lrp":
            # the explainer's own chain: perturbed inputs are scored exactly as the explanation was
            self.chain = model.get_chain()
            # dtype=None: a torch net is scored in its own dtype (its outputs, at its own cost);
            # an explicit dtype is honoured, and the curve then starts exactly at Explanation.output
            self.native = model.get_params()["dtype"] is None
        elif self.kind == "torch":
            self.module = model
        elif self.kind == "skorch":
            self.module = model.module_
        if self.module is not None:
            self.module = logit_module(self.module)

    @staticmethod
    def _kind(model):
        if is_explainer(model):
            check_is_fitted(model)
            return "lrp"
        if isinstance(model, torch.nn.Module):
            return "torch"
        if hasattr(model, "module_") and hasattr(model, "initialized_"):
            return "skorch"
        if hasattr(model, "fit") and hasattr(model, "get_params"):
            if hasattr(model, "decision_function"):
                return "decision_function"
            if hasattr(model, "predict_proba"):
                return "predict_proba"
            if hasattr(model, "predict") and is_regressor(model):
                return "predict"
            raise TypeError(
                f"{type(model).__name__} has no score function: the evaluated model needs decision_function, "
                "predict_proba (classifiers) or predict (regressors). Pass a fitted LRPTransformer or a callable "
                "X -> scores instead."
            )
        if callable(model):
            return "callable"
        raise TypeError(
            f"model_or_fn must be an LRPTransformer, a fitted estimator with a score function, a torch "
            f"module or a callable X -> scores; got {type(model).__name__}"
        )

    def torch_input(self, X):
        param = next(self.module.parameters(), None)
        dtype = torch.float32 if param is None else param.dtype
        device = torch.device("cpu") if param is None else param.device
        x = torch.as_tensor(X, dtype=dtype, device=device)
        return x.reshape(x.shape[0], *self.input_shape) if self.input_shape is not None else x

    def columns(self, X):
        """Score columns ``(b, K)`` for a batch of model inputs."""
        kind, model = self.kind, self.model
        if kind == "lrp":
            out = self.chain.score_columns(X, native=self.native)
        elif self.module is not None:
            with torch.no_grad(), EvalMode(self.module):
                out = self.module(self.torch_input(X)).detach().cpu().double().numpy()
        else:
            fn = model if kind == "callable" else getattr(model, kind)
            out = np.asarray(fn(X), dtype=np.float64)
        out = out.reshape(len(X), -1)
        if not np.all(np.isfinite(out)):
            raise ValueError("the model returned NaN or infinite scores on the (perturbed) inputs")
        return out

    def _head(self, n_columns):
        if self.chain is not None:
            return self.chain.head
        classes = None
        if self.kind in ("decision_function", "predict_proba", "skorch"):
            try:
                classes = getattr(self.model, "classes_", None)
            except (AttributeError, NotFittedError):  # skorch: classes never inferred
                classes = None
        if classes is None and n_columns > 1 and self.kind in ("torch", "skorch", "callable"):
            classes = np.arange(n_columns)  # plain modules/callables: column k scores class k
        return Head(SimpleNamespace(classes_=classes) if classes is not None else None)

    def target_weights(self, inputs, n, target, y):
        """Per-sample column weights ``(n, K)``, target labels and ``f(x^(0))``.

        ``inputs(rows)`` gives the model inputs of the unperturbed samples ``rows``.
        """
        from ..chain import resolve_target

        bs = self.batch_size
        cols = np.concatenate(
            [self.columns(inputs(np.arange(i, min(i + bs, n)))) for i in range(0, n, bs)]
        )
        if self.kind == "callable" and cols.shape[1] == 1:  # a single score: nothing to select
            return np.ones((n, 1)), np.zeros(n, dtype=int), cols[:, 0]
        head = self._head(cols.shape[1])
        labels = resolve_target(target, y, n)
        if labels is None:
            labels = head.predicted(cols)
        weights = np.asarray(
            head.target_weights(np.asarray(labels), cols.shape[1]), dtype=np.float64
        )
        return weights, np.asarray(labels), (weights * cols).sum(axis=1)

    def predicted(self, columns):
        """Predicted labels for score columns ``(b, K)``."""
        return self._head(columns.shape[1]).predicted(columns)

    def is_classifier(self, n_columns):
        """Whether a response with ``n_columns`` score columns has classes (so a predicted class can change)."""
        return self._head(n_columns).classes is not None

    def __call__(self, X, weights):
        return (self.columns(X) * weights).sum(axis=1)



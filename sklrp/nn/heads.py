"""Registry heads for torch networks: skorch ``NeuralNet`` and plain ``torch.nn.Module``.

* A fitted skorch ``NeuralNetClassifier`` / ``NeuralNetRegressor`` /
  ``NeuralNetBinaryClassifier`` is explained through its ``module_``. ``X`` is
  what the net takes (e.g. ``(n, C, H, W)`` float arrays); the relevance has the
  shape of ``X``. ``LRPTransformer(NeuralNetClassifier(...))`` fits the net;
  ``LRPTransformer(FrozenEstimator(fitted_net))`` explains it as is.
* A plain trained ``torch.nn.Module`` is wrapped in :class:`TorchModel`, which
  tells sklrp the per-sample ``input_shape`` (so 2-D ``X`` of flattened samples can
  be fed to a CNN) and the class labels.

Scores are the network outputs with a terminal ``Softmax``/``LogSoftmax``/
``Sigmoid`` removed (Section 2.3.1): skorch classifiers trained with the default
``NLLLoss`` end in a softmax, which is stripped so that the logits are explained.
The predicted class is the arg-max of the logits. The float64 option works on a
private float64 copy of the network; the original module is never modified.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data

from ..propagators import Head, HeadRelevance, register
from . import engine
from .composites import composite_from_config

__all__ = ["TorchModel", "TorchNetHead"]


def _is_skorch_net(step) -> bool:
    return any(c.__name__ == "NeuralNet" and c.__module__.startswith("skorch") for c in type(step).__mro__)


class TorchModel(BaseEstimator):
    """A trained ``torch.nn.Module`` as a scikit-learn estimator sklrp can explain.

    ``fit`` does not train: it checks the module and the input shape and records
    the classes. Use it to explain networks trained outside skorch.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network. Its output is ``(n, n_outputs)`` logits (a terminal
        softmax is removed when explaining).
    input_shape : tuple of int, default=None
        Per-sample input shape, e.g. ``(1, 8, 8)``; ``X`` of shape
        ``(n, prod(input_shape))`` is reshaped to ``(n, *input_shape)``. None feeds
        ``X`` unchanged (it may then be n-D).
    classes : array-like, default=None
        Class label of each output column; None makes it a regressor whose
        targets are output indices.

    Attributes
    ----------
    module_ : torch.nn.Module
        The explained module.
    classes_ : ndarray
        Present when ``classes`` is given.
    n_features_in_ : int
        Number of features of ``X`` seen in :meth:`fit`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import sklrp
    >>> from sklrp.nn import TorchModel
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> X = np.random.RandomState(0).rand(5, 4)
    >>> lrp = sklrp.LRPTransformer(TorchModel(net, input_shape=(1, 2, 2), classes=[0, 1, 2]), rule="z")
    >>> lrp.fit(X).transform(X).shape
    (5, 4)
    """

    def __init__(self, module, *, input_shape=None, classes=None):
        self.module = module
        self.input_shape = input_shape
        self.classes = classes

    def fit(self, X, y=None):
        """Check the module and input shape; nothing is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
        y : ignored

        Returns
        -------
        self : TorchModel
        """
        if not isinstance(self.module, torch.nn.Module):
            raise TypeError(f"TorchModel.module must be a torch.nn.Module, got {type(self.module).__name__}")
        X = validate_data(self, X, allow_nd=True, dtype=np.float64)
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
                raise ValueError(f"input_shape must be a tuple of positive integers, got {self.input_shape!r}")
            if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
                raise ValueError(
                    f"input_shape {shape} has {int(np.prod(shape))} values per sample but X has "
                    f"{int(np.prod(X.shape[1:]))} (X.shape={X.shape})"
                )
        self.module_ = self.module
        if self.classes is not None:
            self.classes_ = np.asarray(self.classes)
        with torch.no_grad():  # one sample through the net: fails early on shape errors, materialises lazy layers
            self.module_(self._tensor(X[:1]))
        return self

    def _tensor(self, X):
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=np.float64)
        p = next(self.module_.parameters(), None)
        x = torch.as_tensor(X, dtype=p.dtype if p is not None else torch.float32,
                            device=p.device if p is not None else "cpu")
        return x.reshape(x.shape[0], *self.input_shape) if self.input_shape is not None else x

    def decision_function(self, X):
        """Network outputs ``(n_samples, n_outputs)`` (logits; a terminal softmax removed)."""
        x = self._tensor(X)
        with torch.no_grad():
            out = [engine.logits(self.module_, x[i:i + 1024]) for i in range(0, x.shape[0], 1024)]
        return torch.cat(out).cpu().numpy().astype(np.float64)

    def predict(self, X):
        """Class with the largest logit, or the outputs for a regressor."""
        scores = self.decision_function(X)
        if getattr(self, "classes_", None) is None:
            return scores[:, 0] if scores.shape[1] == 1 else scores
        return self.classes_[scores.argmax(axis=1)]


class TorchNetHead(Head):
    """Explains a torch network (skorch ``NeuralNet``, :class:`TorchModel`, ``nn.Module``).

    The decomposition is the modified backward pass of :mod:`sklrp.nn.engine`
    with the composite given by the ``LRPTransformer`` parameters ``composite``, or
    ``rule``, ``conv_rule``, ``input_rule``, ``flat_depth`` (:mod:`sklrp.nn.composites`).
    """

    accepts_nd = True

    def __init__(self, step):
        super().__init__(step)
        if isinstance(step, torch.nn.Module):
            self.module, self.input_shape = step, None
        else:
            if _is_skorch_net(step) and not getattr(step, "initialized_", False):
                raise NotFittedError(f"the {type(step).__name__} is not initialized/fitted; call fit first")
            module = getattr(step, "module_", None)
            if module is None:
                raise NotFittedError(f"the {type(step).__name__} is not fitted (no module_); call fit first")
            self.module = module
            self.input_shape = getattr(step, "input_shape", None) if isinstance(step, TorchModel) else None
        self._copy = None

    @property
    def classes(self):
        try:
            return getattr(self.step, "classes_", None)
        except (AttributeError, NotFittedError):  # skorch raises when classes were never inferred
            return None

    def _model_for(self, config):
        params = list(self.module.parameters()) + list(self.module.buffers())
        floats = [p for p in params if p.is_floating_point()]
        if all(p.dtype == config.dtype and p.device == config.device for p in floats):
            return self.module
        key = (config.dtype, config.device, tuple((id(p), p._version) for p in params))
        if self._copy is None or self._copy[0] != key:
            # a private copy in the requested dtype/device; the user's module is left alone
            self._copy = (key, copy.deepcopy(self.module).to(dtype=config.dtype, device=config.device))
        return self._copy[1]

    def _input(self, x):
        return x.reshape(x.shape[0], *self.input_shape) if self.input_shape is not None else x

    def native_dtype(self):
        floats = [p for p in self.module.parameters() if p.is_floating_point()]
        return floats[0].dtype if floats else None

    def scores(self, x, config):
        # the plain network (differentiable, e.g. for sensitivity analysis); explaining runs its own
        # hooked forward pass in decompose()
        return engine.logits(self._model_for(config), self._input(x))

    def relevance(self, x, weights, scores, config):
        fp = engine.forward(self._model_for(config), self._input(x), composite_from_config(config))
        r, b = fp.relevance(weights)
        return HeadRelevance(r.reshape(x.shape), b)

    def decompose(self, x, labels, config, out=None):
        # one hooked forward pass gives the scores and, through its graph, the relevance; it stays a
        # local of this call, so concurrent calls on one head never see each other's pass
        fp = engine.forward(self._model_for(config), self._input(x), composite_from_config(config))
        scores = fp.scores
        if labels is None:
            labels = self.predicted(scores.detach().cpu().numpy())
        weights = config.tensor(self.target_weights(labels, scores.shape[1]))
        r, b = fp.relevance(weights)
        hr = HeadRelevance(r.reshape(x.shape), b, output=(weights * scores).sum(dim=1), target=np.asarray(labels))
        return self.spread_bias(hr, x, weights, config)


register(lambda s: isinstance(s, torch.nn.Module), name="torch.nn.Module")(TorchNetHead)
register(TorchModel, name="sklrp.nn.TorchModel")(TorchNetHead)
register(_is_skorch_net, name="skorch NeuralNet (NeuralNetClassifier, NeuralNetRegressor, ...)")(TorchNetHead)


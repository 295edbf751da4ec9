"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor`` explained as torch networks.

A fitted MLP is the network ``a_0 = x``, ``z_l = a_{l-1} W_l + b_l``, ``a_l = g(z_l)``
with ``W_l = coefs_[l-1]``, ``b_l = intercepts_[l-1]`` and ``g`` the hidden
``activation`` ("identity", "logistic", "tanh" or "relu"). :func:`mlp_module` builds the
equivalent ``torch.nn.Sequential`` of ``Linear`` and activation modules; :class:`MLPHead`
explains it with the engine of :mod:`sklrp.nn` (:class:`sklrp.nn.TorchNetHead`), so the
rules and composites are those of every torch network: ``rule`` on dense layers,
``input_rule`` on the first layer, ``flat_depth`` flat bottom layers (Section 5.4.2).

Output layer: the MLP's output activation (logistic for binary and multi-label
classifiers, softmax for multi-class ones, identity for regressors) is not part of the
module, so the logits ``z_L`` are explained (Section 2.3.1, "The Softmax Output Layer").
A binary ``MLPClassifier`` has one logit column, positive for ``classes_[1]`` (as a
``decision_function`` would be); a multi-class one has one column per class; an
``MLPRegressor`` one per output. An ``MLPRegressor(loss="poisson")`` predicts
``exp(z_L)``: its log-prediction is explained.

Hidden activations and conservation
-----------------------------------
LRP passes relevance through element-wise activations unchanged (Eq. (2.37)): the
relevance ``R_j`` of a hidden unit is decomposed onto the layer below in proportion to
the contributions ``z_ij = a_i w_ij`` to its pre-activation ``z_j`` (Eqs. (2.13),
(2.58)-(2.60)), whatever ``g`` is. Every rule step is exactly conservative for units with
``z_j != 0`` (z-rule, Eq. (2.16) with the biases), so with the z-rule
``sum_i R_i + R_bias = f(x)`` holds for all four activations, up to one exception:

* ``relu``, ``tanh``, ``identity`` have ``g(0) = 0``: a unit with ``z_j = 0`` has
  ``a_j = 0`` and receives no relevance from above (its messages ``a_j w_jk`` vanish),
  so nothing is lost (these are ReLU-like in this respect).
* ``logistic`` has ``g(0) = 1/2``: a unit with ``z_j = 0`` still sends ``a_j w_jk != 0``
  upward and receives relevance ``R_j``, which it cannot pass down (``R_j / z_j``,
  0/0 := 0 in :mod:`sklrp.rules`). The relevance lost is exactly the sum of ``R_j`` over
  the logistic units whose pre-activation is 0; this is the bound of the z-rule's
  conservation for logistic MLPs (a measure-zero event for generic inputs, but a unit
  with all-zero incoming weights and bias, e.g. after strong L2 regularisation, hits it
  for every sample). Near ``z_j = 0`` the ratio ``g(z_j) / z_j`` of Eq. (2.60) is
  unbounded, so relevances of logistic units grow large and rounding errors grow with
  them; the thesis recommends a stabilised rule for the layer feeding a logistic unit
  (Fig. 2.4: the epsilon rule), which then absorbs ``R_j (b_j + eps sign z_j) / (z_j +
  eps sign z_j)`` per unit as usual (Eq. (2.23)). Note also that for ``z_j < 0`` a logistic
  unit still outputs a positive value, so its relevance changes sign on the way down
  (the thesis' "sign switch", Fig. 2.4).
* ``tanh`` saturates: the gradient vanishes at large ``|z_j|`` but LRP's ratio
  ``tanh(z_j) / z_j`` does not, which is why LRP still attributes relevance through
  saturated units (Fig. 2.4).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.utils.validation import check_is_fitted

from ..propagators import Head, register
from .heads import TorchModel, TorchNetHead

__all__ = ["MLPHead", "mlp_module"]

_ACTIVATIONS = {"identity": torch.nn.Identity, "logistic": torch.nn.Sigmoid, "tanh": torch.nn.Tanh,
                "relu": torch.nn.ReLU}


def mlp_module(mlp, *, dtype=torch.float64, device="cpu") -> torch.nn.Sequential:
    """The network of a fitted MLP as a ``torch.nn.Sequential``, without its output activation.

    Parameters
    ----------
    mlp : MLPClassifier or MLPRegressor
        A fitted multi-layer perceptron.
    dtype : torch.dtype, default=torch.float64
    device : str or torch.device, default="cpu"

    Returns
    -------
    torch.nn.Sequential
        ``Linear`` layers (weights ``coefs_[l].T``, biases ``intercepts_[l]``) with the
        hidden activation between them; its output is the MLP's logits (the input of
        ``out_activation_``).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``mlp`` is not fitted.
    ValueError
        If the hidden activation is not one of identity, logistic, tanh, relu.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.neural_network import MLPRegressor
    >>> from sklrp.nn import mlp_module
    >>> X = np.random.RandomState(0).randn(40, 3)
    >>> reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=50, random_state=0).fit(X, X[:, 0])
    >>> net = mlp_module(reg)
    >>> net
    Sequential(
      (0): Linear(in_features=3, out_features=5, bias=True)
      (1): ReLU()
      (2): Linear(in_features=5, out_features=1, bias=True)
    )
    >>> bool(np.allclose(net(torch.as_tensor(X)).detach().numpy()[:, 0], reg.predict(X)))
    True
    """
    check_is_fitted(mlp, "coefs_", msg=f"This {type(mlp).__name__} instance is not fitted yet; sklrp can only "
                    "explain fitted models.")
    if mlp.activation not in _ACTIVATIONS:
        raise ValueError(f"sklrp cannot explain an MLP with activation={mlp.activation!r}; supported: "
                         f"{sorted(_ACTIVATIONS)}")
    layers = []
    n_layers = len(mlp.coefs_)
    for depth, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        w = np.asarray(w, dtype=np.float64)
        linear = torch.nn.Linear(w.shape[0], w.shape[1], dtype=dtype, device=device)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(w.T))
            linear.bias.copy_(torch.as_tensor(np.asarray(b, dtype=np.float64)))
        linear.requires_grad_(False)
        layers.append(linear)
        if depth < n_layers - 1:
            layers.append(_ACTIVATIONS[mlp.activation]())
    return torch.nn.Sequential(*layers).eval()


def _is_mlp(step):
    return isinstance(step, (MLPClassifier, MLPRegressor))


@register(_is_mlp, name="MLPClassifier, MLPRegressor")
class MLPHead(Head):
    """LRP for scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` (Section 2.3).

    The MLP becomes a torch network (:func:`mlp_module`, built from the current
    ``coefs_`` / ``intercepts_`` for every batch, so a refitted model is never explained
    with stale weights, and concurrent calls share nothing) and is explained by
    :class:`sklrp.nn.TorchNetHead` (through a :class:`sklrp.nn.TorchModel` carrying the
    MLP's classes) with the composite of the ``LRPTransformer`` parameters: ``rule`` for
    every dense layer, ``input_rule`` for the first, ``flat_depth`` for flat bottom layers.

    The explained scores are the logits: the output activation (logistic or softmax) is
    left out (Section 2.3.1). Binary classifiers have one column, positive for
    ``classes_[1]``; explaining ``classes_[0]`` explains ``-z``. Multi-class classifiers
    have one column per class; multi-label classifiers one per label (the target is the
    label's index, the "predicted" target the label with the largest logit); regressors
    one per output (the target is the output index).

    Hidden activations pass relevance unchanged (Eq. (2.37)). With the z-rule the
    decomposition is exactly conservative for identity, relu and tanh; for logistic
    units it loses exactly the relevance of units whose pre-activation is zero
    (``g(0) = 1/2``); see :mod:`sklrp.nn.sklearn_mlp` for the details and the thesis'
    recommendation of a stabilised rule below logistic units (Fig. 2.4).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.neural_network import MLPClassifier
    >>> import sklrp
    >>> X, y = load_iris(return_X_y=True)
    >>> mlp = MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=2000, random_state=0)
    >>> E = sklrp.LRPTransformer(mlp, rule="z").fit(X, y).explain(X[:3])
    >>> E.relevance.shape
    (3, 4)
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance, E.output))
    True
    """

    def __init__(self, step):
        super().__init__(step)
        mlp_module(step)  # fails early (not fitted, unknown activation)
        classes = getattr(step, "classes_", None)
        if isinstance(step, MLPClassifier) and classes is not None and len(classes) < 2:
            raise ValueError(f"this MLPClassifier was fitted on a single class ({classes[0]!r}); it always predicts "
                             "it and there is no decision to explain")

    def _net(self, config) -> TorchNetHead:
        """The torch head of the MLP's current weights, built for this call only (no state shared between calls)."""
        module = mlp_module(self.step, dtype=config.dtype, device=config.device)
        model = TorchModel(module, classes=self.classes).fit(np.zeros((1, self.step.coefs_[0].shape[0])))
        return TorchNetHead(model)

    def scores(self, x, config):
        return self._net(config).scores(x, config)

    def relevance(self, x, weights, scores, config):
        return self._net(config).relevance(x, weights, scores, config)

    def decompose(self, x, labels, config, out=None):
        # one hooked forward pass for scores and relevance (sklrp.nn.TorchNetHead.decompose)
        return self._net(config).decompose(x, labels, config)

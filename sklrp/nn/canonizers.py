"""Canonizers: rewrite a network into an equivalent one that LRP explains better.

:func:`fold_batchnorm` merges every batch normalisation whose input is the output of a
``Linear``/``ConvNd`` layer (and of nothing else) into that layer:
``W' = W s``, ``b' = (b - mu) s + beta`` with ``s = gamma / sqrt(var + eps)``
(Eqs. (2.47)-(2.50) composed with Eq. (2.29)). The folded network computes the
same function; with the z-rule the relevance equals the one of the unfolded
network with batch norm explained by Eq. (2.54). With other rules the folded
form applies the rule to the effective weights, as zennit's canonizers
(``SequentialMergeBatchNorm``, and the batch-norm part of ``ResNetCanonizer``) do.

Which layer feeds which batch norm is read from the network's graph, found by
``torch.fx`` symbolic tracing (no input is needed): networks written with attributes
(``self.bn1(self.conv1(x))`` in a torchvision ``ResNet``) are folded as well as
``nn.Sequential`` ones. A batch norm that follows a concatenation, a sum or an
activation (DenseNet's pre-activation blocks) is left in place and explained by
Eq. (2.54); so is one fed by a layer whose output is also used elsewhere, or by a
layer or batch norm called more than once. A network that ``torch.fx`` cannot trace
(data-dependent control flow in ``forward``) is folded where a batch norm directly
follows a ``Linear``/``ConvNd`` inside an ``nn.Sequential``, with a warning.
"""

from __future__ import annotations

import collections
import copy
import warnings

import torch
from torch import nn

__all__ = ["fold_batchnorm", "batchnorm_pairs"]

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with batch norms folded into the preceding linear layers.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified. A batch norm is folded when its only input is the output of a
        ``Linear`` or ``ConvNd`` layer that feeds nothing else (:func:`batchnorm_pairs`);
        others stay (and are explained by Eq. (2.54)).

    Returns
    -------
    torch.nn.Module
        A deep copy in eval mode, of the same class, in which each folded batch norm is an
        ``nn.Identity``.

    Examples
    --------
    >>> import torch
    >>> from sklrp.nn import fold_batchnorm
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).eval()
    >>> folded = fold_batchnorm(net)
    >>> x = torch.randn(2, 3)
    >>> bool(torch.allclose(net(x), folded(x), atol=1e-6))
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm expects a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    for lin_name, bn_name in batchnorm_pairs(model):
        _fold(model.get_submodule(lin_name), model.get_submodule(bn_name))
        _replace(model, bn_name, nn.Identity())
    return model


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The ``(layer, batch norm)`` names :func:`fold_batchnorm` folds, in forward order.

    A pair is a ``Linear``/``ConvNd`` layer whose output goes only into a batch norm with
    running statistics, each of them called once.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of (str, str)
        Qualified module names (as in ``model.named_modules()``).

    Examples
    --------
    >>> import torch
    >>> from sklrp.nn.canonizers import batchnorm_pairs
    >>> class Block(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    ...         self.bn = torch.nn.BatchNorm2d(2)
    ...
    ...     def forward(self, x):
    ...         return torch.relu(self.bn(self.conv(x))) + x
    >>> batchnorm_pairs(Block())
    [('conv', 'bn')]
    """
    try:
        graph = _trace(model)
    except Exception as exc:  # torch.fx raises many kinds of errors on code it cannot trace
        warnings.warn(
            f"sklrp.nn.fold_batchnorm: torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); folding only batch norms that directly follow a "
            "Linear/ConvNd layer inside an nn.Sequential", RuntimeWarning, stacklevel=3)
        return _sequential_pairs(model)
    modules = dict(model.named_modules())
    calls = collections.Counter(id(modules[n.target]) for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BN):
            continue
        bn = modules[node.target]
        if bn.running_mean is None or bn.running_var is None or len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module"):
            continue
        lin = modules[prev.target]
        if isinstance(lin, _FOLDABLE) and len(prev.users) == 1 and calls[id(lin)] == 1 and calls[id(bn)] == 1:
            pairs.append((prev.target, node.target))
    return pairs


class _LayerTracer(torch.fx.Tracer):
    """Modules without children (and torch's own layers) are leaves: only how they are wired matters."""

    def is_leaf_module(self, m, module_qualified_name):
        return next(m.children(), None) is None or super().is_leaf_module(m, module_qualified_name)


def _trace(model):
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()  # trace the inference path (dropout, batch-norm branches depend on `training`)
    try:
        return _LayerTracer().trace(model)
    finally:
        for m, flag in was_training:
            m.training = flag


def _sequential_pairs(model):
    pairs = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for prev, name in zip(names[:-1], names[1:]):
            lin, bn = seq._modules[prev], seq._modules[name]
            if isinstance(lin, _FOLDABLE) and isinstance(bn, _BN) and bn.running_mean is not None:
                pairs.append((f"{prefix}.{prev}" if prefix else prev, f"{prefix}.{name}" if prefix else name))
    return pairs


def _replace(model, name, new):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def _fold(lin, bn):
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if lin.weight.shape[0] != scale.shape[0]:
        raise ValueError(f"cannot fold {bn!r} into {lin!r}: {scale.shape[0]} != {lin.weight.shape[0]} channels")
    shape = (-1,) + (1,) * (lin.weight.ndim - 1)
    bias = lin.bias if lin.bias is not None else torch.zeros_like(scale)
    new_bias = bias * scale + shift
    lin.weight.mul_(scale.view(shape).to(lin.weight))
    if lin.bias is None:
        lin.bias = nn.Parameter(new_bias.to(lin.weight), requires_grad=lin.weight.requires_grad)
    else:
        lin.bias.copy_(new_bias)

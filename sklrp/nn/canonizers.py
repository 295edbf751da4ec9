"""Canonizers: rewrite a network into an equivalent one that LRP explains better.

:func:`fold_batchnorm` merges every batch normalisation that directly follows a
``Linear``/``ConvNd`` layer (in a ``Sequential``) into that layer:
``W' = W s``, ``b' = (b - mu) s + beta`` with ``s = gamma / sqrt(var + eps)``
(Eqs. (2.47)-(2.50) composed with Eq. (2.29)). The folded network computes the
same function; with the z-rule the relevance equals the one of the unfolded
network with batch norm explained by Eq. (2.54). With other rules the folded
form applies the rule to the effective weights, as zennit's
``SequentialMergeBatchNorm`` canonizer does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm"]

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with batch norms folded into the preceding linear layers.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified. Only a batch norm that immediately follows a ``Linear`` or
        ``ConvNd`` inside the same ``nn.Sequential`` is folded; others stay (and
        are explained by Eq. (2.54)).

    Returns
    -------
    torch.nn.Module
        A deep copy in eval mode where each folded batch norm is an ``nn.Identity``.

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
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, name in zip(names[:-1], names[1:]):
            lin, bn = seq._modules[prev], seq._modules[name]
            if isinstance(lin, _FOLDABLE) and isinstance(bn, _BN) and bn.running_mean is not None:
                _fold(lin, bn)
                seq._modules[name] = nn.Identity()
    return model


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

"""Merge modules that mark where branches of a network join (Eqs. (2.38)-(2.41)).

LRP hooks modules, not arbitrary tensor operations: an addition written as
``a + b`` inside ``forward`` would hand the *full* relevance to both branches
(autograd copies gradients at a sum), doubling it. Residual networks and other
non-sequential models therefore write their merge points with these modules::

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.act = torch.nn.ReLU()
            self.add = sklrp.nn.Add()

        def forward(self, x):
            return self.act(self.add(self.conv(x), x))

Both behave exactly like ``torch.add``/``torch.cat`` when not explaining.
"""

from __future__ import annotations

import torch

__all__ = ["Add", "Concat"]


class Add(torch.nn.Module):
    """Element-wise sum of its inputs; explained by Eq. (2.39).

    Relevance is split proportionally to each summand: ``R_k = x_k / (sum_k' x_k') R``.
    All inputs must have the same shape.

    Examples
    --------
    >>> import torch
    >>> from sklrp.nn import Add
    >>> Add()(torch.ones(2), torch.ones(2))
    tensor([2., 2.])
    """

    def forward(self, *inputs):
        if len(inputs) < 1:
            raise ValueError("Add needs at least one input")
        shape = inputs[0].shape
        for t in inputs[1:]:
            if t.shape != shape:
                raise ValueError(f"Add: all inputs must have the same shape, got {shape} and {t.shape}")
        out = inputs[0]
        for t in inputs[1:]:
            out = out + t
        return out


class Concat(torch.nn.Module):
    """Concatenation along ``dim``; relevance is split back by position (Eq. (2.41)).

    Parameters
    ----------
    dim : int, default=1
        Concatenation axis (1: channels).

    Examples
    --------
    >>> import torch
    >>> from sklrp.nn import Concat
    >>> Concat(dim=1)(torch.ones(1, 2), torch.zeros(1, 1))
    tensor([[1., 1., 0.]])
    """

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def forward(self, *inputs):
        return torch.cat(inputs, dim=self.dim)

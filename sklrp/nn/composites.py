"""Composites: which rule each layer of a torch network gets (Sections 2.2.6, 5.4.1, 5.4.2).

A composite assigns a rule to every linear-type layer (``Linear``, ``ConvNd``) by
layer type and by position, counted from the input in the order the layers run in
the forward pass (position 0 is the input layer):

* ``flat_depth=k``: the lowest ``k`` linear-type layers use the flat rule (Eq. (2.27),
  Eq. (5.1)); relevance is projected uniformly onto receptive fields from layer
  ``k`` down (decomposition depth, Section 5.4.2). Pooling layers inside that
  region spread relevance uniformly over their windows too. Takes precedence over
  ``input_rule``.
* ``input_rule``: the rule of the input layer (e.g. ``"zb"`` for bounded pixels or
  ``"wsquare"``).
* ``conv_rule``: the rule of convolutional layers.
* ``rule``: every other linear-type layer (dense layers).

The thesis' recommendation for ReLU networks (Section 5.4.1) is epsilon = 0.01 on
dense layers and alpha = 2, beta = -1 on convolutions: :data:`THESIS_COMPOSITE`,
usable as ``LRPTransformer(net, **THESIS_COMPOSITE)``; add ``flat_depth=k`` for a
shallower decomposition.

Layers with a fixed decomposition ignore the composite: activations pass relevance
unchanged (Eq. (2.37)), max pooling is winner-take-all (Eqs. (2.33)-(2.35)),
average pooling uses the z-rule (Section 2.3.1), batch normalisation Eq. (2.54),
local response normalisation Eq. (2.46), additions Eq. (2.39).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..rules import Flat, Rule, make_rule

__all__ = ["THESIS_COMPOSITE", "Composite", "composite_from_config"]

THESIS_COMPOSITE = {"rule": "epsilon", "epsilon": 0.01, "conv_rule": "alphabeta", "alpha": 2.0, "beta": -1.0}

_CONV_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


@dataclass(frozen=True)
class Composite:
    """Rule assignment by layer type and position.

    Parameters
    ----------
    rule : Rule
        Rule of dense (and, when ``conv_rule`` is None, convolutional) layers.
    conv_rule : Rule or None
        Rule of ``Conv1d/2d/3d`` layers.
    input_rule : Rule or None
        Rule of the first linear-type layer of the forward pass.
    flat_depth : int or None
        Number of lowest linear-type layers that use the flat rule (Section 5.4.2).

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import Epsilon, AlphaBeta
    >>> from sklrp.nn import Composite
    >>> c = Composite(Epsilon(0.01), conv_rule=AlphaBeta(2, -1), flat_depth=1)
    >>> c.rule_for(torch.nn.Conv2d(1, 2, 3), position=0)
    Flat()
    >>> c.rule_for(torch.nn.Conv2d(1, 2, 3), position=1)
    AlphaBeta(alpha=2, beta=-1)
    >>> c.rule_for(torch.nn.Linear(2, 2), position=2)
    Epsilon(epsilon=0.01)
    """

    rule: Rule
    conv_rule: Rule | None = None
    input_rule: Rule | None = None
    flat_depth: int | None = None

    def __post_init__(self):
        for name in ("rule", "conv_rule", "input_rule"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Rule):
                raise TypeError(f"Composite.{name} must be an sklrp.rules.Rule or None, got {type(value).__name__}")
        if self.rule is None:
            raise TypeError("Composite.rule must be an sklrp.rules.Rule, got None")
        fd = self.flat_depth
        if fd is not None and (isinstance(fd, bool) or not isinstance(fd, numbers.Integral) or fd < 0):
            raise ValueError(f"flat_depth must be None or a non-negative integer, got {fd!r}")

    def is_flat(self, position: int) -> bool:
        """Whether the linear-type layer at ``position`` (0 = input layer) is in the flat region."""
        return self.flat_depth is not None and position < self.flat_depth

    def rule_for(self, module: torch.nn.Module, position: int) -> Rule:
        """The rule of a linear-type ``module`` at forward ``position`` (0 = input layer)."""
        if self.is_flat(position):
            return Flat()
        if position == 0 and self.input_rule is not None:
            return self.input_rule
        if isinstance(module, _CONV_TYPES) and self.conv_rule is not None:
            return self.conv_rule
        return self.rule


def composite_from_config(config) -> Composite:
    """The :class:`Composite` described by a :class:`sklrp.propagators.RuleConfig`."""
    return Composite(config.rule, config.conv_rule, config.input_rule, config.flat_depth)


def make_composite(rule="epsilon", *, conv_rule=None, input_rule=None, flat_depth=None, epsilon=1e-2, alpha=2.0,
                   beta=-1.0, low=0.0, high=1.0) -> Composite:
    """Build a :class:`Composite` from rule names, as :class:`sklrp.LRPTransformer` does.

    Examples
    --------
    >>> from sklrp.nn.composites import make_composite
    >>> make_composite("epsilon", conv_rule="zplus", epsilon=0.1).conv_rule
    AlphaBeta(alpha=1.0, beta=0.0)
    """
    kw = dict(epsilon=epsilon, alpha=alpha, beta=beta, low=low, high=high)
    return Composite(make_rule(rule, **kw), None if conv_rule is None else make_rule(conv_rule, **kw),
                     None if input_rule is None else make_rule(input_rule, **kw), flat_depth)

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

Named composites
----------------
:data:`COMPOSITES` are zennit's LRP composites (``zennit.composites``), defined as zennit
0.5.1 defines them and named as zennit registers them; :func:`make_composite` builds one
by name (``make_composite("epsilon_gamma_box", low=..., high=...)``), and
``LRPTransformer(composite=name, epsilon=..., gamma=..., low=..., high=...)`` uses it with
its parameters, so that ``GridSearchCV`` can search names and parameters alike:

==============================  ==============================  ====================================================
name (zennit class)             dense layers / convolutions     first linear-type layer
==============================  ==============================  ====================================================
``epsilon_plus``                ``Epsilon(epsilon)`` / z+       as the others
(``EpsilonPlus``)               (``AlphaBeta(1, 0)``)
``epsilon_alpha2_beta1``        ``Epsilon(epsilon)`` /          as the others
(``EpsilonAlpha2Beta1``)        ``AlphaBeta(2, -1)``
``epsilon_plus_flat``           ``Epsilon(epsilon)`` / z+       ``Flat()`` (Eq. (2.27))
(``EpsilonPlusFlat``)
``epsilon_alpha2_beta1_flat``   ``Epsilon(epsilon)`` /          ``Flat()``
(``EpsilonAlpha2Beta1Flat``)    ``AlphaBeta(2, -1)``
``epsilon_gamma_box``           ``Epsilon(epsilon)`` /          ``ZBox(low, high)``
(``EpsilonGammaBox``)           ``GeneralizedGamma(gamma)``
==============================  ==============================  ====================================================

Parameters map one to one (zennit's defaults differ: ``epsilon=1e-6``). zennit's
``AlphaBeta(alpha=2, beta=1)`` is ``AlphaBeta(2, -1)`` here (the thesis writes
``alpha + beta = 1``, Eq. (2.26); zennit subtracts ``beta`` times the negative part).
zennit's ``Gamma`` is :class:`sklrp.rules.GeneralizedGamma`, which equals
:class:`sklrp.rules.Gamma` wherever the layer's inputs are non-negative and its output
positive, and stays stable where a residual sum hands relevance to a negative unit.
zennit adds a stabiliser (``stabilizer=1e-6``) to the denominators of the rules other
than epsilon; sklrp divides exactly, with ``0/0 := 0``. Two differences of scope:
zennit's ``EpsilonGammaBox`` gives the box rule to the first *convolution*, sklrp to the
first linear-type layer whatever its type (the same layer in every image network; in a
network that starts with a dense layer zennit keeps epsilon there); and zennit passes
relevance through an unfolded batch norm unchanged, where sklrp applies Eq. (2.54)
(fold it with :func:`sklrp.nn.fold_batchnorm` to match zennit's canonizers). zennit's
other composites (``guided_backprop``, ``deconvnet``, ``excitation_backprop``,
``beta_smooth``) modify gradients and are not LRP composites.

Layers with a fixed decomposition ignore the composite: activations pass relevance
unchanged (Eq. (2.37)), max pooling is winner-take-all (Eqs. (2.33)-(2.35)),
average pooling uses the z-rule (Section 2.3.1), batch normalisation Eq. (2.54),
local response normalisation Eq. (2.46), additions Eq. (2.39).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ..rules import RULE_NAMES, AlphaBeta, Epsilon, Flat, GeneralizedGamma, Rule, ZBox, ZPlus, make_rule

__all__ = ["COMPOSITES", "THESIS_COMPOSITE", "Composite", "composite_from_config", "make_composite"]

THESIS_COMPOSITE = {"rule": "epsilon", "epsilon": 0.01, "conv_rule": "alphabeta", "alpha": 2.0, "beta": -1.0}

#: zennit's LRP composites by their registered names, with the zennit class each reproduces (see the module docstring).
COMPOSITES = {
    "epsilon_plus": "EpsilonPlus",
    "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1",
    "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
    "epsilon_gamma_box": "EpsilonGammaBox",
}

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
    """The :class:`Composite` described by a :class:`sklrp.propagators.RuleConfig`.

    ``config.composite`` when it is set (a named composite of ``LRPTransformer``), else the
    composite of ``rule``, ``conv_rule``, ``input_rule`` and ``flat_depth``.
    """
    if config.composite is not None:
        return config.composite
    return Composite(config.rule, config.conv_rule, config.input_rule, config.flat_depth)


def _composite_key(name):
    return name.lower().replace("-", "").replace("_", "")


_BY_KEY = {_composite_key(name): name for name in COMPOSITES}
_BY_KEY.update({_composite_key(cls): name for name, cls in COMPOSITES.items()})


def composite_name(name):
    """The registered name of a named composite (``"EpsilonGammaBox"`` -> ``"epsilon_gamma_box"``), or None.

    Examples
    --------
    >>> from sklrp.nn.composites import composite_name
    >>> composite_name("EpsilonGammaBox"), composite_name("epsilon"), composite_name(3)
    ('epsilon_gamma_box', None, None)
    """
    return _BY_KEY.get(_composite_key(name)) if isinstance(name, str) else None


def _named(name, *, flat_depth, epsilon, gamma, low, high):
    eps = Epsilon(float(epsilon) if isinstance(epsilon, numbers.Real) else epsilon)
    if name == "epsilon_plus":
        return Composite(eps, conv_rule=ZPlus(), flat_depth=flat_depth)
    if name == "epsilon_alpha2_beta1":
        return Composite(eps, conv_rule=AlphaBeta(2.0, -1.0), flat_depth=flat_depth)
    if name == "epsilon_plus_flat":
        return Composite(eps, conv_rule=ZPlus(), input_rule=Flat(), flat_depth=flat_depth)
    if name == "epsilon_alpha2_beta1_flat":
        return Composite(eps, conv_rule=AlphaBeta(2.0, -1.0), input_rule=Flat(), flat_depth=flat_depth)
    return Composite(eps, conv_rule=GeneralizedGamma(float(gamma) if isinstance(gamma, numbers.Real) else gamma),
                     input_rule=ZBox(low, high), flat_depth=flat_depth)


def make_composite(rule="epsilon", *, conv_rule=None, input_rule=None, flat_depth=None, epsilon=1e-2, alpha=2.0,
                   beta=-1.0, low=0.0, high=1.0, gamma=0.25) -> Composite:
    """Build a :class:`Composite` from rule names, or a named composite, as :class:`sklrp.LRPTransformer` does.

    Parameters
    ----------
    rule : str or Rule, default="epsilon"
        The rule of dense layers (a name of :func:`sklrp.rules.make_rule` or a Rule), or the
        name of a composite of :data:`COMPOSITES` (zennit's registered name, e.g.
        ``"epsilon_gamma_box"``, or its class name, ``"EpsilonGammaBox"``), which then sets
        the rules of all linear-type layers.
    conv_rule, input_rule : str or Rule, default=None
        Rules of convolutions and of the first linear-type layer (None: ``rule``). Not
        allowed with a named composite, which sets them.
    flat_depth : int, default=None
        The lowest ``flat_depth`` linear-type layers use the flat rule (also with a named
        composite).
    epsilon, alpha, beta, low, high, gamma
        Parameters of the rules (``alpha + beta = 1``, Eq. (2.26)); a named composite uses
        ``epsilon`` and, for ``"epsilon_gamma_box"``, ``gamma``, ``low`` and ``high``.

    Returns
    -------
    Composite

    Raises
    ------
    ValueError
        For an unknown name (the message lists the rules and composites), or a named
        composite with ``conv_rule`` / ``input_rule``.

    Examples
    --------
    >>> from sklrp.nn.composites import make_composite
    >>> make_composite("epsilon", conv_rule="zplus", epsilon=0.1).conv_rule
    AlphaBeta(alpha=1.0, beta=0.0)
    >>> c = make_composite("epsilon_gamma_box", epsilon=1e-6, gamma=0.5, low=-1.0, high=1.0)
    >>> c.rule, c.conv_rule, c.input_rule
    (Epsilon(epsilon=1e-06), GeneralizedGamma(gamma=0.5), ZBox(low=-1.0, high=1.0))
    """
    name = composite_name(rule)
    if name is not None:
        if conv_rule is not None or input_rule is not None:
            given = [k for k, v in (("conv_rule", conv_rule), ("input_rule", input_rule)) if v is not None]
            raise ValueError(f"the composite {name!r} sets the rules of all layers; {' and '.join(given)} cannot be "
                             "given with it (pass rule names instead of a composite to choose them)")
        return _named(name, flat_depth=flat_depth, epsilon=epsilon, gamma=gamma, low=low, high=high)
    kw = dict(epsilon=epsilon, alpha=alpha, beta=beta, low=low, high=high, gamma=gamma)

    def build(value):
        try:
            return make_rule(value, **kw)
        except ValueError as exc:
            if isinstance(value, str) and str(exc).startswith("unknown rule"):
                raise ValueError(f"unknown rule or composite {value!r}; expected a rule name {RULE_NAMES}, a "
                                 f"composite name {tuple(COMPOSITES)} or a Rule instance") from None
            raise

    return Composite(build(rule), None if conv_rule is None else build(conv_rule),
                     None if input_rule is None else build(input_rule), flat_depth)

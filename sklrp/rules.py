"""LRP decomposition rules for linear mappings (thesis Section 2.2.6, Table 2.1).

A *linear mapping* is any forward step of the form ``z_j = sum_i x_i w_ij + b_j``
(Eq. (2.14), Eq. (2.29)): a dense layer, a diagonal scaling, a convolution. A rule
maps upper-layer relevance ``R_j`` to lower-layer relevance ``R_i`` through the
messages ``R_{i<-j}`` of Eq. (2.10) and aggregates them with Eq. (2.12)/(2.13).

Rules never know which model they serve: they only see a :class:`LinearMap`, which
exposes the forward product ``x @ f(W)`` and its transpose ``s @ f(W).T`` for a few
element-wise views ``f`` of the weights (the weights themselves, their positive
and negative parts, their squares, and the connectivity mask). Every rule below is
written once against that interface, so it serves dense, diagonal and (in
``sklrp.nn``) convolutional mappings alike.

Conventions
-----------
* ``sign(0) = +1`` in the epsilon rule, as Eq. (2.22) requires.
* Whenever a rule divides zero by zero (``z_j = 0`` in the z-rule, or an empty
  positive/negative part in the alpha-beta rule) the message is defined as 0.
  The relevance of that unit is then *absorbed*: it shows up as the difference
  between upper- and lower-layer relevance, never as NaN or inf.
* All tensors are torch tensors of shape ``(n_samples, n_features)``; computations
  run in the tensors' dtype and device.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch

__all__ = [
    "Rule",
    "Z",
    "Epsilon",
    "AlphaBeta",
    "ZPlus",
    "Flat",
    "WSquare",
    "ZB",
    "LinearMap",
    "DenseMap",
    "DiagonalMap",
    "LayerRelevance",
    "propagate",
    "make_rule",
    "RULE_NAMES",
]

# Views of the weight matrix a rule may ask for.
_WEIGHT_VIEWS = ("w", "pos", "neg", "sq", "mask")


def _view(w: torch.Tensor, view: str) -> torch.Tensor:
    if view == "w":
        return w
    if view == "pos":
        return w.clamp(min=0)
    if view == "neg":
        return w.clamp(max=0)
    if view == "sq":
        return w * w
    if view == "mask":
        return (w != 0).to(w.dtype)
    raise ValueError(f"unknown weight view {view!r}; expected one of {_WEIGHT_VIEWS}")


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0 where ``den == 0`` (the 0/0 := 0 convention); other quotients as they are."""
    return torch.div(num, den).masked_fill_(den == 0, 0.0)


# The hot paths of the rules avoid boolean tensors: on CPUs torch's comparison, ``where`` and
# ``masked_fill`` kernels run an order of magnitude slower than arithmetic.


def _div0(num, den, out=None):
    """``num / den`` with every non-finite quotient set to 0, in two vectorised passes.

    This is the 0/0 := 0 convention of the rules (a unit with ``z_j = 0`` passes no
    relevance; the loop references in the tests skip such units) for ``R_j / 0`` as
    well, and equals ``torch.where(den == 0, 0, num / den)`` wherever ``num`` is finite
    and the quotient does not overflow. A NaN relevance (from a model whose output is
    not finite) is set to 0 too, so callers check the output (``LRPTransformer`` checks
    its input, ``sklrp.nn.lrp`` the network output). ``out`` may be a (strided) view
    and may alias ``den``.
    """
    return torch.div(num, den, out=out).nan_to_num_(0.0, 0.0, 0.0)


_CONSTANTS: dict = {}


def _constant(value, like):
    """A cached 0-dim tensor of ``value`` with the dtype and device of ``like``, for the ops that
    take no Python number; a fresh one would cost a fill kernel per layer on a GPU."""
    key = (value, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


def _epsilon_den(z, eps):
    """``z + eps sign(z)`` (Eq. (2.22)) by ``copysign``, without boolean tensors.

    The thesis takes ``sign(0) = +1``; ``copysign`` gives ``-eps`` at ``z = -0.0``. That
    cannot change any relevance: a sum is ``-0.0`` only when all its terms are, so
    every ``z_ij = x_i w_ij`` and ``b_j`` of such a unit is zero and its messages
    ``x_i w_ij s_j`` and ``b_j s_j`` vanish whatever the sign of ``s_j``.
    """
    return torch.copysign(_constant(eps, z), z).add_(z)


class LinearMap:
    """Abstract linear mapping ``z = x @ W + b`` as seen by a rule.

    Subclasses implement :meth:`forward` (``x @ f(W)``) and :meth:`backward`
    (``s @ f(W).T``, a new tensor: the rules scale it in place) for the weight views
    ``"w"``, ``"pos"``, ``"neg"``, ``"sq"`` and ``"mask"``; ``bias`` is ``None`` or a
    tensor broadcastable to the output.
    """

    bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, view: str = "w") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def backward(self, s: torch.Tensor, view: str = "w") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass ``z_j = sum_i x_i w_ij + b_j`` (Eq. (2.29))."""
        z = self.forward(x)
        return z if self.bias is None else z + self.bias


class DenseMap(LinearMap):
    """Dense mapping ``z = x @ W + b`` with ``W`` of shape ``(n_in, n_out)``.

    Parameters
    ----------
    weight : torch.Tensor of shape (n_in, n_out)
    bias : torch.Tensor of shape (n_out,) or None
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias
        self._views: dict[str, torch.Tensor] = {}

    def _w(self, view: str) -> torch.Tensor:
        if view not in self._views:
            self._views[view] = _view(self.weight, view)
        return self._views[view]

    def forward(self, x, view="w"):
        return x @ self._w(view)

    def backward(self, s, view="w"):
        return s @ self._w(view).T


class DiagonalMap(LinearMap):
    """Element-wise mapping ``z_d = x_d * w_d + b_d`` (scalers, Eqs. (2.48)-(2.54)).

    ``weight`` may be of shape ``(n_features,)`` or, for a per-sample scaling such
    as a row normaliser, ``(n_samples, n_features)``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias

    def forward(self, x, view="w"):
        return x * _view(self.weight, view)

    def backward(self, s, view="w"):
        return s * _view(self.weight, view)

    def output(self, x):
        # one pass instead of a product and a sum
        return x * self.weight if self.bias is None else torch.addcmul(self.bias, x, self.weight)


class LayerRelevance(NamedTuple):
    """Result of one backward step.

    Attributes
    ----------
    input : torch.Tensor of shape (n_samples, n_in)
        Lower-layer relevance ``R_i`` (Eq. (2.13)).
    bias : torch.Tensor of shape (n_samples,)
        Relevance attributed to the bias units ``R_b`` (Eq. (2.16)), summed over ``j``.
    """

    input: torch.Tensor
    bias: torch.Tensor


def _bias_relevance(bias, s, n, like):
    if bias is None:
        return like.new_zeros(n)
    if bias.ndim == 1 and s.ndim == 2:
        return s @ bias  # no (n, n_out) temporary
    return (s * bias).sum(dim=1)


@dataclass(frozen=True)
class Rule:
    """Base class of the decomposition rules (Table 2.1).

    A rule is an immutable value object; :meth:`propagate` applies it to one
    linear mapping in batch.
    """

    name: ClassVar[str] = ""

    def propagate(self, lmap: LinearMap, x: torch.Tensor, relevance: torch.Tensor) -> LayerRelevance:
        """Map upper relevance ``R_j`` (n, n_out) to ``R_i`` (n, n_in) and ``R_b`` (n,)."""
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True)
class Z(Rule):
    """Basic rule ``R_i = sum_j z_ij / z_j R_j`` (Eqs. (2.10), (2.13)).

    Exactly conservative including the bias term of Eq. (2.16): ``sum_i R_i + R_b
    = sum_j R_j`` for every ``j`` with ``z_j != 0``. Units with ``z_j = 0`` pass
    no relevance (0/0 := 0).

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import Z, DenseMap
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> lmap = DenseMap(torch.tensor([[1.0], [1.0]], dtype=torch.float64))
    >>> Z().propagate(lmap, x, lmap.output(x)).input
    tensor([[1., 2.]], dtype=torch.float64)
    """

    name: ClassVar[str] = "z"

    def propagate(self, lmap, x, relevance):
        z = lmap.output(x)
        s = _div0(relevance, z)
        return LayerRelevance(lmap.backward(s).mul_(x), _bias_relevance(lmap.bias, s, x.shape[0], x))


@dataclass(frozen=True)
class Epsilon(Rule):
    """Epsilon rule ``R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j`` (Eqs. (2.21), (2.22)).

    ``sign(0) = +1``. Relevance is absorbed by the bias and by the stabiliser as in
    Eq. (2.23): ``sum_i R_{i<-j} = R_j (1 - (b_j + eps sign z_j) / (z_j + eps sign z_j))``.

    Parameters
    ----------
    epsilon : float, default=1e-2
        Non-negative stabiliser.

    Examples
    --------
    >>> from sklrp.rules import Epsilon
    >>> Epsilon(0.1)
    Epsilon(epsilon=0.1)
    """

    epsilon: float = 1e-2
    name: ClassVar[str] = "epsilon"

    def __post_init__(self):
        if not isinstance(self.epsilon, numbers.Real) or not np.isfinite(self.epsilon) or self.epsilon < 0:
            raise ValueError(f"Epsilon rule: epsilon must be a finite number >= 0, got {self.epsilon!r}")

    def propagate(self, lmap, x, relevance):
        z = lmap.output(x)
        if self.epsilon > 0:  # |z + eps sign z| >= eps: no zero denominators
            s = _epsilon_den(z, self.epsilon)
            torch.div(relevance, s, out=s)
        else:
            s = _div0(relevance, z)
        return LayerRelevance(lmap.backward(s).mul_(x), _bias_relevance(lmap.bias, s, x.shape[0], x))


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """Alpha-beta rule ``R_i = sum_j (alpha z+_ij/z+_j + beta z-_ij/z-_j) R_j`` (Eqs. (2.24)-(2.26)).

    The thesis' convention is used: ``alpha + beta = 1`` and ``alpha >= 1``, so the
    common "a2b1" rule is ``AlphaBeta(2, -1)``. zennit and iNNvestigate write the same
    rule as ``alpha - beta = 1`` with ``beta >= 0`` and *subtract* the negative part:
    their ``(alpha, beta)`` is our ``(alpha, -beta)``. Positive and negative parts
    include the bias (Eq. (2.25)); the rule is exactly conservative when there is no
    bias and both parts of every unit are non-empty. An empty part (``z+_j = 0`` or
    ``z-_j = 0``) passes no relevance (0/0 := 0).

    Parameters
    ----------
    alpha : float, default=2.0
    beta : float, default=-1.0

    Examples
    --------
    >>> from sklrp.rules import AlphaBeta
    >>> AlphaBeta(2.0, -1.0)
    AlphaBeta(alpha=2.0, beta=-1.0)
    """

    alpha: float = 2.0
    beta: float = -1.0
    name: ClassVar[str] = "alphabeta"

    def __post_init__(self):
        for label, v in (("alpha", self.alpha), ("beta", self.beta)):
            if not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"AlphaBeta rule: {label} must be a finite number, got {v!r}")
        if not np.isclose(self.alpha + self.beta, 1.0):
            raise ValueError(
                f"AlphaBeta rule: alpha + beta must equal 1 (Eq. (2.26)), got alpha={self.alpha}, "
                f"beta={self.beta}. zennit's alpha=2, beta=1 is AlphaBeta(2, -1) here."
            )
        if self.alpha < 1:
            raise ValueError(f"AlphaBeta rule: alpha must be >= 1 (Eq. (2.26)), got {self.alpha}")

    def propagate(self, lmap, x, relevance):
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        # z+_ij = x+ w+ + x- w-,   z-_ij = x+ w- + x- w+   (Eq. (2.25))
        zp = lmap.forward(xp, "pos") + lmap.forward(xn, "neg")
        zn = lmap.forward(xp, "neg") + lmap.forward(xn, "pos")
        bias = lmap.bias
        if bias is not None:
            bp, bn = bias.clamp(min=0), bias.clamp(max=0)
            zp, zn = zp + bp, zn + bn
        sp = _safe_divide(self.alpha * relevance, zp)
        sn = _safe_divide(self.beta * relevance, zn)
        r_in = xp * (lmap.backward(sp, "pos") + lmap.backward(sn, "neg")) + xn * (
            lmap.backward(sp, "neg") + lmap.backward(sn, "pos")
        )
        if bias is None:
            r_bias = x.new_zeros(x.shape[0])
        else:
            r_bias = (sp * bp + sn * bn).sum(dim=1)
        return LayerRelevance(r_in, r_bias)


def ZPlus() -> AlphaBeta:
    """The z+ rule, ``AlphaBeta(alpha=1, beta=0)`` (Eq. (2.26), Deep Taylor Decomposition).

    Examples
    --------
    >>> from sklrp.rules import ZPlus
    >>> ZPlus()
    AlphaBeta(alpha=1.0, beta=0.0)
    """
    return AlphaBeta(1.0, 0.0)


class _WeightOnlyRule(Rule):
    """Rules whose shares depend on a weight view only: ``R_i = sum_j v_ij / sum_i' v_i'j R_j``.

    ``v = f(W)`` is the class's ``view``; inputs and bias are ignored, so the rule is
    exactly conservative for units with a non-zero denominator (0/0 := 0 otherwise).
    """

    view: ClassVar[str]

    def propagate(self, lmap, x, relevance):
        # the same for every sample: computed on one row of ones, broadcast over the batch
        denominator = lmap.forward(x.new_ones((1, *x.shape[1:])), self.view)
        s = _safe_divide(relevance, denominator)
        return LayerRelevance(lmap.backward(s, self.view), x.new_zeros(x.shape[0]))


@dataclass(frozen=True)
class Flat(_WeightOnlyRule):
    """Flat rule ``R_i = sum_j R_j / #{i' -> j}`` (Eq. (2.27)).

    Spreads each ``R_j`` uniformly over the inputs connected to ``j`` (``w_ij != 0``,
    its receptive field). Input values and bias are ignored, so it is exactly
    conservative: ``sum_i R_i = sum_j R_j`` for units with at least one input.

    Examples
    --------
    >>> from sklrp.rules import Flat
    >>> Flat()
    Flat()
    """

    name: ClassVar[str] = "flat"
    view: ClassVar[str] = "mask"


@dataclass(frozen=True)
class WSquare(_WeightOnlyRule):
    """w^2 rule ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j`` (Eq. (2.28)).

    Ignores inputs and bias; exactly conservative for units with a non-zero weight.

    Examples
    --------
    >>> from sklrp.rules import WSquare
    >>> WSquare()
    WSquare()
    """

    name: ClassVar[str] = "wsquare"
    view: ClassVar[str] = "sq"


@dataclass(frozen=True)
class ZB(Rule):
    """Bounded-input rule for a first layer with ``low <= x <= high`` (Deep Taylor, Table 2.1).

    ``z_ij = x_i w_ij - l_i w+_ij - h_i w-_ij`` and ``R_i = sum_j z_ij / sum_i' z_i'j R_j``.
    The bias is ignored, so the rule is exactly conservative wherever the
    denominator is non-zero (0/0 := 0).

    Parameters
    ----------
    low, high : float or array-like of shape (n_features,)
        Lower and upper bounds of the input domain; ``low <= high``.

    Examples
    --------
    >>> from sklrp.rules import ZB
    >>> ZB(0.0, 1.0)
    ZB(low=0.0, high=1.0)
    """

    low: float | tuple = 0.0
    high: float | tuple = 1.0
    name: ClassVar[str] = "zb"

    def __post_init__(self):
        lo, hi = np.asarray(self.low, dtype=float), np.asarray(self.high, dtype=float)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("ZB rule: low and high must be finite")
        if np.any(lo > hi):
            raise ValueError("ZB rule: low must be <= high")

    def _bound(self, value, x):
        b = torch.as_tensor(np.asarray(value, dtype=float), dtype=x.dtype, device=x.device)
        return torch.broadcast_to(b, x.shape) if b.ndim <= 1 else b

    def propagate(self, lmap, x, relevance):
        lo, hi = self._bound(self.low, x), self._bound(self.high, x)
        z = lmap.forward(x) - lmap.forward(lo, "pos") - lmap.forward(hi, "neg")
        s = _safe_divide(relevance, z)
        r_in = x * lmap.backward(s) - lo * lmap.backward(s, "pos") - hi * lmap.backward(s, "neg")
        return LayerRelevance(r_in, x.new_zeros(x.shape[0]))


def propagate(rule: Rule, lmap: LinearMap, x: torch.Tensor, relevance: torch.Tensor) -> LayerRelevance:
    """Apply ``rule`` to the linear mapping ``lmap`` at input ``x`` (Algorithm 1, one step).

    Parameters
    ----------
    rule : Rule
    lmap : LinearMap
    x : torch.Tensor of shape (n_samples, n_in)
    relevance : torch.Tensor of shape (n_samples, n_out)

    Returns
    -------
    LayerRelevance
        ``input`` of shape (n_samples, n_in) and ``bias`` of shape (n_samples,).

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import Epsilon, DenseMap, propagate
    >>> x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    >>> lmap = DenseMap(torch.tensor([[1.0], [1.0]], dtype=torch.float64))
    >>> propagate(Epsilon(0.0), lmap, x, torch.tensor([[8.0]], dtype=torch.float64)).input
    tensor([[2., 6.]], dtype=torch.float64)
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an sklrp.rules.Rule, got {type(rule).__name__}")
    return rule.propagate(lmap, x, relevance)


RULE_NAMES = ("z", "epsilon", "alphabeta", "zplus", "flat", "wsquare", "zb")


def make_rule(rule="epsilon", *, epsilon=1e-2, alpha=2.0, beta=-1.0, low=0.0, high=1.0) -> Rule:
    """Build a :class:`Rule` from an estimator-style name and its parameters.

    Parameters
    ----------
    rule : str or Rule
        One of ``"z"``, ``"epsilon"``, ``"alphabeta"``, ``"zplus"``, ``"flat"``,
        ``"wsquare"``, ``"zb"``, or a :class:`Rule` instance (returned as is).
    epsilon, alpha, beta, low, high
        Parameters of the named rule; ignored by rules that do not use them.

    Returns
    -------
    Rule

    Examples
    --------
    >>> from sklrp.rules import make_rule
    >>> make_rule("alphabeta", alpha=1.0, beta=0.0)
    AlphaBeta(alpha=1.0, beta=0.0)
    """
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a rule name or an sklrp.rules.Rule, got {type(rule).__name__}")
    key = rule.lower().replace("-", "").replace("_", "")
    aliases = {"z": "z", "zero": "z", "epsilon": "epsilon", "eps": "epsilon", "alphabeta": "alphabeta",
               "zplus": "zplus", "z+": "zplus", "flat": "flat", "wsquare": "wsquare", "w2": "wsquare",
               "zb": "zb"}
    if key not in aliases:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULE_NAMES} or a Rule instance")
    key = aliases[key]
    if key == "z":
        return Z()
    if key == "epsilon":
        return Epsilon(float(epsilon) if isinstance(epsilon, numbers.Real) else epsilon)
    if key == "alphabeta":
        return AlphaBeta(float(alpha), float(beta))
    if key == "zplus":
        return ZPlus()
    if key == "flat":
        return Flat()
    if key == "wsquare":
        return WSquare()
    low = low if np.ndim(low) == 0 else tuple(np.ravel(low))
    high = high if np.ndim(high) == 0 else tuple(np.ravel(high))
    return ZB(low, high)

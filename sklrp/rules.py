"""LRP decomposition rules for linear mappings (thesis Section 2.2.6, Table 2.1).

A *linear mapping* is any forward step of the form ``z_j = sum_i x_i w_ij + b_j``
(Eq. (2.14), Eq. (2.29)): a dense layer, a diagonal scaling, a convolution, a pooling
of local descriptors. A rule maps upper-layer relevance ``R_j`` to lower-layer
relevance ``R_i`` through the messages ``R_{i<-j}`` of Eq. (2.10) and aggregates them
with Eq. (2.12)/(2.13).

How a rule is written
---------------------
Every rule of this module is a sum of *parts* (Eq. (2.10), split as in Eqs. (2.24)-(2.26)).
A :class:`Part` ``p`` lists its :class:`Term` s ``t``, each an input modifier ``a_t(x)``
(``x``, ``x+``, ``x-``, ``|x|``, ones, or a rule's own constant such as a bound), an
element-wise view ``v_t`` of the weights and a sign; a view of the bias; and a
coefficient ``c_p``::

    z^p_j = sum_t sign_t sum_i a_t(x)_i v_t(W)_ij + v_p(b)_j            (the part's denominator)
    s^p_j = rule.scale(R_j, z^p_j)                                       (R_j / stab(z^p_j))
    R_i   = sum_p c_p sum_t sign_t a_t(x)_i sum_j v_t(W)_ij s^p_j       (Eq. (2.13))
    R_b   = sum_p c_p sum_j v_p(b)_j s^p_j                               (Eq. (2.16))

:meth:`Rule.propagate` evaluates this on any :class:`LinearMap`, which exposes the
products ``a @ v(W)`` and ``s @ v(W).T`` for the weight views a rule asks for. The fast
paths of :mod:`sklrp.nn` (convolutions on the layers' own tensor shapes) and
:mod:`sklrp.bow` (pooled descriptor mappings in chunks) are such maps: they never look
at a rule's type, so a new rule, or a user's subclass, runs the same arithmetic
everywhere, and a map that cannot serve a view or an input says so with a
``TypeError`` naming the rule and the layer (:func:`check_rule`).

Capabilities a fast path may ask a rule for: :meth:`Rule.parts`, :meth:`Rule.scale`
(the per-unit scaled relevance ``s_j``), :attr:`Rule.quotient` (the messages are the
layer's own ``z_ij`` scaled per output unit, as for the z- and epsilon rules),
:attr:`Rule.input_invariant` (flat, w^2: the shares do not depend on the input) and
:attr:`Rule.uses_input_sign` (alpha-beta: the input's positive and negative parts
are treated apart).

Conventions
-----------
* ``sign(0) = +1`` in the epsilon rule, as Eq. (2.22) requires.
* One division, :func:`safe_divide`, for every rule and layer: a zero denominator gives
  a zero quotient (0/0 := 0, as the thesis takes it, and ``x/0 := 0`` for finite ``x``:
  a unit with ``z_j = 0`` passes no relevance, which is then *absorbed* -- it shows up
  as the difference between upper- and lower-layer relevance, never as NaN or inf).
  NaN is never turned into a number.
* Tensors have the batch along their first axis; :class:`DenseMap` and
  :class:`DiagonalMap` take ``(n_samples, n_features)``; computations run in the
  tensors' dtype and device.

Why one module: it is the single place where rule arithmetic lives (every fast path in
``sklrp.nn`` and ``sklrp.bow`` asks it for parts); splitting the rules from the parts
machinery they are written in would put one idea in two places.
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
    "ZBox",
    "ZB",
    "Gamma",
    "GeneralizedGamma",
    "AbsZ",
    "Term",
    "Part",
    "LinearMap",
    "DenseMap",
    "DiagonalMap",
    "LayerRelevance",
    "check_rule",
    "propagate",
    "make_rule",
    "safe_divide",
    "signed_parts",
    "signed_view",
    "RULE_NAMES",
    "TERM_INPUTS",
]


# ----------------------------------------------------------------------------- division and views
def safe_divide(num: torch.Tensor, den: torch.Tensor, out: torch.Tensor | None = None, *,
                nonzero: bool = False, overwrite: bool = False, factor: float = 1.0) -> torch.Tensor:
    """``num / den`` with a zero quotient wherever ``den == 0``: the one division of all rules.

    * ``0 / 0 := 0``: the thesis' convention (a unit with ``z_j = 0`` or an empty
      positive/negative part passes no relevance, as in the LRP Toolbox).
    * ``x / 0 := 0`` for every finite ``x`` too: a unit whose denominator vanishes passes
      nothing, so its relevance is absorbed (visible as a conservation deficit). A
      subnormal denominator whose reciprocal overflows (``|den| < 1 / max``, e.g. below
      ``2.9e-39`` in float32) counts as zero.
    * NaN is never turned into a number: a NaN operand gives NaN (also over a zero
      denominator), and so does an infinite numerator over a zero denominator.
      Otherwise IEEE arithmetic: ``x / inf = 0``, a quotient beyond the dtype's range is
      ``+-inf``.

    Computed as ``num * (1 / den)`` with the infinite reciprocals of zero denominators
    set to 0 (within 1.5 ulp of ``num / den``): arithmetic only, as fast as a plain
    division. On CPUs boolean tensors, ``where`` and ``masked_fill`` run several times
    slower than arithmetic. ``out`` may be ``den`` itself (when it has the broadcast
    shape); ``overwrite=True`` allows ``den`` to be used as scratch (no temporary).
    ``factor`` multiplies the quotient in the same pass (``num * (factor / den)``).
    ``nonzero=True`` is the caller's guarantee that no denominator is zero or subnormal
    (the epsilon rule's ``|z_j + eps sign z_j| >= eps``): the plain division then gives
    the same zeros and NaNs.

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import safe_divide
    >>> safe_divide(torch.tensor([1.0, 0.0, 2.0, float("nan")]), torch.tensor([2.0, 0.0, 0.0, 0.0]))
    tensor([0.5000, 0.0000, 0.0000,    nan])
    """
    if nonzero:
        q = torch.div(num, den, out=out)
        return q if factor == 1 else q.mul_(factor)
    if factor == 1:
        inv = den.reciprocal_() if out is den or overwrite else torch.reciprocal(den)
    else:
        inv = torch.div(_constant(float(factor), den), den, out=den if out is den or overwrite else None)
    inv.nan_to_num_(nan=float("nan"), posinf=0.0, neginf=0.0)  # 1/0 := 0; NaN stays
    return inv.mul_(num) if out is den else torch.mul(num, inv, out=out)




_CONSTANTS: dict = {}


def _constant(value, like):
    """A cached 0-dim tensor of ``value`` with the dtype and device of ``like``, for the ops that
    take no Python number; a fresh one would cost a fill kernel per layer on a GPU."""
    key = (value, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


# Element-wise views of a weight matrix (or bias) a rule may ask for. ``("signed", p, n)`` is
# ``p w+ + n w-``; the common ones have names. "conn" is the connectivity of the mapping: 1 for every
# input connected to the output unit (its receptive field), whatever the weight's value (Eq. (2.27)).
_NAMED = {(1.0, 1.0): "w", (1.0, 0.0): "pos", (0.0, 1.0): "neg", (1.0, -1.0): "abs"}
_SIGNED = {name: pn for pn, name in _NAMED.items()}
_WEIGHT_VIEWS = ("w", "pos", "neg", "abs", "sq", "conn", "('signed', p, n)")


def signed_view(pos: float, neg: float):
    """The weight view ``pos * w+ + neg * w-`` (``w`` is ``(1, 1)``, ``|w|`` is ``(1, -1)``).

    Examples
    --------
    >>> from sklrp.rules import signed_view
    >>> signed_view(1.0, 1.0), signed_view(1.25, 1.0)
    ('w', ('signed', 1.25, 1.0))
    """
    key = (float(pos), float(neg))
    return _NAMED.get(key, ("signed",) + key)


def signed_parts(view):
    """``(p, n)`` of a signed view (``"w"`` is ``(1, 1)``, ``"abs"`` is ``(1, -1)``), or None for "sq" / "conn".

    Examples
    --------
    >>> from sklrp.rules import signed_parts
    >>> signed_parts("neg"), signed_parts(("signed", 1.25, 1.0)), signed_parts("sq")
    ((0.0, 1.0), (1.25, 1.0), None)
    """
    if isinstance(view, tuple) and len(view) == 3 and view[0] == "signed":
        return view[1], view[2]
    return _SIGNED.get(view)


def _view(w: torch.Tensor, view) -> torch.Tensor:
    """The element-wise view of a weight tensor; "conn" treats every entry as a connection."""
    if view == "w":
        return w
    if view == "pos":
        return w.clamp(min=0)
    if view == "neg":
        return w.clamp(max=0)
    if view == "abs":
        return w.abs()
    if view == "sq":
        return w * w
    if view == "conn":
        return torch.ones_like(w)
    pn = signed_parts(view)
    if pn is None:
        raise ValueError(f"unknown weight view {view!r}; expected one of {_WEIGHT_VIEWS}")
    return w.clamp(min=0).mul_(pn[0]).add_(w.clamp(max=0), alpha=pn[1])


# ----------------------------------------------------------------------------- linear maps
#: Term inputs every map understands; other names are a rule's own constants (:meth:`Rule.term_input`).
TERM_INPUTS = ("x", "x+", "x-", "|x|", "1")


class LinearMap:
    """Abstract linear mapping ``z = x @ W + b`` as seen by a rule.

    Subclasses implement :meth:`forward` (``x @ f(W)``) and :meth:`backward`
    (``s @ f(W).T``), both returning new tensors (the rules update them in place), for
    the weight views of :func:`_view`: ``"w"``, ``"pos"``, ``"neg"``, ``"abs"``,
    ``"sq"``, ``"conn"`` and signed views ``("signed", p, n)``. ``bias`` is ``None`` or a
    tensor broadcastable to the output. The other methods have generic defaults that
    fast maps override: :meth:`output` (reuse a layer's own output), :meth:`affine`
    (product and bias in one call), :meth:`backward_many` (several transposed products
    in one call), :meth:`bias_relevance`, :meth:`input_has_negatives` (a hint instead of
    a look at the data). ``unit`` (None or a tensor broadcastable to the output) says
    that the map's weights and bias are stored divided by ``unit``, so that a rule's
    stabiliser can act on the true scale (:meth:`Rule.scale`); :meth:`unit_for` may give
    each weight view its own unit. :meth:`supports` says which weight views and term
    inputs the map can serve (:func:`check_rule`); ``description`` names the kind of
    mapping in error messages.
    """

    bias: torch.Tensor | None = None
    unit: torch.Tensor | None = None
    description: str = "linear mappings"

    def forward(self, x: torch.Tensor, view="w") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def backward(self, s: torch.Tensor, view="w") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    #: the map serves the signed views and "conn" only (no "sq": e.g. weights that are data, not parameters)
    signed_views_only: ClassVar[bool] = False
    #: the map accepts a rule's own term inputs (e.g. input-domain bounds)
    own_inputs: ClassVar[bool] = True
    #: the map serves only rules described by parts (e.g. because of ``unit``)
    requires_parts: ClassVar[bool] = False
    #: :meth:`unit_for` may differ between weight views (else every view is in ``unit``)
    per_view_units: ClassVar[bool] = False

    @classmethod
    def supports(cls, view=None, term_input=None) -> bool:
        """Whether the map can serve a weight view and a term input."""
        if view is not None and cls.signed_views_only and view != "conn" and signed_parts(view) is None:
            return False
        return term_input is None or cls.own_inputs or term_input in TERM_INPUTS

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass ``z_j = sum_i x_i w_ij + b_j`` (Eq. (2.29))."""
        z = self.forward(x)
        return z if self.bias is None else z + self.bias

    def unit_for(self, view):
        """The unit in which the map stores the weight view ``view`` (``unit`` for all views by default)."""
        return self.unit

    def bias_view(self, view):
        """The view of the bias (None without a bias or a view)."""
        return None if self.bias is None or view is None else _view(self.bias, view)

    def affine(self, x: torch.Tensor, view, bias_view) -> torch.Tensor:
        """``x @ f(W) + g(b)``: a part's denominator from its first term and its bias."""
        z = self.forward(x, view)
        b = self.bias_view(bias_view)
        return z if b is None else z.add_(b) if _holds(z.shape, b.shape) else z + b

    def scale_buffers(self, k: int, like: torch.Tensor):
        """None, or ``k`` tensors shaped like ``like`` into which the rules write the scaled relevances of
        ``k`` parts, so that :meth:`backward_many` can use them in one product without copying."""
        return None

    def backward_many(self, pairs) -> torch.Tensor:
        """``sum_k c_k s_k @ f_k(W).T`` for ``pairs`` of ``(s_k, view_k, c_k)``, a new tensor."""
        return _weighted_sum(self.backward, pairs)

    def bias_relevance_many(self, pairs) -> torch.Tensor:
        """``sum_k c_k sum_j g_k(b)_j s_kj`` per sample for ``pairs`` of ``(s_k, view_k, c_k)``."""
        return _weighted_sum(self.bias_relevance, pairs)

    def bias_relevance(self, s: torch.Tensor, view) -> torch.Tensor:
        """``sum_j g(b)_j s_j`` per sample (Eq. (2.16)), shape ``(n,)``."""
        b = self.bias_view(view)
        if b is None:
            return s.new_zeros(s.shape[0])
        if b.ndim == 1 and s.ndim == 2:
            return s @ b  # no (n, n_out) temporary
        return (s * b).reshape(s.shape[0], -1).sum(dim=1)

    def input_has_negatives(self, x: torch.Tensor) -> bool:
        """Whether ``x`` has negative entries (asked only by rules that split the input by sign)."""
        return x.numel() > 0 and bool(x.amin() < 0)


def _weighted_sum(fn, pairs):
    """``sum_k c_k fn(s_k, view_k)``, accumulated in the first (fresh) result."""
    out = None
    for s, view, coef in pairs:
        t = fn(s, view)
        if coef != 1:
            t.mul_(coef)
        out = t if out is None else out.add_(t)
    return out


class DenseMap(LinearMap):
    """Dense mapping ``z = x @ W + b`` with ``W`` of shape ``(n_in, n_out)``.

    Every input is connected to every output: the flat rule spreads over all of them,
    whatever the weights' values (Eq. (2.27)).

    Parameters
    ----------
    weight : torch.Tensor of shape (n_in, n_out)
    bias : torch.Tensor of shape (n_out,) or None
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias
        self._views: dict = {}

    def _w(self, view) -> torch.Tensor:
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
    as a row normaliser, ``(n_samples, n_features)``. Output ``d`` is connected to
    input ``d`` only.
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


# ----------------------------------------------------------------------------- rule structure
class Term(NamedTuple):
    """One product of a rule's contributions: ``sign * a(x)_i * v(W)_ij``.

    Attributes
    ----------
    input : str
        ``"x"``, ``"x+"`` / ``"x-"`` (positive / negative part of the input), ``"|x|"``,
        ``"1"`` (ones: shares that do not depend on the input), or a name the rule
        resolves itself (:meth:`Rule.term_input`, e.g. the bounds of :class:`ZBox`).
    view : str or tuple
        The weight view (see :class:`LinearMap`).
    sign : float, default=1.0
    """

    input: str
    view: object
    sign: float = 1.0


class Part(NamedTuple):
    """A group of terms sharing one denominator, with its bias view and coefficient.

    Attributes
    ----------
    terms : tuple of Term
    bias : str, tuple or None
        View of the bias entering the denominator and receiving relevance (Eq. (2.16));
        None: the bias is ignored.
    coef : float, default=1.0
        ``alpha`` / ``beta`` of Eq. (2.26); a part with coefficient 0 is skipped.
    complement : bool, default=False
        The rule's promise that this part's terms and bias, added to those of the other
        parts, make up the plain contributions ``x_i w_ij`` and ``b_j`` (Eq. (2.25)): its
        denominator is then ``z_j`` minus the other parts' denominators (one product fewer).
    """

    terms: tuple
    bias: object = None
    coef: float = 1.0
    complement: bool = False


_PLAIN = (Term("x", "w"),)


class _Plan(NamedTuple):
    parts: tuple
    live: tuple  # parts with a non-zero coefficient
    explicit: tuple  # parts whose denominator is computed from their terms
    complements: tuple  # live parts whose denominator is z_j minus the explicit ones'
    plain: tuple  # per part: the plain contributions x_i w_ij and b_j (denominator: the map's output)
    groups: tuple  # ((term input, sign), [(part, view, coefficient)]) for the transposed products
    biased: tuple  # (part, bias view, coefficient) of the live parts with a bias (coefficients are in s)


def _parts(rule):
    """``rule.parts()``, or None for a rule that only defines :meth:`Rule.propagate`."""
    return rule.parts() if rule.has_parts else None


def _holds(shape, other):
    """Whether a tensor of ``shape`` can take ``other`` broadcast in place (``torch.broadcast_shapes`` is slow)."""
    if len(other) > len(shape):
        return False
    return all(o == 1 or o == s for s, o in zip(shape[len(shape) - len(other):], other))


def _accumulate(acc, t, sign=1.0):
    if acc is None:
        return t if sign == 1 else t.mul_(sign)
    if _holds(acc.shape, t.shape):
        return acc.add_(t, alpha=sign)
    return torch.add(acc, t, alpha=sign)


@dataclass(frozen=True)
class Rule:
    """Base class of the decomposition rules (Table 2.1).

    A rule is an immutable value object. Subclasses describe their arithmetic by
    :meth:`parts` and, where they stabilise, :meth:`scale`; :meth:`propagate` then
    applies them to any :class:`LinearMap` (see the module docstring). A rule that
    cannot be written as parts may override :meth:`propagate` instead and leave
    :meth:`parts` undefined; it then runs on maps of ``(n, features)`` tensors only
    (dense, diagonal, and torch layers flattened), and pooled descriptor mappings
    reject it. Overriding :meth:`propagate` of a rule that has parts is an error:
    the fast paths would evaluate the parts and silently ignore the override.
    """

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "propagate" in cls.__dict__ and "parts" not in cls.__dict__:
            owner = next(c for c in cls.__mro__ if "parts" in c.__dict__)
            if owner is not Rule:
                raise TypeError(
                    f"{cls.__name__} overrides propagate() but inherits parts() from {owner.__name__}: the fast "
                    "paths (torch layers, pooled descriptor mappings) evaluate parts() and would ignore the "
                    "override. Override parts() and scale() instead, or define parts() to raise "
                    "NotImplementedError."
                )

    # -- capabilities ---------------------------------------------------------------
    def parts(self) -> tuple:
        """The rule's decomposition as a tuple of :class:`Part` (see the module docstring)."""
        raise NotImplementedError

    def scale(self, relevance: torch.Tensor, den: torch.Tensor, unit=None, out=None) -> torch.Tensor:
        """The scaled relevance ``s_j = R_j / stab(z_j)`` of one part; 0 where the denominator is 0.

        ``unit`` (None, or a tensor broadcastable to ``den``) says that ``den`` is given
        in units of ``unit`` (true denominator ``den * unit``); a stabiliser is then
        applied on the true scale and ``s`` is returned in units of ``1 / unit``, so that
        ``z_ij s_j`` comes out right. When ``out`` is given (it may be ``den``), ``s`` is
        written into it, and ``den`` is the caller's scratch: it may be overwritten.
        Without a stabiliser (the default) this is :func:`safe_divide`.
        """
        return safe_divide(relevance, den, out=out, overwrite=out is not None)

    def term_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A rule's own term input (e.g. a bound), shaped ``(1, *x.shape[1:])``."""
        raise ValueError(f"{type(self).__name__} rule: unknown term input {name!r}")

    @property
    def has_parts(self) -> bool:
        """True when the rule describes its arithmetic by :meth:`parts` (every rule of this module)."""
        if "_plan_cache" in self.__dict__:
            return True
        try:
            self.parts()
        except NotImplementedError:
            return False
        return True

    @property
    def quotient(self) -> bool:
        """True when ``R_{i<-j} = z_ij s_j`` and ``R_{b<-j} = b_j s_j`` with ``s_j = scale(R_j, z_j)``.

        The messages are the layer's own contributions rescaled per output unit (the z-
        and epsilon rules): a fast path may then decompose any sum ``z_j = sum_i z_ij``
        (e.g. down to descriptor dimensions, Eq. (D.3)) with ``s_j`` alone.
        """
        parts = _parts(self)
        return parts is not None and len(parts) == 1 and parts[0].terms == _PLAIN and parts[0].bias == "w" \
            and parts[0].coef == 1 and not parts[0].complement

    @property
    def input_invariant(self) -> bool:
        """True when the shares do not depend on the input (flat, w^2): denominators from one sample."""
        parts = _parts(self)
        return parts is not None and all(t.input == "1" for p in parts for t in p.terms)

    @property
    def uses_input_sign(self) -> bool:
        """True when the rule treats positive and negative inputs apart (alpha-beta, Eq. (2.25))."""
        parts = _parts(self)
        return parts is not None and any(t.input in ("x+", "x-") for p in parts for t in p.terms)

    # -- the one evaluation ---------------------------------------------------------
    def _plan(self):
        """The rule's parts and what the evaluation derives from them, computed once per rule object."""
        plan = self.__dict__.get("_plan_cache")
        if plan is None:
            parts = _parts(self)
            if parts is None:
                raise TypeError(f"{type(self).__name__} rule defines neither parts() nor propagate()")
            live = tuple(k for k, p in enumerate(parts) if p.coef != 0)
            complements = tuple(k for k in live if parts[k].complement)
            explicit = tuple(k for k, p in enumerate(parts) if not p.complement and (p.coef != 0 or complements))
            groups: dict = {}  # (term input, sign) -> [(part index, view, coefficient)]: one transposed product each
            for k in live:
                for t in parts[k].terms:
                    groups.setdefault((t.input, t.sign), []).append((k, t.view, parts[k].coef))
            plan = _Plan(parts, live, explicit, complements, tuple(p.terms == _PLAIN and p.bias == "w" for p in parts),
                         tuple(groups.items()), tuple((k, parts[k].bias, parts[k].coef) for k in live
                                                      if parts[k].bias is not None))
            object.__setattr__(self, "_plan_cache", plan)  # rules are immutable value objects
        return plan

    def propagate(self, lmap: LinearMap, x: torch.Tensor, relevance: torch.Tensor) -> LayerRelevance:
        """Map upper relevance ``R_j`` (shaped like the output) to ``R_i`` (shaped like ``x``) and ``R_b`` (n,)."""
        parts, live, explicit, complements, plain, groups, biased = self._plan()
        inputs = {}

        def term_input(name):
            if name not in inputs:
                inputs[name] = self._input(name, lmap, x)
            return inputs[name]

        if lmap.per_view_units:
            units = [self._unit(p, lmap, term_input) for p in parts]
            if complements and any(u is not lmap.unit_for("w") for u in units):
                # a complement is z_j minus the other parts' denominators: only when all share z_j's units
                explicit, complements = tuple(k for k, p in enumerate(parts) if p.coef != 0), ()
        else:
            units = [lmap.unit] * len(parts)
        dens, owned = {}, {}
        for k in explicit:
            dens[k], owned[k] = (lmap.output(x), False) if plain[k] else \
                (self._denominator(parts[k], lmap, x, term_input), True)
        # the scaled relevances of several parts may go into one buffer of the map (one transposed product)
        buffers = lmap.scale_buffers(len(live), relevance) if len(live) > 1 else None
        slot = dict(zip(live, buffers)) if buffers else {}
        for k in complements:
            z = lmap.output(x)
            others = list(dens.values())
            if len(others) == 1 and k in slot and slot[k].shape == z.shape == others[0].shape:
                dens[k] = torch.sub(z, others[0], out=slot[k])
            else:
                dens[k] = z - sum(others) if others else z
            owned[k] = bool(others)
        shape = relevance.shape
        scaled = {}
        for k in live:
            den, buf = dens[k], slot.get(k)
            # an owned denominator is scratch: s goes into the map's buffer, or into the denominator itself
            out = (buf if buf is not None else den if _holds(den.shape, shape) else None) if owned[k] else None
            s = self._scaled(relevance, den, units[k], out, parts[k].coef)
            if buf is not None and s is not buf:
                s = buf.copy_(s)
            scaled[k] = s
        r_in = None
        for (name, sign), terms in groups:
            a = term_input(name)
            if a is None:
                continue
            g = lmap.backward_many([(scaled[k], view, 1.0) for k, view, _ in terms])
            if name != "1":
                g.mul_(a)
            r_in = _accumulate(r_in, g, sign)
        if r_in is None:
            r_in = torch.zeros_like(x)
        if biased:
            r_bias = lmap.bias_relevance_many([(scaled[k], view, 1.0) for k, view, _ in biased])
        else:
            r_bias = x.new_zeros(x.shape[0])
        return LayerRelevance(r_in, r_bias)

    def _scaled(self, relevance, den, unit, out, coef):
        """``coef * scale(R, den)``: the part's coefficient folded into the division where the rule keeps the
        default :meth:`scale` (one pass instead of two)."""
        if coef != 1 and type(self).scale is Rule.scale:
            return safe_divide(relevance, den, out=out, overwrite=out is not None, factor=coef)
        s = self.scale(relevance, den, unit=unit, out=out)
        return s if coef == 1 else s.mul_(coef)

    def _input(self, name, lmap, x):
        """A term input: None for a part of the input that vanishes (``x-`` of a non-negative ``x``)."""
        if name == "x":
            return x
        if name == "1":
            return x.new_ones((1, *x.shape[1:]))
        if name == "|x|":
            return x.abs()
        if name in ("x+", "x-"):
            if not lmap.input_has_negatives(x):
                return x if name == "x+" else None
            return x.clamp(min=0) if name == "x+" else x.clamp(max=0)
        return self.term_input(name, x)

    def _unit(self, part, lmap, term_input):
        """The unit of a part's denominator (:meth:`LinearMap.unit_for`); its live terms must agree."""
        views = [t.view for t in part.terms if term_input(t.input) is not None] or [t.view for t in part.terms[:1]]
        units = [lmap.unit_for(v) for v in views]
        if any(u is not units[0] for u in units):
            raise TypeError(f"{type(self).__name__} rule: {lmap.description} store the weight views {views} in "
                            "different units, and the rule sums them in one denominator")
        return units[0] if units else lmap.unit_for("w")

    def _denominator(self, part, lmap, x, term_input):
        """The part's denominator as a fresh tensor."""
        den = None
        bias_done = part.bias is None
        for t in part.terms:
            a = term_input(t.input)
            if a is None:
                continue
            if not bias_done and t.sign == 1:
                f, bias_done = lmap.affine(a, t.view, part.bias), True
            else:
                f = lmap.forward(a, t.view)
            den = _accumulate(den, f, t.sign)
        if not bias_done:
            b = lmap.bias_view(part.bias)
            if b is not None:
                den = b.reshape(1, *b.shape).clone() if den is None else _accumulate(den, b)
        if den is None:
            den = lmap.forward(torch.zeros_like(x[:1]))
        return den


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

    def parts(self):
        return (Part(_PLAIN, "w"),)


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

    def parts(self):
        return (Part(_PLAIN, "w"),)

    def stabilise(self, den: torch.Tensor, unit=None) -> torch.Tensor:
        """``z + eps sign(z)`` (Eq. (2.22)) as a new tensor, by ``copysign`` (no boolean tensors).

        The thesis takes ``sign(0) = +1``; ``copysign`` gives ``-eps`` at ``z = -0.0``. That
        cannot change any relevance: a sum is ``-0.0`` only when all its terms are, so
        every ``z_ij = x_i w_ij`` and ``b_j`` of such a unit is zero and its messages
        ``x_i w_ij s_j`` and ``b_j s_j`` vanish whatever the sign of ``s_j``. With ``unit``
        (see :meth:`Rule.scale`) the stabiliser is ``eps / unit``.
        """
        eps = _constant(float(self.epsilon), den) if unit is None else float(self.epsilon) / unit
        return torch.copysign(eps, den).add_(den)

    def scale(self, relevance, den, unit=None, out=None):
        if self.epsilon == 0:
            return safe_divide(relevance, den, out=out, overwrite=out is not None)
        s = self.stabilise(den, unit)  # |z + eps sign z| >= eps: no zero denominators
        return safe_divide(relevance, s, out=out if out is not None else s if s.shape == relevance.shape else None,
                           nonzero=True)


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """Alpha-beta rule ``R_i = sum_j (alpha z+_ij/z+_j + beta z-_ij/z-_j) R_j`` (Eqs. (2.24)-(2.26)).

    The thesis' convention is used: ``alpha + beta = 1`` and ``alpha >= 1``, so the
    common "a2b1" rule is ``AlphaBeta(2, -1)``. zennit and iNNvestigate write the same
    rule as ``alpha - beta = 1`` with ``beta >= 0`` and *subtract* the negative part:
    their ``(alpha, beta)`` is our ``(alpha, -beta)``. Positive and negative parts
    include the bias (Eq. (2.25)); the rule is exactly conservative when there is no
    bias and both parts of every unit are non-empty. An empty part (``z+_j = 0`` or
    ``z-_j = 0``) passes no relevance (0/0 := 0). ``z-_j`` is computed as ``z_j - z+_j``
    (Eq. (2.25): ``z_ij = z+_ij + z-_ij``), which rounds like ``z_j`` itself.

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

    def parts(self):
        # z+_ij = x+ w+ + x- w-,  z-_ij = x+ w- + x- w+  (Eq. (2.25)); the bias splits likewise
        return (Part((Term("x+", "pos"), Term("x-", "neg")), "pos", float(self.alpha)),
                Part((Term("x+", "neg"), Term("x-", "pos")), "neg", float(self.beta), complement=True))


def ZPlus() -> AlphaBeta:
    """The z+ rule, ``AlphaBeta(alpha=1, beta=0)`` (Eq. (2.26), Deep Taylor Decomposition).

    Examples
    --------
    >>> from sklrp.rules import ZPlus
    >>> ZPlus()
    AlphaBeta(alpha=1.0, beta=0.0)
    """
    return AlphaBeta(1.0, 0.0)


@dataclass(frozen=True)
class Flat(Rule):
    """Flat rule ``R_i = sum_j R_j / #{i' -> j}`` (Eq. (2.27)).

    Spreads each ``R_j`` uniformly over all inputs connected to ``j``: its receptive
    field, "in practice, we set z_ij = 1 uniformly" (Section 2.2.6). A connection is
    structural, not a weight's value: a dense layer connects every input to every
    output (weights ``[1, 0, 2, 0]`` spread ``R_j = 3`` as ``0.75`` each), a convolution
    the inputs under its kernel (zero padding is not an input), a pooling the
    descriptors of its bag. Input values and bias are ignored, so it is exactly
    conservative: ``sum_i R_i = sum_j R_j`` for units with at least one input.

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import Flat, DenseMap
    >>> lmap = DenseMap(torch.tensor([[1.0], [0.0], [2.0], [0.0]], dtype=torch.float64))
    >>> Flat().propagate(lmap, torch.ones(1, 4, dtype=torch.float64), torch.tensor([[3.0]], dtype=torch.float64)).input
    tensor([[0.7500, 0.7500, 0.7500, 0.7500]], dtype=torch.float64)
    """

    name: ClassVar[str] = "flat"

    def parts(self):
        return (Part((Term("1", "conn"),)),)


@dataclass(frozen=True)
class WSquare(Rule):
    """w^2 rule ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j`` (Eq. (2.28)).

    Ignores inputs and bias; exactly conservative for units with a non-zero weight.

    Examples
    --------
    >>> from sklrp.rules import WSquare
    >>> WSquare()
    WSquare()
    """

    name: ClassVar[str] = "wsquare"

    def parts(self):
        return (Part((Term("1", "sq"),)),)


@dataclass(frozen=True)
class AbsZ(Rule):
    """Magnitude rule ``R_i = sum_j |z_ij| / sum_i' |z_i'j| R_j`` of Eq. (2.7).

    The thesis' counter-example of a decomposition that conserves relevance yet is no
    meaningful explanation (Section 2.2.1): every input receives relevance of the
    sign of ``R_j``. Chapter 4 uses it as the baseline "magnitude only" decomposition
    of Fisher-vector mappings (Fig. 4.3). ``|z_ij| = |x_i| |w_ij|``; the bias is ignored,
    as Eq. (2.7) distributes all of ``f(x)`` onto the inputs, so the rule is exactly
    conservative for units with a non-zero denominator.

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import AbsZ, DenseMap
    >>> lmap = DenseMap(torch.tensor([[1.0], [-3.0]], dtype=torch.float64))
    >>> AbsZ().propagate(lmap, torch.ones(1, 2, dtype=torch.float64), torch.tensor([[-2.0]], dtype=torch.float64)).input
    tensor([[-0.5000, -1.5000]], dtype=torch.float64)
    """

    name: ClassVar[str] = "absz"

    def parts(self):
        return (Part((Term("|x|", "abs"),)),)


@dataclass(frozen=True)
class Gamma(Rule):
    """Gamma rule ``R_i = sum_j x_i (w_ij + gamma w+_ij) / z^gamma_j R_j`` (beyond the thesis).

    ``z^gamma_j = sum_i x_i (w_ij + gamma w+_ij) + b_j + gamma b+_j``: the z-rule with the
    positive weights (and bias) amplified by ``1 + gamma``, which favours positive
    contributions and gives less noisy maps in lower layers of ReLU networks. This is
    LRP-gamma of Montavon, Binder, Lapuschkin, Samek and Mueller, "Layer-Wise Relevance
    Propagation: An Overview" (Explainable AI, LNCS 11700, 2019), Section 10.2.3, as
    zennit (``zennit.rules.Gamma``) and captum (``captum.attr._utils.lrp_rules.GammaRule``)
    implement it. Not in the thesis; added because it is the standard rule for the
    lower layers of deep networks in those toolboxes. Differences: captum leaves the
    bias unmodified; zennit >= 0.5 generalises the rule to negative inputs (it uses
    ``w + gamma w-`` for them), which agrees with this form wherever the inputs are
    non-negative and ``z_j > 0`` (every unit that carries relevance below a ReLU).
    ``gamma = 0`` is the z-rule. Units with ``z^gamma_j = 0`` pass nothing (0/0 := 0).

    Parameters
    ----------
    gamma : float, default=0.25
        Non-negative amplification of the positive weights (zennit's and captum's default).

    Examples
    --------
    >>> from sklrp.rules import Gamma
    >>> Gamma(0.5)
    Gamma(gamma=0.5)
    """

    gamma: float = 0.25
    name: ClassVar[str] = "gamma"

    def __post_init__(self):
        if not isinstance(self.gamma, numbers.Real) or not np.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"Gamma rule: gamma must be a finite number >= 0, got {self.gamma!r}")

    def parts(self):
        view = signed_view(1.0 + self.gamma, 1.0)
        return (Part((Term("x", view),), view),)


@dataclass(frozen=True)
class GeneralizedGamma(Rule):
    """Gamma rule for units of either sign and inputs of either sign (beyond the thesis; zennit's ``Gamma``).

    A unit with ``z_j > 0`` amplifies the contributions that push it up, a unit with
    ``z_j < 0`` those that push it down::

        z_j > 0:  z+_ij = x+_i (w_ij + gamma w+_ij) + x-_i (w_ij + gamma w-_ij),  bias b_j + gamma b+_j
        z_j < 0:  z-_ij = x+_i (w_ij + gamma w-_ij) + x-_i (w_ij + gamma w+_ij),  bias b_j + gamma b-_j
        R_i = sum_j z^{sign z_j}_ij / sum_i' z^{sign z_j}_i'j  R_j

    and a unit with ``z_j = 0`` passes nothing. Where the inputs are non-negative and
    ``z_j > 0`` this is :class:`Gamma` (Montavon et al., 2019, Section 10.2.3); it is the
    generalisation zennit >= 0.5 implements as ``zennit.rules.Gamma`` (Andeol et al.,
    2021). It matters where a unit with ``z_j < 0`` carries relevance: in residual
    networks, where a sum (Eq. (2.39)) hands relevance to a negative summand, the
    denominator of :class:`Gamma`, ``z_j + gamma (sum_i x_i w+_ij + b+_j)``, can vanish or
    change sign, while here ``|denominator| >= |z_j|``. Conservative up to the bias'
    share (Eq. (2.16)): ``sum_i R_i + R_b = R_j`` for ``z_j != 0``.

    The two denominators are computed from one extra product, ``P_j = sum_i (x+_i w+_ij +
    x-_i w-_ij) + b+_j`` (the positive contributions): ``z+_j = z_j + gamma P_j`` and
    ``z-_j = (1 + gamma) z_j - gamma P_j``. The rule's two cases select units by the sign
    of ``z_j``, which a rule made of :class:`Part` s cannot express, so it overrides
    :meth:`propagate` (dense layers and flattened convolutions; not pooled descriptor
    mappings).

    Parameters
    ----------
    gamma : float, default=0.25
        Non-negative amplification of the contributions of the unit's own sign.

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import GeneralizedGamma, DenseMap
    >>> lmap = DenseMap(torch.tensor([[1.0], [-1.0]], dtype=torch.float64))
    >>> x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)  # z = 1 - 3 = -2: z-_ij = 1 * 1, 3 * (-1 - 0.5)
    >>> GeneralizedGamma(0.5).propagate(lmap, x, torch.tensor([[-2.0]], dtype=torch.float64)).input
    tensor([[ 0.5714, -2.5714]], dtype=torch.float64)
    """

    gamma: float = 0.25
    name: ClassVar[str] = "generalized_gamma"

    def __post_init__(self):
        if not isinstance(self.gamma, numbers.Real) or not np.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"GeneralizedGamma rule: gamma must be a finite number >= 0, got {self.gamma!r}")

    def parts(self):
        raise NotImplementedError  # units are selected by the sign of z_j: see propagate

    @property
    def uses_input_sign(self) -> bool:
        return True  # x+ and x- are treated apart; maps that know the input's sign spare a look at the data

    def propagate(self, lmap: LinearMap, x: torch.Tensor, relevance: torch.Tensor) -> LayerRelevance:
        if lmap.unit is not None or lmap.per_view_units or lmap.requires_parts:
            raise TypeError(f"the GeneralizedGamma rule is not defined for {lmap.description}")
        g = float(self.gamma)
        z = lmap.output(x)
        mixed = lmap.input_has_negatives(x)
        xp, xn = (x.clamp(min=0), x.clamp(max=0)) if mixed else (x, None)
        pos = lmap.forward(xp, "pos")  # P_j: the positive contributions
        if xn is not None:
            pos.add_(lmap.forward(xn, "neg"))
        b = lmap.bias_view("pos")
        if b is not None:
            pos = pos + b
        up = torch.add(z, pos, alpha=g)  # z+_j
        down = torch.sub(z * (1.0 + g), pos, alpha=g)  # z-_j
        s_up = safe_divide(relevance * (z > 0), up)
        s_down = safe_divide(relevance * (z < 0), down)
        both = s_up + s_down  # disjoint supports
        a_pos, a_neg = torch.add(both, s_up, alpha=g), torch.add(both, s_down, alpha=g)
        # x+: (w + g w+) s_up + (w + g w-) s_down = w+ (both + g s_up) + w- (both + g s_down); x- the other way
        r = lmap.backward_many([(a_pos, "pos", 1.0), (a_neg, "neg", 1.0)]).mul_(xp)
        if xn is not None:
            r.add_(lmap.backward_many([(a_neg, "pos", 1.0), (a_pos, "neg", 1.0)]).mul_(xn))
        if lmap.bias is None:
            rb = x.new_zeros(x.shape[0])
        else:
            rb = lmap.bias_relevance(both, "w") + g * (lmap.bias_relevance(s_up, "pos")
                                                        + lmap.bias_relevance(s_down, "neg"))
        return LayerRelevance(r, rb)


def _bound_array(value, label):
    a = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"ZBox rule: {label} must be finite")
    if a.ndim == 0:
        return float(a)
    a = a.copy()
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ZBox(Rule):
    """Bounded-input rule zB for an input layer with ``low <= x <= high`` (Deep Taylor, Table 2.1).

    ``z_ij = x_i w_ij - l_i w+_ij - h_i w-_ij`` and ``R_i = sum_j z_ij / sum_i' z_i'j R_j``
    (Montavon et al. 2017). The bias is ignored, so the rule is exactly conservative
    wherever the denominator is non-zero (0/0 := 0). ``sklrp.rules.ZB`` is the same class
    under zennit's short name.

    Parameters
    ----------
    low, high : float or array-like
        Lower and upper bounds of the input domain, ``low <= high``: scalars, or arrays
        shaped like one sample (``(n_features,)`` for tabular data, ``(C, H, W)`` for images)
        or broadcastable to it (``(C, 1, 1)``: per-channel bounds of normalised images).
        A shape that does not fit the layer's input raises ``ValueError``.

    Examples
    --------
    >>> from sklrp.rules import ZBox
    >>> ZBox(0.0, 1.0)
    ZBox(low=0.0, high=1.0)
    >>> ZBox([0.0, -1.0], 1.0)
    ZBox(low=array of shape (2,), high=1.0)
    """

    low: float | np.ndarray = 0.0
    high: float | np.ndarray = 1.0
    name: ClassVar[str] = "zbox"

    def __post_init__(self):
        lo, hi = _bound_array(self.low, "low"), _bound_array(self.high, "high")
        try:
            below = np.all(np.asarray(lo) <= np.asarray(hi))
        except ValueError:
            raise ValueError(f"ZBox rule: low of shape {np.shape(lo)} and high of shape {np.shape(hi)} do not "
                             "broadcast to one shape") from None
        if not below:
            raise ValueError("ZBox rule: low must be <= high")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        object.__setattr__(self, "_tensors", {})

    def _key(self):
        return tuple((np.shape(b), np.asarray(b).tobytes()) for b in (self.low, self.high))

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self):
        return hash((type(self), self._key()))

    def __repr__(self):
        def show(b):
            return repr(b) if isinstance(b, float) else f"array of shape {b.shape}"
        return f"{type(self).__name__}(low={show(self.low)}, high={show(self.high)})"

    def parts(self):
        return (Part((Term("x", "w"), Term("low", "pos", -1.0), Term("high", "neg", -1.0))),)

    def term_input(self, name, x):
        if name not in ("low", "high"):
            return super().term_input(name, x)
        sample = tuple(x.shape[1:])
        key = (name, x.dtype, x.device, sample)
        if key not in self._tensors:
            b = getattr(self, name)
            shape = np.shape(b)
            try:
                fits = np.broadcast_shapes(shape, sample) == sample
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{type(self).__name__} rule: the bound {name} has shape {shape}, which does not fit one input "
                    f"sample of shape {sample}; pass scalars or arrays shaped like one sample (or broadcastable "
                    "to it, e.g. (C, 1, 1) for per-channel image bounds)"
                )
            t = torch.tensor(np.asarray(b), dtype=x.dtype, device=x.device)
            self._tensors[key] = t.expand(sample).unsqueeze(0)
        return self._tensors[key]


#: The historic name of :class:`ZBox` (the same rule).
ZB = ZBox


def check_rule(rule: Rule, lmap: LinearMap, where: str) -> None:
    """Raise ``TypeError`` naming the rule and the layer when ``lmap`` cannot evaluate ``rule``.

    Parameters
    ----------
    rule : Rule
    lmap : LinearMap
        The map, or a map class with a ``supports`` method usable on the class.
    where : str
        The layer or stage, for the message.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"{where}: rule must be an sklrp.rules.Rule, got {type(rule).__name__}")
    parts = _parts(rule)
    name = type(rule).__name__
    if parts is None:
        if lmap.requires_parts:
            raise TypeError(f"{where}: the {name} rule is not defined for {lmap.description}: it defines no "
                            "parts() (only propagate()), and these mappings evaluate parts")
        return
    for p in parts:
        for t in p.terms:
            if not lmap.supports(view=t.view):
                raise TypeError(f"{where}: the {name} rule is not defined for {lmap.description}: they have no "
                                f"weight view {t.view!r}")
            if not lmap.supports(term_input=t.input):
                raise TypeError(f"{where}: the {name} rule is not defined for {lmap.description}: they have no "
                                f"term input {t.input!r}")
        if p.bias is not None and not lmap.supports(view=p.bias):
            raise TypeError(f"{where}: the {name} rule is not defined for {lmap.description}: they have no bias "
                            f"view {p.bias!r}")


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


RULE_NAMES = ("z", "epsilon", "alphabeta", "zplus", "flat", "wsquare", "zbox", "zb", "gamma", "absz")


def make_rule(rule="epsilon", *, epsilon=1e-2, alpha=2.0, beta=-1.0, low=0.0, high=1.0, gamma=0.25) -> Rule:
    """Build a :class:`Rule` from an estimator-style name and its parameters.

    Parameters
    ----------
    rule : str or Rule
        One of ``"z"``, ``"epsilon"``, ``"alphabeta"``, ``"zplus"``, ``"flat"``,
        ``"wsquare"``, ``"zbox"`` (also ``"zb"``), ``"gamma"``, ``"absz"``, or a
        :class:`Rule` instance (returned as is).
    epsilon, alpha, beta, low, high, gamma
        Parameters of the named rule; ignored by rules that do not use them. ``low`` and
        ``high`` keep their shape (e.g. ``(C, H, W)``).

    Returns
    -------
    Rule

    Examples
    --------
    >>> from sklrp.rules import make_rule
    >>> make_rule("alphabeta", alpha=1.0, beta=0.0)
    AlphaBeta(alpha=1.0, beta=0.0)
    >>> make_rule("gamma", gamma=0.1)
    Gamma(gamma=0.1)
    """
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a rule name or an sklrp.rules.Rule, got {type(rule).__name__}")
    key = rule.lower().replace("-", "").replace("_", "")
    aliases = {"z": "z", "zero": "z", "epsilon": "epsilon", "eps": "epsilon", "alphabeta": "alphabeta",
               "zplus": "zplus", "z+": "zplus", "flat": "flat", "wsquare": "wsquare", "w2": "wsquare",
               "zb": "zbox", "zbox": "zbox", "gamma": "gamma", "absz": "absz", "abs": "absz"}
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
    if key == "gamma":
        return Gamma(float(gamma) if isinstance(gamma, numbers.Real) else gamma)
    if key == "absz":
        return AbsZ()
    return ZBox(low, high)

"""LRP for ``torch.nn.Module`` as a modified gradient backward pass (Eqs. (2.57)-(2.61)).

The forward pass runs the unmodified network. Every supported layer's output is
passed through a small ``torch.autograd.Function`` that is the identity forward
and whose backward maps the *relevance* arriving at the layer output to its
input(s) with the layer's decomposition (:mod:`sklrp.nn.layers`) instead of
multiplying by the Jacobian. A single call of ``torch.autograd.grad`` with the
initial relevance ``R = c * f(x)`` as the output "gradient" then yields the input
relevance: autograd does the bookkeeping of Algorithm 1, summing messages at
neurons used by several layers (Eq. (2.12)) and splitting relevance at
concatenations and reshapes (Eq. (2.41)).

The Functions are attached by forward hooks that live only while the forward
pass runs. :func:`attached` puts the model into eval mode, turns off in-place
activations (which would overwrite saved layer inputs) and afterwards removes the
hooks and restores every ``training`` and ``inplace`` flag, also when an
exception is raised. Parameters and their ``requires_grad`` are never touched:
relevance flows only into a private copy of the input.

What users must know
--------------------
* Networks are explained as written: tensor operations between the layers (a residual
  ``x + y``, ``torch.cat``, reshapes, ``F.relu``, ``torch.tanh``, ``x.mean((2, 3))``) are
  followed as they run, at the dispatch level, and given their LRP steps
  (:mod:`sklrp.nn.tracing`); an operation without a decomposition (a product of two
  activations, ``exp``, ...) raises a ``TypeError`` naming it and its line in ``forward``.
  :class:`sklrp.nn.Add` / :class:`sklrp.nn.Concat` mark merge points as modules.
* A terminal ``Softmax``, ``LogSoftmax`` or ``Sigmoid`` (module or function) is removed: the
  logits are explained (Section 2.3.1, "The Softmax Output Layer"). A softmax
  anywhere else is an error.
* Layers with parameters that sklrp does not know (modules with parameters and no
  submodules, e.g. ``Embedding``, ``LSTM``) raise a ``TypeError`` naming them; other
  modules are followed through their ``forward``.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from . import layers, tracing
from ..rules import Rule
from .composites import Composite
from .merge import Add, Concat

tracing.skip_frames_of(__file__)

__all__ = ["LRPResult", "attached", "forward", "logits", "lrp", "supported_layers"]

_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACTIVATION = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
               nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid,
               nn.Tanhshrink, nn.Threshold, nn.PReLU, nn.Hardshrink, nn.Softshrink)
# routing / identity at inference: autograd's own backward already is the LRP step
_PASSIVE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
            nn.Identity, nn.Flatten, nn.Unflatten, Concat)
_SOFTMAX = (nn.Softmax, nn.LogSoftmax, nn.Softmax2d)


def supported_layers() -> list[str]:
    """Names of the ``torch.nn`` layer types sklrp can explain."""
    groups = _LINEAR + _AVGPOOL + _MAXPOOL + _BATCHNORM + (nn.LocalResponseNorm, Add) + _ACTIVATION + _PASSIVE
    return sorted({t.__name__ for t in groups}) + ["terminal Softmax/LogSoftmax/Sigmoid (removed)"]


_KIND_OF_TYPE: dict = {}


def _kind(module):
    kind = _KIND_OF_TYPE.get(type(module), False)
    if kind is not False:
        return kind
    kind = _kind_of_type(module)
    if kind is not False:
        _KIND_OF_TYPE[type(module)] = kind
        return kind
    if next(module.children(), None) is not None or next(module.parameters(recurse=False), None) is None:
        return None  # a container, or a layer without parameters: its forward is followed (sklrp.nn.tracing)
    raise TypeError(
        f"sklrp cannot explain the layer {type(module).__name__} ({module!r}): no LRP decomposition is defined for "
        f"it. Supported layers: {', '.join(supported_layers())}."
    )


def _kind_of_type(module):
    """The kind of a known layer type (cached per type), or False when the instance decides."""
    if isinstance(module, _LINEAR):
        return "linear"
    if isinstance(module, _AVGPOOL):
        return "avgpool"
    if isinstance(module, _MAXPOOL):
        return "maxpool"
    if isinstance(module, _BATCHNORM):
        return "batchnorm"
    if isinstance(module, nn.LocalResponseNorm):
        return "lrn"
    if isinstance(module, Add):
        return "add"
    if isinstance(module, _SOFTMAX):
        return "softmax"
    if isinstance(module, _ACTIVATION):
        return "activation"
    if isinstance(module, _PASSIVE):
        return None
    return False


_NO_CODE = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _runs_code(module):
    """Whether the forward of a module that is not hooked runs tensor operations sklrp must follow: every module
    but torch's containers and the known pass-through layers (whose operations autograd routes correctly)."""
    return type(module) not in _NO_CODE and _kind_of_type(module) is False


def _check_layer(module, kind):
    if kind == "linear" and isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
        raise TypeError(f"{module!r}: only padding_mode='zeros' is supported by sklrp")
    if kind == "maxpool" and module.return_indices:
        raise TypeError(f"{module!r}: max pooling with return_indices=True is not supported by sklrp")


class _RelevanceFunction(torch.autograd.Function):
    """Identity forward; backward applies a layer's LRP step to the incoming relevance."""

    @staticmethod
    def forward(ctx, step, out, *inputs):
        ctx.step = step
        ctx.save_for_backward(out, *inputs)
        return out

    @staticmethod
    def backward(ctx, relevance):
        out, *inputs = ctx.saved_tensors
        return (None, None, *ctx.step(inputs, out, relevance))


class _Session:
    """State of one explanation: composite, layer positions, absorbed bias relevance."""

    def __init__(self, composite, relevance=True, mixed=None):
        self.composite = composite
        self.relevance = relevance  # False: only find the logits (plain differentiable forward)
        self.position = 0  # linear-type layers seen so far in the forward pass
        self.absorbed = []  # bias relevance per layer, summed once at the end
        self.softmax = []  # (output, input) of softmax-type modules and functions
        self.terminal = []  # (output, input) of sigmoids (removable when terminal)
        self.input_minima = []  # min of each alpha-beta layer's input, fetched from the device together
        self._mixed = mixed  # given: whether each alpha-beta layer's input has negative entries (no lookup)
        self.tracer = tracing.FunctionalTracer(self, relevance)  # tensor operations between the layers

    @property
    def bias(self):
        """Relevance absorbed by bias-like terms per sample, or None if no layer absorbed any."""
        if not self.absorbed:
            return None
        return self.absorbed[0] if len(self.absorbed) == 1 else torch.stack(self.absorbed).sum(dim=0)

    def absorb(self, bias):
        """Record relevance absorbed by bias-like terms, shape (n,)."""
        self.absorbed.append(bias)

    def _has_negative_input(self, index):
        # one host synchronisation for all alpha-beta layers instead of one per layer
        if self._mixed is None:
            self._mixed = torch.stack(self.input_minima).lt(0).tolist()
        return self._mixed[index]

    def step_for(self, module, kind, inputs=()):
        if kind == "linear":
            position = self.position
            self.position += 1
            rule = self.composite.rule_for(module, position)
            fn = layers.conv_backward if isinstance(module, nn.modules.conv._ConvNd) else layers.linear_backward
            sign_check = None
            if rule.uses_input_sign and inputs[0].numel() > 0:
                sign_check = len(self.input_minima)
                self.input_minima.append(inputs[0].detach().amin())

            def step(inputs, out, r):
                mixed = None if sign_check is None else self._has_negative_input(sign_check)
                r_in, rb = fn(module, rule, inputs[0], out, r, mixed=mixed)
                self.absorb(rb)
                return [r_in]

            return step
        if kind in ("avgpool", "maxpool"):
            flat = self.composite.is_flat(self.position)
            fn = layers.avgpool_backward if kind == "avgpool" else layers.maxpool_backward

            def step(inputs, out, r):
                r_in, _ = fn(module, flat, inputs[0], out, r)
                return [r_in]

            return step
        if kind in ("batchnorm", "lrn"):
            fn = layers.batchnorm_backward if kind == "batchnorm" else layers.lrn_backward

            def step(inputs, out, r):
                r_in, rb = fn(module, inputs[0], out, r)
                self.absorb(rb)
                return [r_in]

            return step
        if kind == "add":
            def step(inputs, out, r):
                r_in, _ = layers.add_backward(inputs, out, r)
                return r_in

            return step

        def identity(inputs, out, r):  # element-wise activations, Eq. (2.37)
            return [r]

        return identity

    def wrap_step(self, step, output, inputs):
        """``output``, whose backward maps relevance to ``inputs`` by ``step(inputs, out, relevance)``."""
        return _RelevanceFunction.apply(step, output.detach(), *inputs)

    def wrap_layer(self, module, kind, inputs, output):
        """The layer's output wrapped with its LRP step (and softmax/sigmoid outputs recorded)."""
        if kind == "softmax":
            self.softmax.append((output, inputs[0]))
            return output
        if not self.relevance:
            if isinstance(module, nn.Sigmoid):
                self.terminal.append((output, inputs[0]))
            return output
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"sklrp: {type(module).__name__} returned {type(output).__name__}, expected a tensor")
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        if len(tensors) != len(inputs) or (kind != "add" and len(tensors) != 1):
            raise TypeError(f"sklrp: {type(module).__name__} must be called with tensor input(s) only")
        wrapped = self.wrap_step(self.step_for(module, kind, tensors), output, tensors)
        if isinstance(module, nn.Sigmoid):
            self.terminal.append((wrapped, inputs[0]))
        return wrapped

    def pre_hook(self, module, inputs):
        tracer = self.tracer
        tracer.check([t for t in inputs if isinstance(t, torch.Tensor)],
                     use=lambda: f"is the input of the layer {type(module).__name__} at {tracing.where()}")
        tracer.enter()  # the functions the layer calls inside are its own

    def hook(self, kind, traced=True):
        if not traced:  # no tensor operations between the layers: nothing to follow
            return lambda module, inputs, output: self.wrap_layer(module, kind, inputs, output)

        def forward_hook(module, inputs, output):
            tracer = self.tracer
            try:
                wrapped = self.wrap_layer(module, kind, inputs, output)
                if any(tracer.is_carrier(t) for t in inputs):
                    tracer.mark(wrapped)
                return wrapped
            finally:
                tracer.leave()

        return forward_hook

    def mark_input(self, module, inputs):
        for t in inputs:
            if isinstance(t, torch.Tensor):
                self.tracer.mark_input(t)

    def logits(self, output):
        """Strip a terminal softmax/sigmoid (Section 2.3.1); reject any other softmax."""
        original = output
        for out, inp in self.softmax + self.terminal:
            if original is out:
                output = inp
                break
        if any(out is not original for out, _ in self.softmax):
            raise ValueError(
                "sklrp can only remove a Softmax/LogSoftmax that is the last layer of the network "
                "(Section 2.3.1); this network applies one inside"
            )
        return output


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def attached(model: nn.Module, composite: Composite | None, relevance: bool = True, mixed=None):
    """Attach the LRP hooks to ``model`` for one forward pass; restore it afterwards.

    Yields a session object; everything (hooks, ``training`` flags, ``inplace``
    flags) is restored on exit, also when an exception is raised. While the block runs,
    the session's :class:`sklrp.nn.tracing.FunctionalTracer` observes the tensor
    operations between the layers (sums, concatenations, functional activations, ...) and
    gives them their LRP steps; the tensor arguments of the model's call are the explained
    input. With ``relevance=False`` the hooks only locate a terminal softmax/sigmoid. ``mixed``
    (a list of bools, one per alpha-beta layer in forward order) says which of those
    layers get inputs of both signs, instead of looking (a host synchronisation).

    Hooks and flags live on the shared module, so forward passes through one module are
    serialised by a per-module lock (threads explaining with one network take turns for
    the forward pass; the backward passes, which only use each pass's own graph, run
    concurrently).
    """
    with _lock_for(model):
        with _attached(model, composite, relevance, mixed) as session:
            yield session


@contextlib.contextmanager
def _attached(model, composite, relevance, mixed):
    modules = list(model.modules())
    training = [m for m in modules if m.training]  # only these change (and are restored)
    inplace = [(m, m.inplace) for m in modules if getattr(m, "inplace", None) is True]
    handles = []
    try:
        if training:
            model.eval()
        for m, _ in inplace:
            m.inplace = False  # in-place activations would overwrite saved layer inputs
        session = _Session(composite, relevance, mixed)
        kinds = [(m, _kind(m)) for m in modules]
        # a network of nn.Sequential containers and known layers runs no code between its layers
        traced = any(kind is None and _runs_code(m) for m, kind in kinds)
        if traced:
            handles.append(model.register_forward_pre_hook(session.mark_input))
        for m, kind in kinds:
            if kind is not None:
                _check_layer(m, kind)
                if traced:
                    handles.append(m.register_forward_pre_hook(session.pre_hook))
                handles.append(m.register_forward_hook(session.hook(kind, traced)))
        with session.tracer if traced else contextlib.nullcontext():
            try:
                yield session
            finally:
                session.tracer.release()
    finally:
        for h in handles:
            h.remove()
        for m, flag in inplace:
            m.inplace = flag
        for m in training:
            m.training = True


class ForwardPass:
    """A forward pass with LRP hooks whose relevance can be computed once.

    Attributes
    ----------
    scores : torch.Tensor of shape (n, n_outputs)
        The explained outputs (logits, a terminal softmax removed), detached.
    """

    def __init__(self, x, logits, session):
        self.x = x
        self._logits = logits
        self._session = session
        self.scores = logits.detach().reshape(logits.shape[0], -1)

    def relevance(self, weights):
        """Input relevance and absorbed bias relevance for the initial relevance ``weights * scores``.

        Parameters
        ----------
        weights : torch.Tensor of shape (n, n_outputs)

        Returns
        -------
        relevance : torch.Tensor, shape of x
        bias : torch.Tensor of shape (n,)
        """
        if self._logits is None:
            raise RuntimeError("the relevance of a ForwardPass can be computed only once")
        weights = weights.to(self.scores)
        if weights.shape != self.scores.shape:
            raise ValueError(f"weights must have shape {tuple(self.scores.shape)}, got {tuple(weights.shape)}")
        start = (weights * self.scores).reshape(self._logits.shape)
        logits, self._logits = self._logits, None
        if not logits.requires_grad:  # the output does not depend on the input at all
            return torch.zeros_like(self.x), self.x.new_zeros(self.x.shape[0])
        with torch.enable_grad():
            (r,) = torch.autograd.grad(logits, self.x, start, allow_unused=True)
        r = torch.zeros_like(self.x) if r is None else r
        bias = self._session.bias
        bias = self.x.new_zeros(self.x.shape[0]) if bias is None else bias.detach()
        return r.detach(), bias


def forward(model: nn.Module, x: torch.Tensor, composite: Composite, mixed=None) -> ForwardPass:
    """Run ``model`` on ``x`` with LRP hooks and keep the graph for :meth:`ForwardPass.relevance`.

    ``model`` must already have the dtype and device of ``x``; ``mixed`` as for :func:`attached`.
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), attached(model, composite, mixed=mixed) as session:
        try:
            out = model(x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"sklrp explains modules returning one tensor; got {type(out).__name__}")
            session.tracer.check([out], use="is the network's output")
        except tracing.OperationError as exc:
            raise TypeError(str(exc)) from None
        logits = session.logits(out)
    return ForwardPass(x, logits, session)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs with a terminal softmax/sigmoid removed, as a plain (differentiable) forward.

    Runs in eval mode; the model is restored afterwards. Returns ``(n, n_outputs)``.
    """
    with attached(model, None, relevance=False) as session:
        out = model(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"sklrp explains modules returning one tensor; got {type(out).__name__}")
        out = session.logits(out)
    return out.reshape(out.shape[0], -1)


@dataclass
class LRPResult:
    """Relevance of a batch: ``relevance`` (shape of x), ``bias`` (n,), ``output`` (n,), ``scores`` (n, K)."""

    relevance: torch.Tensor
    bias: torch.Tensor
    output: torch.Tensor
    scores: torch.Tensor


_NONFINITE_OUTPUT = ("sklrp.nn.lrp: the network output contains NaN or infinity (non-finite input or weights); its "
                     "relevance would be meaningless")


def lrp(model: nn.Module, x: torch.Tensor, composite: Composite, target=None) -> LRPResult:
    """Explain ``model`` at ``x`` with a composite of rules (functional interface).

    Parameters
    ----------
    model : torch.nn.Module
        With the dtype and device of ``x``; restored after the call.
    x : torch.Tensor of shape (n, ...)
    composite : Composite
    target : None, int, "all", or torch.Tensor of shape (n,) or (n, n_outputs)
        Which outputs to explain: None = the largest logit, an index, per-sample
        indices, ``"all"`` (the sum of all outputs, Fig. 2.8) or explicit weights.

    Returns
    -------
    LRPResult

    Raises
    ------
    TypeError
        When ``model``, ``x``, ``composite`` or ``target`` is not of a supported kind, or the
        network has a layer sklrp cannot explain.
    ValueError
        When ``x`` does not fit the network (shape, dtype, device), ``target`` names no output,
        or the network output contains NaN or infinity.

    Examples
    --------
    >>> import torch
    >>> from sklrp.rules import Z
    >>> from sklrp.nn import Composite, lrp
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.ReLU(),
    ...                           torch.nn.Linear(4, 2, bias=False)).double()
    >>> res = lrp(net, torch.randn(5, 3, dtype=torch.float64), Composite(Z()))
    >>> bool(torch.allclose(res.relevance.sum(1), res.output))
    True
    """
    _check_arguments(model, x, composite, target)
    try:
        res, finite, _ = _explain(model, x, composite, target)
    except RuntimeError as exc:  # torch's own shape/dtype errors from inside the network's forward
        raise ValueError(f"sklrp.nn.lrp: the network failed on x of shape {tuple(x.shape)} and dtype {x.dtype}: "
                         f"{exc}") from exc
    if not bool(finite):
        raise ValueError(_NONFINITE_OUTPUT)
    return res


def _check_arguments(model, x, composite, target):
    """Clear errors for :func:`lrp`'s arguments before anything runs."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"sklrp.nn.lrp: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"sklrp.nn.lrp: x must be a torch.Tensor of shape (n, ...), got {type(x).__name__}; "
                        "convert it with torch.as_tensor(x, dtype=<the model's dtype>)")
    if not x.is_floating_point() or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"sklrp.nn.lrp: x must be a floating-point tensor of shape (n, ...) with n >= 1, got "
                         f"shape {tuple(x.shape)} and dtype {x.dtype}")
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None and (param.dtype != x.dtype or param.device != x.device):
        raise ValueError(f"sklrp.nn.lrp: x is {x.dtype} on {x.device} but the model's parameters are {param.dtype} "
                         f"on {param.device}; use x.to(dtype={param.dtype}, device='{param.device}') or convert "
                         "the model")
    if not isinstance(composite, Composite):
        hint = f" (wrap the rule: Composite({composite!r}))" if isinstance(composite, Rule) else ""
        raise TypeError("sklrp.nn.lrp: composite must be an sklrp.nn.Composite (e.g. Composite(Epsilon()) or "
                        f"sklrp.nn.make_composite(...)), got {type(composite).__name__}{hint}")
    if target is None or isinstance(target, torch.Tensor):
        return
    if isinstance(target, str):
        if target != "all":
            raise ValueError(f"sklrp.nn.lrp: target must be None, an output index, 'all', or a tensor of indices "
                             f"or weights; got {target!r}")
        return
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"sklrp.nn.lrp: target must be None, an integer output index, 'all', or a tensor of "
                        f"indices (n,) or weights (n, n_outputs); got {target!r}")


def _target_weights(scores, target):
    """Initial relevance weights ``(n, K)`` for a target; no host synchronisation but for index targets."""
    k = scores.shape[1]
    if target is None:
        return torch.zeros_like(scores).scatter_(1, scores.argmax(1, keepdim=True), 1.0)
    if isinstance(target, str) and target == "all":
        return torch.ones_like(scores)
    if isinstance(target, numbers.Integral):
        if not 0 <= target < k:  # a negative index would silently explain an output counted from the end
            raise ValueError(f"target index must lie in [0, {k}) for a network with {k} outputs; got {target}")
        weights = torch.zeros_like(scores)
        weights[:, int(target)] = 1
        return weights
    weights = _as_weights(torch.as_tensor(target, device=scores.device), k).to(scores)
    if weights.shape[0] != scores.shape[0]:
        raise ValueError(f"target has {weights.shape[0]} rows but x has {scores.shape[0]} samples")
    return weights


def _as_weights(target, n_outputs):
    """``(n, n_outputs)`` weights from per-sample output indices, or the weights given.

    Indices are checked on the host: out of range on a GPU they would trip a device-side
    assertion (which ruins the CUDA context) instead of raising.
    """
    if target.ndim != 1:
        if target.ndim != 2 or target.shape[1] != n_outputs:
            raise ValueError(f"target weights must have shape (n, {n_outputs}), got {tuple(target.shape)}")
        return target
    if target.is_floating_point() and bool((target != target.round()).any()):
        raise ValueError("target indices must be integers; pass weights of shape (n, n_outputs) for fractional "
                         "targets")
    idx = target.long()
    if idx.numel() and bool(((idx < 0) | (idx >= n_outputs)).any()):
        raise ValueError(f"target indices must lie in [0, {n_outputs}); got values from {idx.min().item()} to "
                         f"{idx.max().item()}")
    return torch.zeros((idx.shape[0], n_outputs), dtype=torch.float32, device=idx.device).scatter_(
        1, idx[:, None], 1.0)


def _explain(model, x, composite, target, mixed=None):
    """:func:`lrp` without its checks: ``(LRPResult, finite, session)``, ``finite`` a 0-dim bool tensor.

    Free of host synchronisation when ``mixed`` is given (so that a CUDA graph can capture it).
    """
    fp = forward(model, x, composite, mixed)
    scores = fp.scores
    # the rules treat non-finite quotients as 0: without this check NaN would become zeros
    finite = torch.isfinite(scores).all()
    weights = _target_weights(scores, target)
    r, b = fp.relevance(weights)
    return LRPResult(r, b, (weights * scores).sum(1), scores), finite, fp._session

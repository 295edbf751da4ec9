"""Tensor operations written in a network's ``forward``, followed as they run (Eqs. (2.37)-(2.41)).

LRP must know where the branches of a network join and which element-wise functions the
relevance passes: a residual ``x + y`` splits relevance between its summands (Eq. (2.39))
where the gradient of a sum would copy it to both, and ``torch.tanh(h)`` passes relevance
unchanged (Eq. (2.37)) where the gradient would multiply it by the derivative. Layers are
modules, hooked by :mod:`sklrp.nn.engine`; what a ``forward`` method does *between* them is
seen here, at the dispatch level: while sklrp explains a network, a
:class:`torch.overrides.TorchFunctionMode` observes every torch function called on an
*activation* (a tensor computed from the explained input) outside the hooked layers, and
gives each its LRP step. No rewriting of the network is needed: ``x + y`` in a
torchvision ``ResNet`` is explained as the merge point it is.

=====================================================  =============================================
operation on activations                               LRP step
=====================================================  =============================================
``a + b``, ``a - b``, ``a += b``, ``torch.add``,       Eq. (2.39) with signs, ``R_k = c_k x_k / z R``;
``torch.sub``; ``x + c`` with a constant ``c``         a constant summand absorbs its share (a bias)
``torch.cat`` / ``stack``, ``view``, ``reshape``,      routing: autograd's own backward (Eq. (2.41));
``flatten``, ``permute``, indexing, ``split``,         copies (``expand``, ``repeat``) sum their
zero ``F.pad``, ``expand``, nearest ``interpolate``    messages (Eq. (2.12))
``F.relu``, ``torch.tanh``, ``torch.sigmoid``,         identity (Eq. (2.37))
``clamp``, ...; ``2 * x``, ``x / c``, ``-x``;
dropout at inference
``F.avg_pool*``, ``F.adaptive_avg_pool*``,             z-rule of the linear map (Section 2.3.1), flat
``x.mean(dims)``, ``x.sum(dims)`` (not over dim 0)     inside the flat region (Eq. (2.27))
``F.max_pool*``                                        winner takes all, ties split (Eq. (2.35))
``F.softmax`` / ``log_softmax``, ``torch.sigmoid``     removed when terminal (Section 2.3.1)
=====================================================  =============================================

Control flow is followed as it runs: a ``forward`` with ``if`` or ``for`` is explained along
the path its input took.

Operations without an LRP decomposition -- a product of two activations (gating,
attention), a division by an activation, ``exp``, ``F.linear`` / ``F.conv2d`` with weights
held as tensors, ``detach``, a reduction over the batch -- may still compute data that only
steers control flow (``if x.sum() > 0``). Their results are marked; when one reaches the
relevance (a summand, a factor, a layer's input, the output), a ``TypeError`` names the
operation, the line of ``forward`` that called it and the line where its result was used.

In-place operations on activations (``out += identity``, ``F.relu(x, inplace=True)``,
``x.add_(y)``) run out of place, since the layers' saved activations must stay intact;
every network that rebinds the name (``x = F.relu(x, inplace=True)``, ``out += identity``)
uses the result next. A later use of the tensor they would have changed, or an in-place
change of a tensor that shares memory with another one (a view), raises a ``TypeError``
instead of silently computing something else.
"""

from __future__ import annotations

import inspect
import linecache
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["FunctionalTracer", "OperationError", "functional_operations"]


class OperationError(Exception):
    """An operation in ``forward`` that sklrp cannot explain; :func:`sklrp.nn.lrp` raises it as a ``TypeError``.

    Not a ``TypeError`` itself while the forward pass runs: torch turns a ``TypeError`` raised
    inside a binary operator (``a * b``, ``a += b``) into ``NotImplemented``, and Python then
    tries the operation another way instead of reporting it.
    """

_T = torch.Tensor

# kinds of operations on activations
(_ROUTE, _CONSTANT, _IDENTITY, _SCALE, _SUM, _REDUCE, _POOL, _SOFTMAX, _SIGMOID, _DROPOUT, _PAD, _INTERPOLATE,
 _REFUSE, _SETITEM) = range(14)

_KINDS: dict = {}
_NAMES: dict = {}
_HINTS: dict = {}


def _register(kind, owner, prefix, names, hint=None):
    for name in names:
        fn = getattr(owner, name, None)
        if fn is not None and fn not in _KINDS:
            _KINDS[fn] = kind
            _NAMES[fn] = f"{prefix}.{name}"
            if hint is not None:
                _HINTS[fn] = hint


_ROUTE_METHODS = ("view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t",
                  "squeeze", "unsqueeze", "contiguous", "expand", "expand_as", "repeat", "tile", "__getitem__",
                  "narrow", "select", "split", "split_with_sizes", "chunk", "unbind", "tensor_split", "movedim",
                  "moveaxis", "swapaxes", "swapdims", "roll", "flip", "fliplr", "flipud", "rot90", "clone", "to",
                  "type", "type_as", "float", "double", "half", "bfloat16", "cpu", "cuda", "index_select", "gather",
                  "unfold", "broadcast_to", "diagonal")
_ROUTE_TORCH = ("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack", "flatten",
                "unflatten", "reshape", "permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis",
                "squeeze", "unsqueeze", "split", "tensor_split", "chunk", "unbind", "narrow", "select",
                "index_select", "gather", "roll", "flip", "fliplr", "flipud", "rot90", "clone", "t", "tile",
                "broadcast_to", "broadcast_tensors", "atleast_1d", "atleast_2d", "atleast_3d", "diagonal")
_ROUTE_F = ("pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "unfold")
_CONSTANT_METHODS = ("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor")
_CONSTANT_TORCH = ("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like")
_ACTIVATIONS = ("relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu",
                "celu_", "gelu", "silu", "mish", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softplus",
                "softsign", "tanhshrink", "threshold", "threshold_", "logsigmoid", "tanh", "tanh_", "prelu",
                "hardshrink", "softshrink", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_",
                "clamp_max", "clamp_max_")
_SCALES = ("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "multiply_", "div", "div_", "__truediv__",
           "__itruediv__", "true_divide", "true_divide_", "divide", "divide_", "neg", "neg_", "__neg__", "negative",
           "negative_", "positive", "__pos__")
_SUMS = ("add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__", "__isub__",
         "subtract", "subtract_", "rsub")
_PRODUCTS = ("matmul", "mm", "bmm", "einsum", "addmm", "baddbmm", "__matmul__", "__rmatmul__", "tensordot", "inner",
             "outer", "dot", "mv")

for _owner, _prefix in ((_T, "torch.Tensor"), (torch, "torch"), (F, "torch.nn.functional")):
    _register(_SIGMOID, _owner, _prefix, ("sigmoid", "sigmoid_"))
    _register(_IDENTITY, _owner, _prefix, _ACTIVATIONS)
    _register(_SOFTMAX, _owner, _prefix, ("softmax", "log_softmax"))
_register(_ROUTE, _T, "torch.Tensor", _ROUTE_METHODS)
_register(_ROUTE, torch, "torch", _ROUTE_TORCH)
_register(_ROUTE, F, "torch.nn.functional", _ROUTE_F)
_register(_CONSTANT, _T, "torch.Tensor", _CONSTANT_METHODS)
_register(_CONSTANT, torch, "torch", _CONSTANT_TORCH)
for _owner, _prefix in ((_T, "torch.Tensor"), (torch, "torch")):
    _register(_SCALE, _owner, _prefix, _SCALES)
    _register(_SUM, _owner, _prefix, _SUMS)
    _register(_REDUCE, _owner, _prefix, ("sum", "mean"))
_register(_DROPOUT, F, "torch.nn.functional", ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                                                "feature_alpha_dropout"))
_register(_DROPOUT, torch, "torch", ("dropout", "alpha_dropout", "feature_alpha_dropout"))
_register(_PAD, F, "torch.nn.functional", ("pad",))
_register(_INTERPOLATE, F, "torch.nn.functional", ("interpolate", "upsample", "upsample_nearest"))
_register(_SETITEM, _T, "torch.Tensor", ("__setitem__",))

_USE_MODULE = "its weights are used in a tensor operation; write the layer as a module ({}) so that its rule applies"
_register(_REFUSE, F, "torch.nn.functional", ("linear", "bilinear"), _USE_MODULE.format("torch.nn.Linear"))
_register(_REFUSE, F, "torch.nn.functional", ("conv1d", "conv2d", "conv3d"), _USE_MODULE.format("torch.nn.ConvNd"))
_register(_REFUSE, F, "torch.nn.functional", ("batch_norm",), _USE_MODULE.format("torch.nn.BatchNormNd"))
_register(_REFUSE, F, "torch.nn.functional", ("local_response_norm",),
          _USE_MODULE.format("torch.nn.LocalResponseNorm"))
_register(_REFUSE, _T, "torch.Tensor", ("detach",), "detach cuts the network's graph: the relevance of everything "
                                                    "before it would be lost")
_register(_REFUSE, _T, "torch.Tensor", _PRODUCTS, _USE_MODULE.format("torch.nn.Linear"))
_register(_REFUSE, torch, "torch", _PRODUCTS, _USE_MODULE.format("torch.nn.Linear"))

# functional pooling: the module that computes the same, and the functional's parameters in order
_POOLS: dict = {}
for _d in (1, 2, 3):
    _avg = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad") + (("divisor_override",)
                                                                                     if _d > 1 else ())
    _max = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    for _owner, _prefix in ((F, "torch.nn.functional"), (torch, "torch")):
        for _name, _params, _module, _kind in (
                (f"avg_pool{_d}d", _avg, getattr(nn, f"AvgPool{_d}d"), "avgpool"),
                (f"adaptive_avg_pool{_d}d", ("output_size",), getattr(nn, f"AdaptiveAvgPool{_d}d"), "avgpool"),
                (f"max_pool{_d}d", _max, getattr(nn, f"MaxPool{_d}d"), "maxpool")):
            _fn = getattr(_owner, _name, None)
            if _fn is not None and _fn not in _KINDS:
                _KINDS[_fn], _NAMES[_fn] = _POOL, f"{_prefix}.{_name}"
                _POOLS[_fn] = (_params, _module, _kind)

# the position of `inplace` among the positional parameters of functional activations
_INPLACE_POSITION: dict = {}
for _fn in (F.relu, F.relu6, F.selu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.celu, F.elu, F.leaky_relu,
            F.hardtanh, F.threshold, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
            F.feature_alpha_dropout):
    try:
        _INPLACE_POSITION[_fn] = list(inspect.signature(_fn).parameters).index("inplace")
    except (ValueError, TypeError):  # pragma: no cover - a signature this torch does not expose
        pass

_ROUTE_PROPERTIES = {"T", "mT", "H", "mH", "real"}
_IN_PLACE_DUNDERS = {"__iadd__": "add", "__isub__": "sub", "__imul__": "mul", "__itruediv__": "div"}


def functional_operations() -> dict:
    """The torch functions that sklrp follows in a ``forward``, by LRP step (for the documentation and errors).

    Returns
    -------
    dict of str to list of str

    Examples
    --------
    >>> from sklrp.nn.tracing import functional_operations
    >>> "torch.cat" in functional_operations()["routing (Eq. (2.41))"]
    True
    """
    labels = {_ROUTE: "routing (Eq. (2.41))", _IDENTITY: "identity (Eq. (2.37))", _SIGMOID: "identity (Eq. (2.37))",
              _SCALE: "scaling by a constant (identity)", _SUM: "sum (Eq. (2.39))", _REDUCE: "pooling (Section 2.3.1)",
              _POOL: "pooling (Section 2.3.1)", _SOFTMAX: "terminal softmax (removed)",
              _DROPOUT: "dropout at inference (identity)", _PAD: "routing (Eq. (2.41))",
              _INTERPOLATE: "routing (Eq. (2.41))"}
    out: dict = {}
    for fn, kind in _KINDS.items():
        if kind in labels:
            out.setdefault(labels[kind], []).append(_NAMES[fn])
    return {k: sorted(v) for k, v in out.items()}


def _describe(func):
    name = _NAMES.get(func)
    if name is not None:
        return name
    if getattr(func, "__name__", None) == "__get__" and hasattr(func, "__self__"):
        return f"torch.Tensor.{func.__self__.__name__}"
    qual = (getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func))
    qual = qual.replace("TensorBase.", "Tensor.").replace("_VariableFunctionsClass.", "")
    module = getattr(func, "__module__", None) or ""
    if module.startswith("torch.nn.functional"):
        return f"torch.nn.functional.{qual}"
    return f"torch.{qual}"


def _tensors(obj, depth=0):
    """The tensors in a function's arguments or results (in lists/tuples/dicts, three levels down)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 3 and isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item, depth + 1)
    elif depth < 3 and isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item, depth + 1)


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_SKIPPED = {os.path.abspath(__file__)}


def skip_frames_of(path):
    """Frames of ``path`` (sklrp's engine) are skipped when naming the line of an operation."""
    _SKIPPED.add(os.path.abspath(path))


def _skipped(path, cache={}):  # noqa: B006 - a cache on purpose
    skip = cache.get(path)
    if skip is None:
        skip = cache[path] = path.startswith((_TORCH_DIR, "<frozen")) or os.path.abspath(path) in _SKIPPED
    return skip


def where() -> str:
    """``'File "...", line N, in Class.forward: <source>'``: the innermost frame outside torch and sklrp.nn."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not _skipped(path):
            line = linecache.getline(path, frame.f_lineno).strip()
            owner = frame.f_locals.get("self")
            func = frame.f_code.co_name
            if owner is not None and not isinstance(owner, type):
                func = f"{type(owner).__name__}.{func}"
            return f'File "{path}", line {frame.f_lineno}, in {func}' + (f": `{line}`" if line else "")
        frame = frame.f_back
    return "an unknown place"  # pragma: no cover - there is always the caller's frame


class FunctionalTracer(TorchFunctionMode):
    """Observe the torch functions a ``forward`` applies to activations (see the module docstring).

    Used by :func:`sklrp.nn.engine.attached` for one forward pass. ``session`` is the
    engine's session: the tracer asks it to wrap outputs with LRP steps (``wrap_step``,
    ``wrap_layer``), to absorb the relevance of constant summands (``absorb``), and records
    softmax and sigmoid outputs in its ``softmax`` and ``terminal`` lists. With
    ``relevance=False`` (a plain forward pass) it only records softmax/sigmoid outputs, so
    that a terminal one can be removed, and lets every function run as written.

    Activations are tracked by identity: the input given to :meth:`mark`, and every
    floating-point result of a function or hooked layer that took an activation. Hooked
    layers call :meth:`enter` before and :meth:`leave` after their forward: the functions
    they call inside are theirs.
    """

    def __init__(self, session, relevance=True):
        super().__init__()
        self.session = session
        self.relevance = relevance
        self.depth = 0
        self.input_nodes: set = set()  # autograd nodes of the explained input
        self._carriers: dict = {}  # id -> tensor (kept alive for the pass, so that ids stay unique)
        self._marked: dict = {}  # id -> (tensor, operation, where, why): results without a decomposition
        self._stale: dict = {}  # id -> (tensor, operation, where): changed by an in-place operation
        self._aliased: dict = {}  # id -> tensor: shares memory with another activation

    # -- bookkeeping -------------------------------------------------------------------
    def release(self):
        """Forget the pass's tensors (called when the forward pass is over)."""
        for table in (self._carriers, self._marked, self._stale, self._aliased):
            table.clear()
        self.input_nodes.clear()

    def enter(self):
        self.depth += 1

    def leave(self):
        self.depth -= 1

    def mark_input(self, x):
        """Track ``x`` as the explained input."""
        self.mark(x)
        if x.requires_grad:
            node = x.grad_fn if x.grad_fn is not None else torch.autograd.graph.get_gradient_edge(x).node
            self.input_nodes.add(node)

    def mark(self, obj):
        """Track the floating-point tensors in ``obj`` as activations; returns ``obj``."""
        for t in _tensors(obj):
            if t.is_floating_point():
                self._carriers[id(t)] = t
        return obj

    def is_carrier(self, t) -> bool:
        return isinstance(t, torch.Tensor) and self._carriers.get(id(t)) is t

    def _origin(self, t):
        entry = self._marked.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry if entry is not None and entry[0] is t else None

    def check(self, tensors, use=None):
        """Raise when ``tensors`` hold a result without a decomposition or a tensor an in-place operation changed.

        ``use`` says how they are used, for the message: a string, or a function returning one
        (called only for the message); default "is used at <the calling line>".
        """
        if not self._marked and not self._stale:
            return
        for t in tensors:
            origin = self._origin(t)
            stale = self._stale.get(id(t))
            if origin is None and (stale is None or stale[0] is not t):
                continue
            use = f"is used at {where()}" if use is None else use() if callable(use) else use
            if origin is not None:
                raise OperationError(f"sklrp.nn cannot explain {origin[1]} at {origin[2]}: {origin[3]}. Its result "
                                     f"{use}.")
            raise OperationError(
                f"sklrp.nn: {stale[1]} at {stale[2]} changes an activation in place, and the unchanged tensor {use} "
                "afterwards. sklrp runs in-place operations out of place (the layers' saved activations must stay "
                "intact); use their result instead, e.g. `x = torch.relu(x)`."
            )

    def _defer(self, func, fn, args, kwargs, why):
        """Run an operation without an LRP decomposition; its floating-point results are marked, so that any use of
        them in the relevance raises (:meth:`check`), while their use in control flow stays possible."""
        out = fn(*args, **kwargs)
        entry = None
        for t in _tensors(out):
            if t.is_floating_point():
                entry = (_describe(func), where(), why) if entry is None else entry
                self._marked[id(t)] = (t, *entry)
        return out

    # -- dispatch ----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        tensors = list(_tensors((args, kwargs)))
        found = [t for t in tensors if self.is_carrier(t)]
        marked = [t for t in tensors if self._origin(t) is not None]
        if not found and not marked:
            return func(*args, **kwargs)
        kind = _KINDS.get(func)
        if not self.relevance:
            out = func(*args, **kwargs)
            if found and kind == _SOFTMAX:
                self.session.softmax.append((out, found[0]))
            elif found and kind == _SIGMOID:
                self.session.terminal.append((out, found[0]))
            return self.mark(out) if found else out
        if marked:
            if found:
                self.check(marked, use=lambda: f"is combined with an activation at {where()}")
            origin = self._origin(marked[0])
            out = func(*args, **kwargs)  # data computed from such results: still without a decomposition
            for t in _tensors(out):
                if t.is_floating_point():
                    self._marked[id(t)] = (t, *origin[1:])
            return out
        self.check(found)
        if kind is None and getattr(func, "__name__", None) == "__get__" and hasattr(func, "__self__"):
            prop = getattr(func.__self__, "__name__", "")
            if prop == "data":
                return self._defer(func, func, args, kwargs, "`.data` cuts the network's graph: the relevance of "
                                                             "everything before it would be lost")
            kind = _ROUTE if prop in _ROUTE_PROPERTIES else None
        if kind == _SETITEM:
            raise OperationError(f"sklrp.nn cannot explain {_describe(func)} at {where()}: assigning into an "
                                 "activation changes it in place; build the result out of place (e.g. with torch.cat "
                                 "or torch.where).")
        if kind is None:
            base = getattr(func, "__name__", "")
            if base.endswith("_") and not base.endswith("__"):
                raise OperationError(f"sklrp.nn cannot explain {_describe(func)} at {where()}: it changes an "
                                     "activation in place and no LRP decomposition is defined for it.")
            return self._defer(func, func, args, kwargs, "no LRP decomposition is defined for it")
        if kind == _CONSTANT:
            return func(*args, **kwargs)
        if kind == _REFUSE:
            why = _HINTS[func] if len(found) == 1 else _PRODUCT
            return self._defer(func, func, args, kwargs, why)
        name = _NAMES[func]
        target, fn, args, kwargs = self._in_place(func, name, args, kwargs)
        handler = {_ROUTE: self._route, _IDENTITY: self._identity, _SIGMOID: self._identity, _SCALE: self._scale,
                   _SUM: self._sum, _REDUCE: self._reduce, _POOL: self._pool, _SOFTMAX: self._softmax,
                   _DROPOUT: self._dropout, _PAD: self._pad, _INTERPOLATE: self._interpolate}[kind]
        out = handler(func, fn, args, kwargs, found)
        if target is not None:
            self._stale[id(target)] = (target, name, where())
        return out

    # -- in-place operations -----------------------------------------------------------
    def _in_place(self, func, name, args, kwargs):
        """``(target, fn, args, kwargs)``: the tensor an in-place call would change (or None), and the call that
        computes the same out of place. Refuses in-place changes sklrp cannot run out of place."""
        base = name.rsplit(".", 1)[-1]
        plain = _IN_PLACE_DUNDERS.get(base) or (base[:-1] if base.endswith("_") and not base.endswith("__") else None)
        pos = _INPLACE_POSITION.get(func)
        flag = kwargs.get("inplace") is True or (pos is not None and len(args) > pos and args[pos] is True)
        if plain is None and not flag:
            return None, func, args, kwargs
        target = args[0] if args else kwargs.get("input")
        if not self.is_carrier(target):
            raise OperationError(f"sklrp.nn cannot explain {name} at {where()}: it writes an activation into a "
                                 "tensor that does not depend on the input; write it out of place.")
        if id(target) in self._aliased or (target._base is not None and self.is_carrier(target._base)):
            raise OperationError(f"sklrp.nn cannot explain {name} at {where()}: it changes in place a tensor that "
                                 "shares its memory with another one (a view), which sklrp cannot follow; write it out "
                                 "of place, e.g. `x = x + y`.")
        if plain is not None:
            owner = _T if name.startswith("torch.Tensor.") else F if name.startswith("torch.nn.functional.") else torch
            return target, getattr(owner, plain), args, kwargs
        if "inplace" in kwargs:
            kwargs = dict(kwargs, inplace=False)
        else:
            args = args[:pos] + (False,) + args[pos + 1:]
        return target, func, args, kwargs

    # -- handlers ------------------------------------------------------------------------
    def _route(self, func, fn, args, kwargs, found):
        """Routing (reshapes, concatenation, indexing, copies): autograd's own backward is the LRP step."""
        out = self.mark(fn(*args, **kwargs))
        inputs = {}
        for s in found:
            inputs.setdefault(_storage(s), []).append(s)
        for t in _tensors(out):
            same = [s for s in inputs.get(_storage(t), ()) if s is not t]
            if same:  # a view: an in-place change of it, or of its base, could not run out of place
                self._aliased[id(t)] = t
                for s in same:
                    self._aliased[id(s)] = s
        return out

    def _identity(self, func, fn, args, kwargs, found):
        """Element-wise functions of one activation: relevance passes unchanged (Eq. (2.37))."""
        x = args[0] if args else kwargs.get("input")
        if len(found) != 1 or x is not found[0]:
            return self._defer(func, fn, args, kwargs, "no LRP decomposition is defined for it with these arguments")
        wrapped = self.mark(self.session.wrap_step(_pass_through, fn(*args, **kwargs), [x]))
        if _KINDS.get(func) == _SIGMOID:
            self.session.terminal.append((wrapped, x))
        return wrapped

    def _scale(self, func, fn, args, kwargs, found):
        """An activation times (or divided by) a constant: the z-rule of a diagonal map without bias, which passes
        relevance unchanged. A product of activations or a division by one has no decomposition."""
        operands = list(args[:2]) + ([kwargs["other"]] if "other" in kwargs else [])
        carriers = [o for o in operands if self.is_carrier(o)]
        base = _NAMES[func].rsplit(".", 1)[-1]
        divides = base.startswith(("div", "true_divide", "__truediv__", "__itruediv__"))
        if len(carriers) != 1:
            return self._defer(func, fn, args, kwargs, _PRODUCT if carriers else
                               "no LRP decomposition is defined for it with these arguments")
        if (divides and not self.is_carrier(operands[0])) or kwargs.get("rounding_mode") is not None:
            return self._defer(func, fn, args, kwargs, "it divides by an activation (or rounds)")
        self._check_constants([o for o in operands if o is not carriers[0]])
        return self.mark(self.session.wrap_step(_pass_through, fn(*args, **kwargs), carriers))

    def _sum(self, func, fn, args, kwargs, found):
        """Sums with activations: Eq. (2.39) with signs, ``R_k = c_k x_k / z R``; constants absorb their share."""
        if "out" in kwargs:
            return self._defer(func, fn, args, kwargs, "it writes into `out=`; write `z = x + y` instead")
        base = _NAMES[func].rsplit(".", 1)[-1]
        a = args[0] if args else kwargs.get("input")
        b = args[1] if len(args) > 1 else kwargs.get("other")
        alpha = kwargs.get("alpha", 1)
        if base in ("rsub", "__rsub__"):
            operands = [(b, 1), (a, -alpha)]
        elif base.startswith(("sub", "__sub__", "__isub__")):
            operands = [(a, 1), (b, -alpha)]
        else:
            operands = [(a, 1), (b, alpha)]
        carriers = [(t, float(c)) for t, c in operands if self.is_carrier(t)]
        constants = [(t, float(c)) for t, c in operands if not self.is_carrier(t)]
        self._check_constants([t for t, _ in constants])
        out = fn(*args, **kwargs)
        step = _sum_step(self.session, [c for _, c in carriers], constants)
        return self.mark(self.session.wrap_step(step, out, [t for t, _ in carriers]))

    def _reduce(self, func, fn, args, kwargs, found):
        """``x.sum(dims)`` / ``x.mean(dims)`` over sample dimensions: a pooling (Section 2.3.1)."""
        x = args[0] if args else kwargs.get("input")
        if len(found) != 1 or x is not found[0]:
            return self._defer(func, fn, args, kwargs, _PRODUCT)
        dim = kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else None))
        dims = None if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
        if not dims or any(d % x.ndim == 0 for d in dims):
            return self._defer(func, fn, args, kwargs, "it reduces over dimension 0, which sklrp takes for the batch "
                                                       "(samples would share relevance); reduce over the dimensions "
                                                       "of one sample, e.g. x.mean((2, 3)) or "
                                                       "torch.stack([a, b], -1).sum(-1)")
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        pool = _Reduction(_NAMES[func].endswith("mean"), tuple(d % x.ndim for d in dims), bool(keepdim),
                          kwargs.get("dtype"))
        return self.mark(self.session.wrap_layer(pool, "avgpool", [x], fn(*args, **kwargs)))

    def _pool(self, func, fn, args, kwargs, found):
        """Functional pooling: the pooling layer's own LRP step (Section 2.3.1, Eqs. (2.33)-(2.35))."""
        x = args[0] if args else kwargs.get("input")
        if len(found) != 1 or x is not found[0]:
            return self._defer(func, fn, args, kwargs, "no LRP decomposition is defined for it with these arguments")
        params, module_type, kind = _POOLS[func]
        values = dict(zip(params, args[1:]))
        values.update({k: v for k, v in kwargs.items() if k != "input"})
        if values.get("stride") in ([], ()):
            values.pop("stride")  # torch.max_pool2d's default: the kernel size
        if values.get("return_indices"):
            return self._defer(func, fn, args, kwargs, "max pooling with return_indices=True is not supported")
        return self.mark(self.session.wrap_layer(module_type(**values), kind, [x], fn(*args, **kwargs)))

    def _softmax(self, func, fn, args, kwargs, found):
        out = fn(*args, **kwargs)
        self.session.softmax.append((out, found[0]))
        return self.mark(out)

    def _dropout(self, func, fn, args, kwargs, found):
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        training = kwargs.get("training", args[2] if len(args) > 2 else True)
        if training and p > 0:
            return self._defer(func, fn, args, kwargs, "it drops units at random (training=True), so the explanation "
                                                       "would be random; pass training=self.training")
        return self._route(func, fn, args, kwargs, found)

    def _pad(self, func, fn, args, kwargs, found):
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else None)
        if mode != "constant" or (value is not None and value != 0) or len(found) != 1:
            return self._defer(func, fn, args, kwargs, "only zero padding is routing; other padding copies or adds "
                                                       "constants")
        return self._route(func, fn, args, kwargs, found)

    def _interpolate(self, func, fn, args, kwargs, found):
        mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
        if mode not in ("nearest", "nearest-exact") or len(found) != 1:
            return self._defer(func, fn, args, kwargs, "only nearest-neighbour interpolation is routing; "
                                                       f"mode={mode!r} needs a decomposition sklrp does not define")
        return self._route(func, fn, args, kwargs, found)

    def _check_constants(self, constants):
        """A summand or factor that depends on the input through an operation the tracer did not see (e.g. a custom
        ``torch.autograd.Function``) is no constant."""
        for t in constants:
            if isinstance(t, torch.Tensor) and t.grad_fn is not None and _reaches(t, self.input_nodes):
                raise OperationError(f"sklrp.nn: at {where()} an operand depends on the input through an operation "
                                     "sklrp did not see (e.g. a custom torch.autograd.Function); write it with torch "
                                     "operations or modules")


_PRODUCT = ("it combines activations multiplicatively (a product of activations, as in gating or attention), for "
            "which the thesis defines no LRP rule")


def _storage(t):
    return t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)


def _reaches(t, nodes, limit=100_000):
    """Whether the autograd graph of ``t`` reaches one of ``nodes`` (a depth-first walk over ``grad_fn``)."""
    if not nodes:
        return False
    seen, stack = set(), [t.grad_fn]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in nodes:
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


def _pass_through(inputs, out, relevance):
    """Eq. (2.37): an element-wise function passes relevance unchanged (summed over broadcast copies, Eq. (2.12))."""
    x = inputs[0]
    return [relevance if relevance.shape == x.shape else relevance.sum_to_size(x.shape)]


def _sum_step(session, coefficients, constants):
    from .layers import add_backward

    def step(inputs, out, relevance):
        rs, absorbed = add_backward(inputs, out, relevance, coefficients=coefficients, constants=constants)
        if constants:
            session.absorb(absorbed)
        return rs

    return step


class _Reduction:
    """``sum`` / ``mean`` over sample dimensions as a pooling map (non-negative weights, Section 2.3.1)."""

    def __init__(self, mean, dims, keepdim, dtype):
        self.mean, self.dims, self.keepdim, self.dtype = mean, dims, keepdim, dtype

    def __call__(self, x):
        fn = torch.mean if self.mean else torch.sum
        return fn(x, dim=self.dims, keepdim=self.keepdim, dtype=self.dtype)

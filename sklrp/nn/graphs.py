"""LRP replayed from CUDA graphs: the modified backward pass without per-kernel host cost.

On a GPU, :func:`sklrp.nn.lrp` on small batches is bound by the host: Python hooks and
some hundred kernel launches per batch (see the README, "Performance"), while the GPU
idles. A CUDA graph records the launches of one explanation (forward pass, modified
backward pass of Eqs. (2.57)-(2.61), target weights) once and replays them with a
single launch. :class:`GraphedLRP` keeps one graph per input shape and falls back to
:func:`~sklrp.nn.lrp` wherever a replay could differ from it:

* CPU tensors, or a network whose explanation cannot be captured (a step that needs
  the host mid-way): plain :func:`~sklrp.nn.lrp`, with a warning for the latter.
* Alpha-beta layers need to know whether their input has negative entries (Eq. (2.25)).
  The graph is recorded with the answer for the first batch; a layer recorded as
  non-negative whose input later has negative entries makes that batch run eagerly
  (detected after the replay, in the same host synchronisation as the finiteness check).
* Parameters or buffers replaced by new tensors (``model.to(...)``, ``load_state_dict``
  with ``assign=True``) are detected by their addresses and the graph recorded again;
  values changed in place (an optimiser step) are read by the replay as they are.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .composites import Composite
from .engine import _NONFINITE_OUTPUT, LRPResult, _as_weights, _explain, lrp

__all__ = ["GraphedLRP"]


class _Recording:
    """One captured explanation: static input/target buffers, outputs and checks."""

    def __init__(self, x, weights, result, check, mixed, addresses, graph):
        self.x, self.weights, self.result, self.check = x, weights, result, check
        self.mixed, self.addresses, self.graph = mixed, addresses, graph


class GraphedLRP:
    """``lrp(model, x, composite, target)`` replayed from CUDA graphs, one per input shape.

    Gives what :func:`sklrp.nn.lrp` gives (the same kernels run, so the same numbers)
    at a fraction of its host time on small batches. The first call for an input
    shape runs ``warmup`` eager explanations and records the graph; later calls copy
    the input into the graph's buffer, replay it and return copies of its outputs.
    Holding the object keeps the graphs' memory (activations of one batch) reserved.

    Parameters
    ----------
    model : torch.nn.Module
        On the GPU, with the dtype of the inputs. Restored after every call (no hooks
        remain; ``training`` and ``inplace`` flags as they were).
    composite : Composite
        The rules (see :func:`sklrp.nn.make_composite`).
    warmup : int, default=2
        Eager explanations before recording (CUDA libraries initialise lazily).

    Examples
    --------
    >>> import torch
    >>> from sklrp.nn import Composite, GraphedLRP
    >>> from sklrp.rules import Epsilon
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> explain = GraphedLRP(net, Composite(Epsilon(0.01)))
    >>> res = explain(torch.randn(5, 3))  # on the CPU: plain sklrp.nn.lrp
    >>> res.relevance.shape
    torch.Size([5, 3])
    """

    def __init__(self, model: nn.Module, composite: Composite, warmup: int = 2):
        if not isinstance(model, nn.Module):
            raise TypeError(f"GraphedLRP needs a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(composite, Composite):
            raise TypeError(f"GraphedLRP needs a sklrp.nn.Composite, got {type(composite).__name__}")
        if not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be a positive integer, got {warmup!r}")
        self.model, self.composite, self.warmup = model, composite, warmup
        self._recordings = {}
        self._uncapturable = set()

    def __call__(self, x: torch.Tensor, target=None) -> LRPResult:
        """Explain ``x``; ``target`` as for :func:`sklrp.nn.lrp`.

        Parameters
        ----------
        x : torch.Tensor of shape (n, ...)
        target : None, int, "all", or torch.Tensor of shape (n,) or (n, n_outputs)

        Returns
        -------
        LRPResult
        """
        if not isinstance(x, torch.Tensor) or not x.is_cuda:
            return lrp(self.model, x, self.composite, target)
        kind, weights = self._target(target, x)
        key = (tuple(x.shape), x.dtype, x.device, kind, None if weights is None else tuple(weights.shape))
        if key in self._uncapturable:
            return lrp(self.model, x, self.composite, target)
        rec = self._recordings.get(key)
        if rec is None or rec.addresses != self._addresses():
            rec = self._record(key, x, kind, target, weights)
            if rec is None:
                return lrp(self.model, x, self.composite, target)
        rec.x.copy_(x)
        if weights is not None:
            rec.weights.copy_(_as_weights(weights, rec.weights.shape[1]))
        rec.graph.replay()
        finite, negative = rec.check.tolist()  # the one host synchronisation
        if not finite:
            raise ValueError(_NONFINITE_OUTPUT)
        if negative:  # an alpha-beta layer recorded as non-negative got negative inputs
            return lrp(self.model, x, self.composite, target)
        res = rec.result
        return LRPResult(res.relevance.clone(), res.bias.clone(), res.output.clone(), res.scores.clone())

    @staticmethod
    def _target(target, x):
        """``(kind, weights)``: per-sample targets become weights here (checked eagerly, not in the graph)."""
        if target is None or isinstance(target, (int, str)):
            if isinstance(target, str) and target != "all":
                raise ValueError(f"target must be None, an int, 'all' or a tensor, got {target!r}")
            return target, None
        # per-sample indices become weights once the number of outputs is known
        return "weights", torch.as_tensor(target, device=x.device)

    def _addresses(self):
        return tuple(t.data_ptr() for t in self.model.parameters()) + tuple(
            t.data_ptr() for t in self.model.buffers())

    def _record(self, key, x, kind, target, weights):
        static_x = x.detach().clone()
        # a first eager run tells which alpha-beta layers get negative inputs, and the number of outputs
        res, finite, session = _explain(self.model, static_x, self.composite, None if kind == "weights" else target)
        if not bool(finite):
            raise ValueError(_NONFINITE_OUTPUT)
        mixed = [bool(v) for v in torch.stack(session.input_minima).lt(0).tolist()] if session.input_minima else []
        static_w = None if weights is None else _as_weights(weights, res.scores.shape[1]).to(res.scores).clone()
        graph_target = target if static_w is None else static_w

        def run():
            out, fin, sess = _explain(self.model, static_x, self.composite, graph_target, mixed=mixed)
            watched = [m for m, was_mixed in zip(sess.input_minima, mixed) if not was_mixed]
            negative = torch.stack(watched).lt(0).any() if watched else torch.zeros((), dtype=torch.bool,
                                                                                     device=x.device)
            return out, torch.stack([fin, negative])

        try:
            stream = torch.cuda.Stream(device=x.device)
            stream.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):
                    run()
            torch.cuda.current_stream(x.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                result, check = run()
        except RuntimeError as err:  # a step that synchronises with the host cannot be captured
            warnings.warn(f"sklrp.nn.GraphedLRP: this network's explanation cannot be recorded as a CUDA graph "
                          f"({err}); explaining it eagerly with sklrp.nn.lrp", RuntimeWarning, stacklevel=3)
            self._uncapturable.add(key)
            return None
        rec = _Recording(static_x, static_w, result, check, mixed, self._addresses(), graph)
        self._recordings[key] = rec
        return rec


"""Gradient-type baselines LRP is compared with in Chapter 3: sensitivity (Eq. (3.1)), deconvolution
(Eq. (3.3)) and guided backpropagation."""

from __future__ import annotations

import numpy as np
import torch

from .regions import RegionGrid, check_samples
from .response import EvalMode, ModelResponse

__all__ = ["sensitivity_heatmap", "deconvolution_heatmap", "guided_backprop_heatmap"]


def _autograd(scorer, X, weights, batch_size):
    """Gradient of the explained score by autograd, or None when the model is not differentiable in torch."""
    grads = np.empty_like(X)
    for i in range(0, len(X), batch_size):
        sl = slice(i, i + batch_size)
        if scorer.kind == "lrp":
            chain = scorer.chain
            x = chain.config.tensor(X[sl]).requires_grad_(True)
            try:
                with torch.enable_grad():
                    out = (chain.scores(x) * chain.config.tensor(weights[sl])).sum()
            except RuntimeError:  # a step leaves torch (e.g. via numpy): not differentiable here
                return None
        else:
            x = scorer.torch_input(X[sl]).requires_grad_(True)
            with torch.enable_grad(), EvalMode(scorer.module):
                cols = scorer.module(x).reshape(len(x), -1)
                out = (
                    cols * torch.as_tensor(weights[sl], dtype=cols.dtype, device=cols.device)
                ).sum()
        if not out.requires_grad:
            return None
        (g,) = torch.autograd.grad(out, x, allow_unused=True)
        if g is None:
            return None
        grads[sl] = g.detach().cpu().double().numpy().reshape(grads[sl].shape)
    return grads


def _numerical_gradient(scorer, X, weights, delta, batch_size, verbose):
    """Central differences ``(f(x + h e_d) - f(x - h e_d)) / 2h`` of the explained score.

    Calls hold about ``batch_size`` rows: several samples when ``2 d`` rows fit, else one
    sample's dimensions in chunks (so memory stays bounded for large images).
    """
    n = X.shape[0]
    flat = X.reshape(n, -1)
    d = flat.shape[1]
    grads = np.empty((n, d))
    chunk = max(1, min(d, batch_size // 2))  # dimensions per call
    per_call = max(1, batch_size // (2 * d)) if chunk == d else 1  # samples per call
    tasks = [(i, j) for i in range(0, n, per_call) for j in range(0, d, chunk)]
    if verbose:
        from tqdm.auto import tqdm

        tasks = tqdm(tasks, desc="sensitivity", unit="batch")
    for i, j in tasks:
        xs = flat[i : i + per_call]
        b, dims = len(xs), np.arange(j, min(j + chunk, d))
        step = np.zeros((len(dims), d))
        step[np.arange(len(dims)), dims] = delta
        rows = np.concatenate([xs[:, None, :] + step[None], xs[:, None, :] - step[None]], axis=1)
        w = np.repeat(weights[i : i + b], 2 * len(dims), axis=0)
        f = scorer(rows.reshape((-1,) + X.shape[1:]), w).reshape(b, 2, len(dims))
        grads[i : i + b, dims] = (f[:, 0] - f[:, 1]) / (2 * delta)
    return grads.reshape(X.shape)


def sensitivity_heatmap(
    model_or_fn,
    X,
    *,
    target="predicted",
    y=None,
    norm=2,
    image_shape=None,
    channel_axis=None,
    method="auto",
    delta=None,
    batch_size=1024,
    verbose=False,
):
    """Sensitivity analysis heatmaps ``h_p = || (d f / d x_{p,c})_c ||_q``, Eq. (3.1).

    The baseline heatmap of Chapter 3 (Simonyan et al.). Gradients of the explained score come
    from torch autograd for torch modules, skorch nets and ``LRPTransformer`` chains that are
    differentiable in torch, and from central finite differences of the score otherwise (e.g. an
    SVC's ``decision_function``; ``2 * n_features`` evaluations per sample).

    Parameters
    ----------
    model_or_fn, X, target, y, image_shape, channel_axis, batch_size
        As in :func:`perturbation_curve`.
    norm : {1, 2, inf}, default=2
        ``q`` of the norm over colour channels (the thesis uses 2 and inf); without channels
        the heatmap is ``|df/dx|``.
    method : {"auto", "autograd", "numerical"}, default="auto"
    delta : float, default=None
        Finite-difference step; None means ``1e-4 * (X.max() - X.min())``.
    verbose : bool, default=False
        Progress bar over the finite-difference batches.

    Returns
    -------
    heatmaps : ndarray
        The shape of ``X`` without its channel axis: ``(n, H, W)`` for colour images, ``(n, H*W)``
        for flattened colour images, ``X.shape`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import sensitivity_heatmap
    >>> w = np.array([1.0, -2.0])
    >>> sensitivity_heatmap(lambda X: X @ w, np.ones((1, 2))).round(6)
    array([[1., 2.]])
    """
    X = check_samples(X, "X")
    if method not in ("auto", "autograd", "numerical"):
        raise ValueError(f"method must be 'auto', 'autograd' or 'numerical', got {method!r}")
    if norm not in (1, 2, np.inf):
        raise ValueError(f"norm must be 1, 2 or numpy.inf, got {norm!r}")
    grid = RegionGrid(X.shape[1:], 1, image_shape=image_shape, channel_axis=channel_axis)
    scorer = ModelResponse(model_or_fn, batch_size)
    weights, _, _ = scorer.target_weights(lambda rows: X[rows], len(X), target, y)
    grads = None
    if method != "numerical" and scorer.kind in ("lrp", "torch", "skorch"):
        grads = _autograd(scorer, X, weights, batch_size)
    if grads is None:
        if method == "autograd":
            raise ValueError(
                f"method='autograd' needs a model differentiable in torch; {scorer.kind!r} is not"
            )
        if delta is None:
            span = float(X.max() - X.min())
            delta = 1e-4 * (span if span > 0 else 1.0)
        grads = _numerical_gradient(scorer, X, weights, float(delta), batch_size, verbose)
    return _pool_channels(grads, X, grid, norm)


def _pool_channels(signal, X, grid, norm):
    """``|s|`` per input element, or its q-norm over colour channels (Eq. (3.1), Section 3.2.2)."""
    if grid.channel_axis is None:
        return np.abs(signal)
    img = signal.reshape((len(X),) + grid.layout)
    h = np.linalg.norm(img, ord=norm, axis=1 + grid.channel_axis)
    return h if X.ndim > 2 else h.reshape(len(X), -1)


class _RectifiedReLU(torch.autograd.Function):
    """ReLU forward; backward rectifies the incoming signal (deconvolution), masked by ``x > 0`` when guided."""

    @staticmethod
    def forward(ctx, x, guided):
        ctx.save_for_backward(x)
        ctx.guided = guided
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        signal = grad.clamp(min=0)
        if ctx.guided:
            signal = signal * (x > 0).to(signal.dtype)
        return signal, None


class _BackwardReLUMode(torch.overrides.TorchFunctionMode):
    """Within this mode every ReLU of a forward pass (``nn.ReLU``, ``F.relu``, ``torch.relu``) backpropagates
    the rectified signal instead of its gradient (thread-local, nothing of the model is modified)."""

    def __init__(self, guided):
        super().__init__()
        self.guided = guided

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            return _RectifiedReLU.apply(args[0], self.guided)
        return func(*args, **kwargs)


_RELUS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.nn.functional.relu_}


def _signal_heatmap(model_or_fn, X, *, guided, target, y, norm, image_shape, channel_axis, batch_size, name):
    X = check_samples(X, "X")
    if norm not in (1, 2, np.inf):
        raise ValueError(f"norm must be 1, 2 or numpy.inf, got {norm!r}")
    grid = RegionGrid(X.shape[1:], 1, image_shape=image_shape, channel_axis=channel_axis)
    scorer = ModelResponse(model_or_fn, batch_size)
    if scorer.kind not in ("lrp", "torch", "skorch"):
        raise ValueError(f"{name} needs a torch network (a torch.nn.Module, a fitted skorch net, or an "
                         f"LRPTransformer explaining one); got {type(model_or_fn).__name__}")
    weights, _, _ = scorer.target_weights(lambda rows: X[rows], len(X), target, y)
    with _BackwardReLUMode(guided):
        signal = _autograd(scorer, X, weights, batch_size)
    if signal is None:
        raise ValueError(f"{name}: the model's score is not differentiable in torch")
    return _pool_channels(signal, X, grid, norm)


def deconvolution_heatmap(model_or_fn, X, *, target="predicted", y=None, norm=2, image_shape=None,
                          channel_axis=None, batch_size=1024):
    """Deconvolution heatmaps (Zeiler et al., 2014), the baseline of Section 3.2.2 (Eq. (3.3)).

    The explained score's signal is sent back through the network as by the gradient,
    except at rectified linear units, where the signal is itself rectified (passed through a
    ReLU) instead of masked by the forward activation. Max-pooling switches and transposed
    filters are the gradient's. As for sensitivity, colour channels are pooled by a q-norm.

    Parameters
    ----------
    model_or_fn : torch.nn.Module, skorch net or LRPTransformer explaining one
    X : ndarray of shape (n_samples, ...)
        Inputs as the network takes them (or flattened, with ``image_shape``).
    target, y, norm, image_shape, channel_axis, batch_size
        As in :func:`sensitivity_heatmap`.

    Returns
    -------
    heatmaps : ndarray
        As :func:`sensitivity_heatmap` returns.

    Notes
    -----
    ReLUs are recognised as ``torch.nn.ReLU`` modules and calls of ``torch.relu`` /
    ``torch.nn.functional.relu``; other rectifiers (``clamp``, ``LeakyReLU``) are differentiated.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklrp.evaluation import deconvolution_heatmap
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    >>> deconvolution_heatmap(net, np.ones((1, 2)), target=0).shape
    (1, 2)
    """
    return _signal_heatmap(model_or_fn, X, guided=False, target=target, y=y, norm=norm, image_shape=image_shape,
                           channel_axis=channel_axis, batch_size=batch_size, name="deconvolution_heatmap")


def guided_backprop_heatmap(model_or_fn, X, *, target="predicted", y=None, norm=2, image_shape=None,
                            channel_axis=None, batch_size=1024):
    """Guided backpropagation heatmaps (Springenberg et al., 2015; Section 3.2).

    Like :func:`deconvolution_heatmap`, but at every ReLU the rectified signal is also masked
    by the forward activation (``x > 0``): a unit passes signal back only where it fired and
    only where the signal is positive. Beyond the thesis' Chapter 3 comparison (which has
    sensitivity and deconvolution); its related-work section names it as the extension of
    deconvolution to networks without max pooling.

    Parameters
    ----------
    model_or_fn, X, target, y, norm, image_shape, channel_axis, batch_size
        As in :func:`deconvolution_heatmap`.

    Returns
    -------
    heatmaps : ndarray

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklrp.evaluation import guided_backprop_heatmap
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    >>> guided_backprop_heatmap(net, np.ones((1, 2)), target=0).shape
    (1, 2)
    """
    return _signal_heatmap(model_or_fn, X, guided=True, target=target, y=y, norm=norm, image_shape=image_shape,
                           channel_axis=channel_axis, batch_size=batch_size, name="guided_backprop_heatmap")



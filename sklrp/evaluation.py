"""Heatmap evaluation by region perturbation (thesis Chapter 3) and the context ratio (Eq. (4.11)).

A heatmap orders the regions of an input (Eqs. (3.4)-(3.5)); perturbing the regions in that
order (Eq. (3.6)) and recording the explained score ``f(x^(k))`` gives the *perturbation
curve*. A good heatmap ranks the regions that matter first, so under *most relevant first*
(MoRF) the score drops fast and the area over the curve, AOPC (Eq. (3.7)), is large.

Public functions:

* :func:`perturbation_curve` -- ``f(x^(k))`` for ``k = 0..L`` per sample (Eq. (3.6)).
* :func:`aopc_score` -- Eq. (3.7), optionally relative to a random ordering (Fig. 3.5).
* :func:`make_aopc_scorer` -- AOPC as a scikit-learn scorer for an :class:`~sklrp.LRPTransformer`,
  so ``GridSearchCV`` can choose rule parameters by heatmap quality.
* :func:`sensitivity_heatmap` -- the sensitivity-analysis baseline of Eq. (3.1).
* :func:`context_ratio` -- outside/inside relevance ratio of Eq. (4.11).

Perturbations are objects with a small protocol (:class:`Perturbation`): ``start`` builds
``x^(0)``, ``step`` applies ``g(x^(k-1), r_k)`` to a batch, ``model_input`` turns the state into
what the scored model consumes. The built-ins act on the pixels of a region grid; a subclass may
keep any state -- e.g. the Bag-of-Words descriptor replacement of Appendix C.2 keeps the
unnormalised Fisher vector (Eq. (C.1)), replaces one descriptor per step (Eq. (C.2)) and is scored
by a function of that intermediate representation.
"""

from __future__ import annotations

import math
import numbers
from types import SimpleNamespace

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.base import is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .propagators import Head

__all__ = [
    "perturbation_curve",
    "aopc_score",
    "make_aopc_scorer",
    "sensitivity_heatmap",
    "context_ratio",
    "RegionGrid",
    "Perturbation",
    "UniformPerturbation",
    "FlipPerturbation",
    "MeanPerturbation",
    "BlurPerturbation",
    "FunctionPerturbation",
]

_ORDERS = ("morf", "lerf", "random")


# -- inputs ------------------------------------------------------------------------------
def _check_array(a, name, *, min_ndim=2):
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if a.ndim < min_ndim:
        raise ValueError(
            f"{name} must have shape (n_samples, ...) with at least {min_ndim} dimensions, "
            f"got shape {a.shape}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no samples (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _region_size(region_size):
    size = (
        (region_size, region_size)
        if isinstance(region_size, numbers.Integral)
        else tuple(region_size)
    )
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and s >= 1 for s in size):
        raise ValueError(
            f"region_size must be a positive integer or a pair of them, got {region_size!r}"
        )
    return int(size[0]), int(size[1])


class RegionGrid:
    """Non-overlapping ``m x m`` regions of an input layout (the locations ``r_p`` of Eq. (3.4)).

    Images of shape ``(H, W)`` or ``(H, W, C)`` (any ``channel_axis``) are tiled from the top
    left; when ``H`` or ``W`` is not a multiple of ``m`` the last row/column of regions is
    smaller. A region covers all channels of its pixels (Section 2.3.3: colour relevance is
    summed over channels). Tabular inputs ``(d,)`` have one region per feature.

    Parameters
    ----------
    input_shape : tuple
        Shape of one sample as the model receives it (``X.shape[1:]``).
    region_size : int or (int, int), default=1
    image_shape : tuple, default=None
        ``(H, W)`` or ``(H, W, C)`` when the model takes flattened images (``prod`` must equal
        ``prod(input_shape)``); the row-major reshape of a sample must give the image.
    channel_axis : int, default=None
        Channel axis of a 3-D image layout (``-1`` when None: ``(H, W, C)``; ``0`` for torch's
        ``(C, H, W)``).

    Attributes
    ----------
    region_map : ndarray of shape (n_features,)
        Region index of every (flattened) input element.
    pixel_map : ndarray of shape (H * W,)
        Region index of every pixel (for relevance already summed over channels).
    n_regions : int

    Examples
    --------
    >>> from sklrp.evaluation import RegionGrid
    >>> grid = RegionGrid((5, 5), region_size=2)
    >>> grid.n_regions
    9
    >>> grid.region_map.reshape(5, 5)[:, 4]
    array([2, 2, 5, 5, 8])
    """

    def __init__(self, input_shape, region_size=1, image_shape=None, channel_axis=None):
        self.input_shape = tuple(int(s) for s in input_shape)
        n_features = int(np.prod(self.input_shape))
        layout = self.input_shape if image_shape is None else tuple(int(s) for s in image_shape)
        if int(np.prod(layout)) != n_features:
            raise ValueError(
                f"image_shape={tuple(image_shape)} has {int(np.prod(layout))} elements but each "
                f"sample of X has {n_features} (shape {self.input_shape})"
            )
        mh, mw = _region_size(region_size)
        if len(layout) == 1:
            if (mh, mw) != (1, 1):
                raise ValueError(
                    f"region_size={region_size!r} needs image input: X has tabular samples of shape "
                    f"{self.input_shape}; pass image_shape=(H, W) for flattened images, or region_size=1"
                )
            spatial, caxis = (1, layout[0]), None
        elif len(layout) == 2:
            spatial, caxis = layout, None
        elif len(layout) == 3:
            caxis = -1 if channel_axis is None else channel_axis
            if not isinstance(caxis, numbers.Integral) or not -3 <= caxis <= 2:
                raise ValueError(
                    f"channel_axis must be an axis of the 3-D image layout {layout}, got {channel_axis!r}"
                )
            caxis = int(caxis) % 3
            spatial = tuple(s for i, s in enumerate(layout) if i != caxis)
        else:
            raise ValueError(
                f"samples must be tabular (d,), images (H, W) or (H, W, C); got sample shape {layout}"
                + ("" if image_shape is None else " (image_shape)")
            )
        h, w = spatial
        if mh > h or mw > w:
            raise ValueError(f"region_size={(mh, mw)} is larger than the image ({h} x {w})")
        self.layout, self.channel_axis, self.spatial_shape = layout, caxis, (h, w)
        self.region_size = (mh, mw)
        n_cols = math.ceil(w / mw)
        rid = (np.arange(h)[:, None] // mh) * n_cols + (np.arange(w)[None, :] // mw)
        self.n_regions = int(math.ceil(h / mh) * n_cols)
        self.pixel_map = rid.ravel()
        if caxis is None:
            self.region_map = rid.ravel()
        else:
            self.region_map = np.broadcast_to(np.expand_dims(rid, caxis), layout).ravel().copy()
        self.n_features = n_features
        # element indices of every region, padded by repeating the region's first index (so a
        # batch of regions is one fancy-indexing op; repeated writes of one value are harmless)
        members = np.argsort(self.region_map, kind="stable")
        counts = np.bincount(self.region_map, minlength=self.n_regions)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        offsets = np.minimum(np.arange(counts.max())[None, :], counts[:, None] - 1)
        self.region_index = members[starts[:, None] + offsets]

    def region_scores(self, relevance):
        """Summed relevance of every region, ``H(x, f, r_p)`` of Eq. (3.5).

        Parameters
        ----------
        relevance : ndarray of shape (n_samples, ...)
            One value per input element (``n_features`` per sample), or per pixel (``H * W``,
            channels already summed).

        Returns
        -------
        scores : ndarray of shape (n_samples, n_regions)
        """
        n = relevance.shape[0]
        flat = relevance.reshape(n, -1)
        if flat.shape[1] == self.n_features:
            rmap = self.region_map
        elif flat.shape[1] == self.pixel_map.size:
            rmap = self.pixel_map
        else:
            raise ValueError(
                f"relevance has {flat.shape[1]} values per sample (shape {relevance.shape}) but the inputs have "
                f"{self.n_features} (sample shape {self.input_shape}) and {self.pixel_map.size} pixels"
            )
        idx = (np.arange(n)[:, None] * self.n_regions + rmap[None, :]).ravel()
        return np.bincount(idx, weights=flat.ravel(), minlength=n * self.n_regions).reshape(
            n, self.n_regions
        )

    def indices(self, regions):
        """Flat element indices ``(b, max_region_size)`` of one region per row (padded by repetition)."""
        return self.region_index[np.asarray(regions)]

    def mask(self, regions):
        """Boolean masks ``(b, n_features)`` of one region per row."""
        return self.region_map[None, :] == np.asarray(regions)[:, None]


# -- perturbations (the function g of Eq. (3.6)) -------------------------------------------
class Perturbation:
    """Base class of the region perturbation ``g(x^(k-1), r_k)`` of Eq. (3.6).

    The curve engine calls, for a batch of rows (``rows`` are sample indices into ``X``; a
    sample appears ``n_repeats`` times):

    1. ``bind(X, grid, value_range)`` once per curve (``X`` flattened to ``(n, n_features)``);
    2. ``region_scores(relevance)`` -> ``(n, n_regions)``: the ordering scores (Eq. (3.5)).
       NaN marks a region a sample does not have (e.g. images with fewer local descriptors);
       such regions are never perturbed;
    3. ``start(rows, rng)`` -> ``state``: ``x^(0)`` for each row, in any representation;
    4. ``step(state, rows, regions, rng)`` -> ``state``: perturb region ``regions[i]`` of row ``i``;
    5. ``model_input(state)`` -> the array the scored model takes.

    The default ``region_scores``/``start``/``model_input`` use the pixel grid and ``X`` itself;
    built-in subclasses only implement ``step``. A perturbation acting on a model's
    intermediate representation (Appendix C.2: replacing local descriptors in an unnormalised
    Fisher vector, Eqs. (C.1)-(C.2)) overrides all of them and is paired with a
    ``model_or_fn`` that scores that representation (e.g. ``lambda fv: svm(normalize(fv))``).

    Attributes
    ----------
    random : bool
        False when ``g`` is deterministic: repeats of a fixed ordering are then evaluated once.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import Perturbation, perturbation_curve
    >>> class Zero(Perturbation):
    ...     random = False
    ...     def step(self, state, rows, regions, rng):
    ...         return np.where(self.grid.mask(regions), 0.0, state)
    >>> X = np.array([[1.0, 2.0, 3.0]])
    >>> perturbation_curve(lambda X: X.sum(1), X, X, perturbation=Zero())
    array([[6., 3., 1., 0.]])
    """

    random = True

    def bind(self, X, grid, value_range):
        self.X, self.grid, self.value_range = X, grid, value_range
        return self

    def region_scores(self, relevance):
        return self.grid.region_scores(relevance)

    def start(self, rows, rng):
        return self.X[rows].copy()

    def step(self, state, rows, regions, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def model_input(self, state):
        return state.reshape((-1,) + self.grid.input_shape)

    def initial_input(self, rows):
        """Model input of ``x^(0)`` for ``rows`` (scores the unperturbed samples; fixes the target)."""
        return self.model_input(self.start(rows, check_random_state(0)))


class _Replacement(Perturbation):
    """Perturbations that replace a region by values fixed per row at ``start``."""

    def replacement(self, rows, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self, rows, rng):
        return self.X[rows].copy(), self.replacement(rows, rng)

    def values(self, rho, r, idx, rng):
        """Replacement values at elements ``(r, idx)``."""
        return rho[r, idx]

    def step(self, state, rows, regions, rng):
        current, rho = state
        idx = self.grid.indices(regions)
        r = np.arange(len(rows))[:, None]
        current[r, idx] = self.values(rho, r, idx, rng)
        return current, rho

    def model_input(self, state):
        return state[0].reshape((-1,) + self.grid.input_shape)

    def initial_input(self, rows):
        return self.X[rows].reshape((-1,) + self.grid.input_shape)


class UniformPerturbation(_Replacement):
    """Replace a region by values drawn uniformly from ``value_range`` (Section 3.4.1).

    Every element (and channel) is drawn independently, as in the thesis' experiments.

    Examples
    --------
    >>> from sklrp.evaluation import UniformPerturbation
    >>> UniformPerturbation().random
    True
    """

    random = True

    def replacement(self, rows, rng):
        return None  # drawn per step, only for the regions perturbed

    def values(self, rho, r, idx, rng):
        lo, hi = self.value_range
        return rng.uniform(lo, hi, size=idx.shape)


class FlipPerturbation(_Replacement):
    """Pixel flipping (Fig. 3.4): ``x -> low + high - x``, a sign flip for ``[-1, 1]`` inputs.

    Examples
    --------
    >>> from sklrp.evaluation import FlipPerturbation
    >>> FlipPerturbation().random
    False
    """

    random = False

    def replacement(self, rows, rng):
        lo, hi = self.value_range
        return lo + hi - self.X[rows]


class MeanPerturbation(_Replacement):
    """Replace a region by the data-set mean of each element.

    Parameters
    ----------
    mean : array-like of the shape of one sample, default=None
        The mean to use; None takes the mean of the ``X`` passed to the curve. Pass it when
        the curves of one data set are computed in chunks (e.g. by joblib workers), so that
        every chunk removes information the same way.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import MeanPerturbation
    >>> MeanPerturbation().random
    False
    >>> MeanPerturbation(mean=np.zeros(4)).mean.shape
    (4,)
    """

    random = False

    def __init__(self, mean=None):
        self.mean = mean

    def bind(self, X, grid, value_range):
        super().bind(X, grid, value_range)
        if self.mean is None:
            self.mean_ = X.mean(axis=0)
        else:
            self.mean_ = np.asarray(self.mean, dtype=float).reshape(-1)
            if self.mean_.shape[0] != X.shape[1]:
                raise ValueError(f"mean has {self.mean_.shape[0]} elements but a sample has {X.shape[1]}")
        return self

    def replacement(self, rows, rng):
        return np.broadcast_to(self.mean_, (len(rows), self.X.shape[1]))


class BlurPerturbation(_Replacement):
    """Replace a region by a Gaussian-blurred copy of the original image (spatial axes only).

    Parameters
    ----------
    sigma : float, default=None
        Standard deviation in pixels; None uses half the larger region side (at least 1).

    Examples
    --------
    >>> from sklrp.evaluation import BlurPerturbation
    >>> BlurPerturbation(sigma=2.0).sigma
    2.0
    """

    random = False

    def __init__(self, sigma=None):
        self.sigma = sigma

    def bind(self, X, grid, value_range):
        super().bind(X, grid, value_range)
        if len(grid.layout) == 1:
            raise ValueError(
                "perturbation='blur' needs image input; pass image_shape=(H, W) for flattened images"
            )
        sigma = max(1.0, max(grid.region_size) / 2) if self.sigma is None else self.sigma
        if not isinstance(sigma, numbers.Real) or not sigma > 0:
            raise ValueError(
                f"BlurPerturbation: sigma must be a positive number, got {self.sigma!r}"
            )
        sig = [0.0] + [float(sigma)] * len(grid.layout)
        if grid.channel_axis is not None:
            sig[1 + grid.channel_axis] = 0.0
        self._sig = sig
        return self

    def replacement(self, rows, rng):
        img = self.X[rows].reshape((len(rows),) + self.grid.layout)
        return gaussian_filter(img, self._sig, mode="nearest").reshape(len(rows), -1)


class FunctionPerturbation(Perturbation):
    """Wrap a plain function ``g(x_prev, mask, rng) -> x_new`` as a perturbation.

    ``x_prev`` and ``mask`` have shape ``(b,) + X.shape[1:]`` (``mask`` is True on the region
    to perturb in each row), ``rng`` is a ``numpy.random.RandomState``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import FunctionPerturbation
    >>> g = FunctionPerturbation(lambda x, mask, rng: np.where(mask, 0.0, x))
    """

    random = True

    def __init__(self, func):
        self.func = func

    def step(self, state, rows, regions, rng):
        shape = (len(rows),) + self.grid.input_shape
        out = np.asarray(
            self.func(state.reshape(shape), self.grid.mask(regions).reshape(shape), rng),
            dtype=np.float64,
        )
        if out.shape != shape:
            raise ValueError(
                f"the perturbation function returned shape {out.shape}, expected {shape}"
            )
        return out.reshape(len(rows), -1)


_PERTURBATIONS = {
    "uniform": UniformPerturbation,
    "flip": FlipPerturbation,
    "mean": MeanPerturbation,
    "blur": BlurPerturbation,
}


def _make_perturbation(perturbation):
    if isinstance(perturbation, Perturbation):
        return perturbation
    if isinstance(perturbation, str):
        if perturbation not in _PERTURBATIONS:
            raise ValueError(
                f"perturbation must be one of {tuple(_PERTURBATIONS)}, a Perturbation or a callable "
                f"g(x, mask, rng), got {perturbation!r}"
            )
        return _PERTURBATIONS[perturbation]()
    if callable(perturbation):
        return FunctionPerturbation(perturbation)
    raise TypeError(
        f"perturbation must be a name, a Perturbation or a callable, got {type(perturbation).__name__}"
    )


# -- the explained score f ----------------------------------------------------------------
def _is_lrp(model):
    from .explain import LRPTransformer

    return isinstance(model, LRPTransformer)


_OUTPUT_NONLINEARITIES = (
    torch.nn.Softmax,
    torch.nn.LogSoftmax,
    torch.nn.Softmax2d,
    torch.nn.Sigmoid,
)


def _logit_module(module):
    """Drop a terminal softmax/sigmoid of a ``Sequential``: the logits are the score (Section 2.3.1)."""
    if (
        isinstance(module, torch.nn.Sequential)
        and len(module) > 1
        and isinstance(module[-1], _OUTPUT_NONLINEARITIES)
    ):
        return module[:-1]
    return module


class _EvalMode:
    """Run a module in eval mode (dropout off, batch-norm statistics fixed), restoring every submodule's mode."""

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.module.modules()]
        if any(mode for _, mode in self.modes):
            self.module.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            if m.training != mode:
                m.training = mode


class _Scorer:
    """Score columns of a model and the target weights selecting the explained score.

    The explained score of a row is ``sum_k weights[k] * columns[k]``: for an
    ``LRPTransformer`` the score ``Explanation.output`` reports (same head, same target weights).
    """

    def __init__(self, model, batch_size):
        self.model, self.batch_size = model, batch_size
        self.kind = self._kind(model)
        self.module, self.input_shape, self.chain = None, None, None
        if self.kind == "lrp":
            # the explainer's own chain: perturbed inputs are scored exactly as the explanation was
            self.chain = model.get_chain()
        elif self.kind == "torch":
            self.module = model
        elif self.kind == "skorch":
            self.module = model.module_
        if self.module is not None:
            self.module = _logit_module(self.module)

    @staticmethod
    def _kind(model):
        if _is_lrp(model):
            check_is_fitted(model)
            return "lrp"
        if isinstance(model, torch.nn.Module):
            return "torch"
        if hasattr(model, "module_") and hasattr(model, "initialized_"):
            return "skorch"
        if hasattr(model, "fit") and hasattr(model, "get_params"):
            if hasattr(model, "decision_function"):
                return "decision_function"
            if hasattr(model, "predict_proba"):
                return "predict_proba"
            if hasattr(model, "predict") and is_regressor(model):
                return "predict"
            raise TypeError(
                f"{type(model).__name__} has no score function: the evaluated model needs decision_function, "
                "predict_proba (classifiers) or predict (regressors). Pass a fitted LRPTransformer or a callable "
                "X -> scores instead."
            )
        if callable(model):
            return "callable"
        raise TypeError(
            f"model_or_fn must be an LRPTransformer, a fitted estimator with a score function, a torch "
            f"module or a callable X -> scores; got {type(model).__name__}"
        )

    def torch_input(self, X):
        param = next(self.module.parameters(), None)
        dtype = torch.float32 if param is None else param.dtype
        device = torch.device("cpu") if param is None else param.device
        x = torch.as_tensor(X, dtype=dtype, device=device)
        return x.reshape(x.shape[0], *self.input_shape) if self.input_shape is not None else x

    def columns(self, X):
        """Score columns ``(b, K)`` for a batch of model inputs."""
        kind, model = self.kind, self.model
        if kind == "lrp":
            out = self.chain.score_columns(X)
        elif self.module is not None:
            with torch.no_grad(), _EvalMode(self.module):
                out = self.module(self.torch_input(X)).detach().cpu().double().numpy()
        else:
            fn = model if kind == "callable" else getattr(model, kind)
            out = np.asarray(fn(X), dtype=np.float64)
        out = out.reshape(len(X), -1)
        if not np.all(np.isfinite(out)):
            raise ValueError("the model returned NaN or infinite scores on the (perturbed) inputs")
        return out

    def _head(self, n_columns):
        if self.chain is not None:
            return self.chain.head
        classes = None
        if self.kind in ("decision_function", "predict_proba", "skorch"):
            try:
                classes = getattr(self.model, "classes_", None)
            except (AttributeError, NotFittedError):  # skorch: classes never inferred
                classes = None
        if classes is None and n_columns > 1 and self.kind in ("torch", "skorch", "callable"):
            classes = np.arange(n_columns)  # plain modules/callables: column k scores class k
        return Head(SimpleNamespace(classes_=classes) if classes is not None else None)

    def target_weights(self, inputs, n, target, y):
        """Per-sample column weights ``(n, K)``, target labels and ``f(x^(0))``.

        ``inputs(rows)`` gives the model inputs of the unperturbed samples ``rows``.
        """
        from .chain import resolve_target

        bs = self.batch_size
        cols = np.concatenate(
            [self.columns(inputs(np.arange(i, min(i + bs, n)))) for i in range(0, n, bs)]
        )
        if self.kind == "callable" and cols.shape[1] == 1:  # a single score: nothing to select
            return np.ones((n, 1)), np.zeros(n, dtype=int), cols[:, 0]
        head = self._head(cols.shape[1])
        labels = resolve_target(target, y, n)
        if labels is None:
            labels = head.predicted(cols)
        weights = np.asarray(
            head.target_weights(np.asarray(labels), cols.shape[1]), dtype=np.float64
        )
        return weights, np.asarray(labels), (weights * cols).sum(axis=1)

    def __call__(self, X, weights):
        return (self.columns(X) * weights).sum(axis=1)


# -- region perturbation ------------------------------------------------------------------
def _orders(scores, order, rng):
    """Region indices per row in perturbation order (Eq. (3.5)); absent (NaN) regions last."""
    absent = np.isnan(scores)
    if order == "morf":
        keys = -scores
    elif order == "lerf":
        keys = scores.copy()
    else:
        keys = rng.random_sample(scores.shape)
    keys[absent] = np.inf
    # stable: equal relevance keeps region (reading) order
    return np.argsort(keys, axis=1, kind="stable")


def _check_common(
    X, relevance, n_steps, order, n_repeats, value_range, batch_size, perturbation, grid_args
):
    X = _check_array(X, "X")
    relevance = _check_array(relevance, "relevance")
    if relevance.shape[0] != X.shape[0]:
        raise ValueError(f"relevance has {relevance.shape[0]} samples but X has {X.shape[0]}")
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    if not isinstance(n_repeats, numbers.Integral) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if value_range is None:
        value_range = (float(X.min()), float(X.max()))
    else:
        value_range = tuple(float(v) for v in value_range)
        if (
            len(value_range) != 2
            or not all(np.isfinite(value_range))
            or value_range[0] > value_range[1]
        ):
            raise ValueError(
                f"value_range must be a finite pair (low, high) with low <= high, got {value_range!r}"
            )
    grid = RegionGrid(X.shape[1:], **grid_args)
    g = _make_perturbation(perturbation).bind(X.reshape(len(X), -1), grid, value_range)
    scores = np.asarray(g.region_scores(relevance), dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != X.shape[0]:
        raise ValueError(
            f"region scores must have shape (n_samples, n_regions), got {scores.shape}"
        )
    available = int((~np.isnan(scores)).sum(axis=1).min())
    if n_steps is None:
        n_steps = available
    if not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer or None, got {n_steps!r}")
    if n_steps > available:
        raise ValueError(
            f"n_steps={n_steps} exceeds the number of regions ({available}) of the inputs "
            f"(region_size={grid.region_size}, image {grid.spatial_shape})"
        )
    return X, g, scores, int(n_steps)


def perturbation_curve(
    model_or_fn,
    X,
    relevance,
    *,
    target="predicted",
    y=None,
    region_size=1,
    n_steps=None,
    order="morf",
    perturbation="uniform",
    n_repeats=1,
    value_range=None,
    image_shape=None,
    channel_axis=None,
    random_state=None,
    batch_size=1024,
    verbose=False,
):
    """Explained score along a region-perturbation sequence, Eq. (3.6).

    The regions of each sample (non-overlapping ``m x m`` tiles of an image, single features of
    tabular data; Eq. (3.4)) are ordered by their summed relevance (Eq. (3.5)) and perturbed one
    after another; ``f(x^(k))`` is recorded for ``k = 0..L``. All samples, repeats and several
    steps are stacked into batches of about ``batch_size`` rows, so the model is called about
    ``n_samples * n_repeats * (n_steps + 1) / batch_size`` times.

    Parameters
    ----------
    model_or_fn : LRPTransformer, estimator, torch module or callable
        What ``f`` is. A fitted :class:`~sklrp.LRPTransformer`: the score it explains
        (``Explanation.output``: the target's decision value, sign-flipped for the negative class
        of a binary model), evaluated by a forward pass only. A fitted estimator:
        its ``decision_function`` (else ``predict_proba``; ``predict`` for regressors), column of
        the target class. A torch module or fitted skorch net: its output (logit) of the target
        class. A callable ``X -> scores`` of shape (n,) or (n, K) (column = class index).
    X : ndarray of shape (n_samples, ...)
        Inputs as the model takes them: tabular ``(n, d)``, images ``(n, H, W)`` or
        ``(n, H, W, C)``, or flattened images ``(n, H*W[*C])`` with ``image_shape``.
    relevance : ndarray
        Heatmaps: the shape of ``X``, or one value per pixel (colour relevance already summed over
        channels, Section 2.3.3).
    target : "predicted", "true", label or array-like, default="predicted"
        Which score is tracked; fixed from the unperturbed inputs (``"predicted"``).
    y : array-like of shape (n_samples,), default=None
        True labels, for ``target="true"``.
    region_size : int or (int, int), default=1
        Side ``m`` of the square regions (1 = single pixels/features). Edge regions of images
        whose size is not a multiple of ``m`` are smaller.
    n_steps : int, default=None
        ``L``, the number of perturbation steps; None perturbs every region.
    order : {"morf", "lerf", "random"}, default="morf"
        Most relevant first, least relevant first, or a random order (the baseline of Fig. 3.5).
        Equal relevance is perturbed in region (reading) order.
    perturbation : {"uniform", "flip", "mean", "blur"}, Perturbation or callable, default="uniform"
        ``g`` of Eq. (3.6): uniform noise in ``value_range`` (Section 3.4.1), pixel flipping
        ``low + high - x`` (Fig. 3.4), the data-set mean, a blurred copy, a
        :class:`Perturbation`, or a function ``g(x_prev, mask, rng) -> x_new``.
    n_repeats : int, default=1
        Repetitions averaged (Section 3.5.1 uses 10). Skipped when both ``g`` and the order
        are deterministic.
    value_range : (float, float), default=None
        Input domain for "uniform" and "flip"; None uses ``(X.min(), X.max())``.
    image_shape : tuple, default=None
        ``(H, W)`` or ``(H, W, C)`` for flattened image inputs.
    channel_axis : int, default=None
        Channel axis of 3-D image samples; None means last (``(H, W, C)``), 0 for ``(C, H, W)``.
    random_state : int, RandomState or None, default=None
        Seeds the random orders and noise; results are reproducible for equal
        ``random_state`` and ``batch_size``.
    batch_size : int, default=1024
        Rows (perturbed inputs) per model call.
    verbose : bool, default=False
        Show a progress bar over batches of samples.

    Returns
    -------
    curves : ndarray of shape (n_samples, n_steps + 1)
        ``f(x^(k))`` for ``k = 0..L`` per sample, averaged over repeats.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import perturbation_curve
    >>> w = np.array([1.0, 2.0, 3.0, 4.0])
    >>> X = np.ones((1, 4))
    >>> perturbation_curve(lambda X: X @ w, X, X * w, perturbation="flip", value_range=(-1, 1))
    array([[ 10.,   2.,  -4.,  -8., -10.]])
    """
    grid_args = dict(region_size=region_size, image_shape=image_shape, channel_axis=channel_axis)
    X, g, scores, n_steps = _check_common(
        X, relevance, n_steps, order, n_repeats, value_range, batch_size, perturbation, grid_args
    )
    scorer = _Scorer(model_or_fn, batch_size)
    rng = check_random_state(random_state)
    weights, _, _ = scorer.target_weights(g.initial_input, len(X), target, y)
    if not g.random and order != "random":
        n_repeats = 1
    return _run_curves(
        scorer, g, scores, weights, n_steps, order, n_repeats, rng, batch_size, verbose
    )


def _run_curves(scorer, g, scores, weights, n_steps, order, n_repeats, rng, batch_size, verbose):
    n = scores.shape[0]
    curves = np.empty((n, n_steps + 1))
    # up to batch_size rows per step: the per-step work is vectorised over many samples, and
    # short rows are grouped into calls of several steps (about batch_size rows per call)
    per_batch = max(1, batch_size // n_repeats)
    batches = [np.arange(i, min(i + per_batch, n)) for i in range(0, n, per_batch)]
    if verbose:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="perturbation", unit="batch")
    for samples in batches:
        rows = np.repeat(samples, n_repeats)
        order_idx = _orders(scores[rows], order, rng)
        w_rows = weights[rows]
        state = g.start(rows, rng)
        b = len(rows)
        per_call = max(1, min(n_steps + 1, batch_size // b))  # steps per model call
        values, buf, filled = [], None, 0
        for k in range(n_steps + 1):
            if k:
                state = g.step(state, rows, order_idx[:, k - 1], rng)
            inp = g.model_input(state)
            if buf is None:
                buf = np.empty((per_call * b,) + inp.shape[1:], dtype=np.float64)
            buf[filled * b : (filled + 1) * b] = inp  # the state changes in place: keep a copy
            filled += 1
            if filled == per_call or k == n_steps:
                w = w_rows if filled == 1 else np.tile(w_rows, (filled, 1))
                values.append(scorer(buf[: filled * b], w).reshape(filled, b))
                filled = 0
        f = np.concatenate(values)  # (n_steps + 1, rows)
        curves[samples] = f.reshape(n_steps + 1, len(samples), n_repeats).mean(axis=2).T
    return curves


def _aopc(curves, cumulative):
    drops = curves[:, :1] - curves  # f(x^(0)) - f(x^(k))
    if cumulative:
        return (np.cumsum(drops, axis=1) / np.arange(1, curves.shape[1] + 1)).mean(axis=0)
    return float(drops.mean())


def aopc_score(
    model_or_fn,
    X,
    relevance,
    *,
    target="predicted",
    y=None,
    region_size=1,
    n_steps=None,
    order="morf",
    perturbation="uniform",
    n_repeats=1,
    value_range=None,
    image_shape=None,
    channel_axis=None,
    relative_to=None,
    cumulative=False,
    random_state=None,
    batch_size=1024,
    verbose=False,
):
    """Area over the perturbation curve, Eq. (3.7).

    ``AOPC = 1/(L+1) < sum_{k=0..L} f(x^(0)) - f(x^(k)) >`` averaged over samples. For
    ``order="morf"`` higher is better; it is the quantity Fig. 3.5 compares across heatmap methods.

    Parameters
    ----------
    model_or_fn, X, relevance, target, y, region_size, n_steps, order, perturbation, n_repeats, \
value_range, image_shape, channel_axis, random_state, batch_size, verbose
        As in :func:`perturbation_curve`.
    relative_to : {None, "random"}, default=None
        "random" subtracts the AOPC of random orderings under the same perturbation (Fig. 3.5).
    cumulative : bool, default=False
        Return ``AOPC(L')`` for every ``L' = 0..L`` (the x axis of Fig. 3.5) instead of one number.

    Returns
    -------
    aopc : float, or ndarray of shape (n_steps + 1,) if ``cumulative``

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import aopc_score
    >>> w = np.array([1.0, 2.0, 3.0, 4.0])
    >>> X = np.ones((1, 4))
    >>> aopc_score(lambda X: X @ w, X, X * w, perturbation="flip", value_range=(-1, 1))
    12.0
    """
    if relative_to not in (None, "random"):
        raise ValueError(f"relative_to must be None or 'random', got {relative_to!r}")
    grid_args = dict(region_size=region_size, image_shape=image_shape, channel_axis=channel_axis)
    X, g, scores, n_steps = _check_common(
        X, relevance, n_steps, order, n_repeats, value_range, batch_size, perturbation, grid_args
    )
    scorer = _Scorer(model_or_fn, batch_size)
    rng = check_random_state(random_state)
    weights, _, _ = scorer.target_weights(g.initial_input, len(X), target, y)
    reps = 1 if (not g.random and order != "random") else n_repeats
    result = _aopc(
        _run_curves(scorer, g, scores, weights, n_steps, order, reps, rng, batch_size, verbose),
        cumulative,
    )
    if relative_to == "random":
        base = _run_curves(
            scorer, g, scores, weights, n_steps, "random", n_repeats, rng, batch_size, verbose
        )
        result = result - _aopc(base, cumulative)
    return result


class _AOPCScorer:
    """Scorer ``(estimator, X, y) -> AOPC`` for an explainer with ``explain`` (see make_aopc_scorer)."""

    def __init__(self, target, kwargs):
        self.target, self.kwargs = target, kwargs

    def __call__(self, estimator, X, y=None):
        if not _is_lrp(estimator):
            raise TypeError(
                f"the AOPC scorer evaluates an sklrp.LRPTransformer (it needs explain()), got "
                f"{type(estimator).__name__}"
            )
        target = estimator.target if self.target is None else self.target
        uses_y = isinstance(target, str) and target == "true"
        E = estimator.explain(X, target=target, y=y if uses_y else None)
        return aopc_score(estimator, X, E.relevance, target=E.target, **self.kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"make_aopc_scorer(target={self.target!r}, {args})"


def make_aopc_scorer(
    *,
    target=None,
    region_size=1,
    n_steps=None,
    order="morf",
    perturbation="uniform",
    n_repeats=1,
    value_range=None,
    image_shape=None,
    channel_axis=None,
    relative_to=None,
    random_state=0,
    batch_size=1024,
):
    """AOPC (Eq. (3.7)) as a scikit-learn scorer for :class:`~sklrp.LRPTransformer`.

    The scorer computes the heatmaps of the validation samples with the (fitted) transformer it
    is given and perturbs against the score that transformer explains; higher is better. Use it
    to choose rule parameters, e.g. ``GridSearchCV(LRPTransformer(FrozenEstimator(model)),
    {"epsilon": [...]}, scoring=make_aopc_scorer(...), cv=[(train, test)])``; with a
    non-frozen estimator each split refits the model.

    Parameters
    ----------
    target : "predicted", "true", label or None, default=None
        Explained class; None uses the transformer's own ``target``; "true" uses the ``y`` the
        scorer receives.
    region_size, n_steps, order, perturbation, n_repeats, value_range, image_shape, channel_axis, \
relative_to, batch_size
        As in :func:`aopc_score`.
    random_state : int, default=0
        Fixed so that all candidates are scored under the same random perturbations.

    Returns
    -------
    scorer : callable ``(estimator, X, y=None) -> float``

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.decomposition import PCA
    >>> import sklrp
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(PCA(3), LogisticRegression()).fit(X, y)
    >>> search = GridSearchCV(sklrp.LRPTransformer(FrozenEstimator(model)), {"epsilon": [0.01, 1.0]},
    ...                       scoring=sklrp.make_aopc_scorer(perturbation="mean"),
    ...                       cv=[(np.arange(0, 150, 2), np.arange(1, 150, 2))]).fit(X, y)
    >>> search.best_params_["epsilon"] in (0.01, 1.0)
    True
    """
    kwargs = dict(
        region_size=region_size,
        n_steps=n_steps,
        order=order,
        perturbation=perturbation,
        n_repeats=n_repeats,
        value_range=value_range,
        image_shape=image_shape,
        channel_axis=channel_axis,
        relative_to=relative_to,
        random_state=random_state,
        batch_size=batch_size,
    )
    if relative_to not in (None, "random"):
        raise ValueError(f"relative_to must be None or 'random', got {relative_to!r}")
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    _make_perturbation(perturbation)
    _region_size(region_size)
    return _AOPCScorer(target, kwargs)


# -- sensitivity analysis (Eq. (3.1)) -------------------------------------------------------
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
            with torch.enable_grad(), _EvalMode(scorer.module):
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
    X = _check_array(X, "X")
    if method not in ("auto", "autograd", "numerical"):
        raise ValueError(f"method must be 'auto', 'autograd' or 'numerical', got {method!r}")
    if norm not in (1, 2, np.inf):
        raise ValueError(f"norm must be 1, 2 or numpy.inf, got {norm!r}")
    grid = RegionGrid(X.shape[1:], 1, image_shape=image_shape, channel_axis=channel_axis)
    scorer = _Scorer(model_or_fn, batch_size)
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
    if grid.channel_axis is None:
        return np.abs(grads)
    img = grads.reshape((len(X),) + grid.layout)
    h = np.linalg.norm(img, ord=norm, axis=1 + grid.channel_axis)
    return h if X.ndim > 2 else h.reshape(len(X), -1)


# -- context ratio (Eq. (4.11)) ------------------------------------------------------------
def _box_mask(boxes, n, shape):
    h, w = shape
    if len(boxes) != n:
        raise ValueError(
            f"boxes must give one box (or list of boxes) per image: got {len(boxes)} for {n} images"
        )
    masks = np.zeros((n, h, w), dtype=bool)
    for i, b in enumerate(boxes):
        b = np.asarray(b, dtype=float).reshape(-1, 4) if np.size(b) else np.empty((0, 4))
        for x0, y0, x1, y1 in b:
            if not (x0 < x1 and y0 < y1):
                raise ValueError(
                    f"box {(x0, y0, x1, y1)} of image {i} is empty: need x_min < x_max and y_min < y_max"
                )
            r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1))
            c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1))
            masks[i, r0:r1, c0:c1] = True
    return masks


def context_ratio(relevance, mask=None, *, boxes=None, channel_axis=None):
    """Relevance outside vs. inside an object, ``mu`` of Eq. (4.11).

    ``mu = mean_{q in P_out} R_q / mean_{p in P_in} R_p``: a high ratio means the classifier uses
    a lot of context. Colour relevance is summed over channels first.

    Parameters
    ----------
    relevance : ndarray of shape (n, H, W) or (n, H, W, C)
        Pixel relevance (channel axis as ``channel_axis``, last by default for 4-D input).
    mask : array-like of bool, shape (H, W) or (n, H, W), default=None
        True inside the object (``P_in``).
    boxes : array-like of shape (n, 4), or a list of (k_i, 4) arrays, default=None
        Bounding boxes ``(x_min, y_min, x_max, y_max)`` in pixels, half-open like slices
        (``x`` is the column); several boxes of one image form their union. Give either
        ``mask`` or ``boxes``.
    channel_axis : int, default=None
        Channel axis of 4-D relevance (None: last).

    Returns
    -------
    mu : ndarray of shape (n,)
        ``inf``/``nan`` where the mean inside relevance is zero.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import context_ratio
    >>> R = np.ones((1, 4, 4)); R[0, 1:3, 1:3] = 4.0
    >>> context_ratio(R, boxes=[(1, 1, 3, 3)])
    array([0.25])
    """
    R = _check_array(relevance, "relevance", min_ndim=3)
    if R.ndim == 4:
        R = R.sum(axis=-1 if channel_axis is None else channel_axis)
    elif R.ndim != 3:
        raise ValueError(
            f"relevance must have shape (n, H, W) or (n, H, W, C), got {relevance.shape}"
        )
    n, h, w = R.shape
    if (mask is None) == (boxes is None):
        raise ValueError("give exactly one of mask and boxes")
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise ValueError("mask must be boolean (True inside the object)")
            m = m.astype(bool)
        if m.shape == (h, w):
            m = np.broadcast_to(m, (n, h, w))
        elif m.shape != (n, h, w):
            raise ValueError(
                f"mask must have shape (H, W) = {(h, w)} or (n, H, W) = {(n, h, w)}, got {m.shape}"
            )
    else:
        m = _box_mask(boxes, n, (h, w))
    n_in = m.sum(axis=(1, 2))
    n_out = h * w - n_in
    if np.any(n_in == 0) or np.any(n_out == 0):
        bad = int(np.flatnonzero((n_in == 0) | (n_out == 0))[0])
        raise ValueError(
            f"image {bad}: the object covers {int(n_in[bad])} of {h * w} pixels; Eq. (4.11) needs "
            "pixels both inside and outside"
        )
    inside = np.where(m, R, 0.0).sum(axis=(1, 2)) / n_in
    outside = np.where(m, 0.0, R).sum(axis=(1, 2)) / n_out
    with np.errstate(divide="ignore", invalid="ignore"):
        return outside / inside

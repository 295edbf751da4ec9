"""Region perturbations: the function ``g(x^(k-1), r_k)`` of Eq. (3.6).

Perturbations are objects with a small protocol (:class:`Perturbation`): ``start`` builds
``x^(0)``, ``step`` applies ``g`` to a batch, ``model_input`` turns the state into what the
scored model consumes. The built-ins act on the pixels of a region grid; a subclass may keep
any state -- e.g. the Bag-of-Words descriptor replacement of Appendix C.2 keeps the
unnormalised Fisher vector (Eq. (C.1)), replaces one descriptor per step (Eq. (C.2)) and is
scored by a function of that intermediate representation.

Value ranges. Uniform noise and flipping need the input domain. The thesis draws pixel
noise from the image value range (Section 3.4.1); for tabular data one global range is
wrong: on standardised features (range about -3..14 over all columns) every ordering,
random included, destroys the sample, and AOPC saturates. So the default ``value_range``
is per feature (the minimum and maximum of each column of ``X``) for tabular samples and
global for images; both can be asked for explicitly.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.utils import check_random_state

__all__ = [
    "Perturbation",
    "UniformPerturbation",
    "FlipPerturbation",
    "MeanPerturbation",
    "BlurPerturbation",
    "FunctionPerturbation",
    "make_perturbation",
    "resolve_value_range",
]

VALUE_RANGES = ("auto", "per-feature", "global")


def resolve_value_range(value_range, X, grid):
    """The input domain ``(low, high)``: floats, or arrays of shape ``(n_features,)`` (flattened samples).

    Parameters
    ----------
    value_range : None, "auto", "per-feature", "global" or (float, float)
        None and "auto" mean "per-feature" for tabular samples and "global" for images.
    X : ndarray of shape (n_samples, n_features)
        The (flattened) samples whose range is taken.
    grid : RegionGrid
    """
    if value_range is None:
        value_range = "auto"
    if isinstance(value_range, str):
        if value_range not in VALUE_RANGES:
            raise ValueError(f"value_range must be one of {VALUE_RANGES}, a pair (low, high) or None, "
                             f"got {value_range!r}")
        if value_range == "auto":
            value_range = "per-feature" if len(grid.layout) == 1 else "global"
        if value_range == "global":
            return float(X.min()), float(X.max())
        return X.min(axis=0), X.max(axis=0)
    try:
        pair = tuple(float(v) for v in value_range)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(np.isfinite(pair)) or pair[0] > pair[1]:
        raise ValueError(
            f"value_range must be a finite pair (low, high) with low <= high, 'per-feature', 'global' or None, "
            f"got {value_range!r}"
        )
    return pair


class Perturbation:
    """Base class of the region perturbation ``g(x^(k-1), r_k)`` of Eq. (3.6).

    The curve engine calls, for a batch of rows (``rows`` are sample indices into ``X``; a
    sample appears ``n_repeats`` times):

    1. ``bind(X, grid, value_range)`` once per curve (``X`` flattened to ``(n, n_features)``),
       then ``set_order(order)`` before each run of orderings;
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
    order = "morf"

    def bind(self, X, grid, value_range):
        self.X, self.grid, self.value_range = X, grid, value_range
        return self

    def set_order(self, order):
        """The ordering about to be run (``"morf"``, ``"lerf"`` or ``"random"``), set before :meth:`start`.

        Perturbations whose regions depend on the relevance (e.g. groups of the most relevant
        descriptors) use it to form the random baseline's regions at random too.
        """
        self.order = order
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

    Every element (and channel) is drawn independently, as in the thesis' experiments, from
    its own feature's range when the range is per feature.

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
        if np.ndim(lo):  # per-feature ranges
            lo, hi = lo[idx], hi[idx]
        return rng.uniform(lo, hi, size=idx.shape)


class FlipPerturbation(_Replacement):
    """Pixel flipping (Fig. 3.4): ``x -> low + high - x``, a sign flip for ``[-1, 1]`` inputs.

    With per-feature ranges each feature is mirrored inside its own range.

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


def make_perturbation(perturbation):
    """A :class:`Perturbation` from a name, an instance or a function ``g(x, mask, rng)``."""
    if isinstance(perturbation, Perturbation):
        return perturbation
    if isinstance(perturbation, str):
        if perturbation == "auto":
            perturbation = "uniform"  # without a sample layout at hand: the image default
        if perturbation not in _PERTURBATIONS:
            raise ValueError(
                f"perturbation must be 'auto', one of {tuple(_PERTURBATIONS)}, a Perturbation or a callable "
                f"g(x, mask, rng), got {perturbation!r}"
            )
        return _PERTURBATIONS[perturbation]()
    if callable(perturbation):
        return FunctionPerturbation(perturbation)
    raise TypeError(
        f"perturbation must be a name, a Perturbation or a callable, got {type(perturbation).__name__}"
    )



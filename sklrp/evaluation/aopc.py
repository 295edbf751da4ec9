"""Region perturbation and the area over the perturbation curve (thesis Chapter 3).

A heatmap orders the regions of an input (Eqs. (3.4)-(3.5)); perturbing the regions in that
order (Eq. (3.6)) and recording the explained score ``f(x^(k))`` gives the *perturbation
curve*. A good heatmap ranks the regions that matter first, so under *most relevant first*
(MoRF) the score drops fast and the area over the curve, AOPC (Eq. (3.7)), is large.
:func:`aopc_from_curves` is the one implementation of Eq. (3.7); everything that reports an
AOPC (scores, scorers, plots, the audit) calls it.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state

from .. import _blockwise
from .perturbations import make_perturbation, resolve_value_range
from .regions import RegionGrid, check_samples, region_size_pair
from .response import ModelResponse, is_explainer

__all__ = ["perturbation_curve", "aopc_score", "aopc_from_curves", "make_aopc_scorer", "ORDERS"]

ORDERS = ("morf", "lerf", "random")


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
    X = check_samples(X, "X")
    relevance = check_samples(relevance, "relevance")
    if relevance.shape[0] != X.shape[0]:
        raise ValueError(f"relevance has {relevance.shape[0]} samples but X has {X.shape[0]}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not isinstance(n_repeats, numbers.Integral) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    grid = RegionGrid(X.shape[1:], **grid_args)
    flat = X.reshape(len(X), -1)
    if isinstance(perturbation, str) and perturbation == "auto":
        # tabular: replace a feature by its mean (uniform noise over a feature's range hardly beats a
        # random ordering there); images: uniform noise, as in the thesis (Section 3.4.1)
        perturbation = "mean" if len(grid.layout) == 1 else "uniform"
    g = make_perturbation(perturbation).bind(flat, grid, resolve_value_range(value_range, flat, grid))
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
    perturbation="auto",
    n_repeats=1,
    value_range=None,
    image_shape=None,
    channel_axis=None,
    random_state=None,
    batch_size=1024,
    verbose=False,
    return_prediction_changes=False,
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
        ``(n, H, W, C)``, or flattened images ``(n, H*W[*C])`` with ``image_shape``. A Dask array
        (or numeric Dask DataFrame) is evaluated block by block into a lazy Dask result (:mod:`sklrp.dask`).
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
    perturbation : {"auto", "uniform", "flip", "mean", "blur"}, Perturbation or callable, default="auto"
        ``g`` of Eq. (3.6): uniform noise in ``value_range`` (Section 3.4.1), pixel flipping
        ``low + high - x`` (Fig. 3.4), the data-set mean, a blurred copy, a
        :class:`Perturbation`, or a function ``g(x_prev, mask, rng) -> x_new``. "auto" is
        "mean" for tabular samples and "uniform" for images: on standardised
        ``load_breast_cancer`` with an RBF SVC, LRP orderings score about twice the AOPC of
        random orderings under mean replacement, but only 7-10 % more under uniform noise
        over each feature's range (the documented benchmark in the user guide).
    n_repeats : int, default=1
        Repetitions averaged (Section 3.5.1 uses 10). Skipped when both ``g`` and the order
        are deterministic.
    value_range : None, "per-feature", "global" or (float, float), default=None
        Input domain for "uniform" and "flip": the minimum and maximum of each feature of ``X``
        ("per-feature"), of all of ``X`` ("global"), or a given pair. None is "per-feature" for
        tabular samples and "global" for images: one range over differently scaled features
        saturates AOPC on tabular data (random orderings score like informed ones).
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
    return_prediction_changes : bool, default=False
        Also return, per sample and step, the share of repeats whose *predicted* class differs
        from the unperturbed prediction: the histogram of Fig. 4.3, whose last step averaged
        over samples is the thesis' ``V`` ("ratio of perturbed samples being predicted
        differently"). Classifiers only.

    Returns
    -------
    curves : ndarray of shape (n_samples, n_steps + 1)
        ``f(x^(k))`` for ``k = 0..L`` per sample, averaged over repeats.
    changes : ndarray of shape (n_samples, n_steps + 1)
        Only with ``return_prediction_changes``; ``changes[:, -1].mean()`` is ``V``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import perturbation_curve
    >>> w = np.array([1.0, 2.0, 3.0, 4.0])
    >>> X = np.ones((1, 4))
    >>> perturbation_curve(lambda X: X @ w, X, X * w, perturbation="flip", value_range=(-1, 1))
    array([[ 10.,   2.,  -4.,  -8., -10.]])
    """
    if _blockwise.is_lazy(X) or _blockwise.is_lazy(relevance):  # Dask: block by block (sklrp.dask)
        return _blockwise.handler("perturbation_curve")(**locals())
    grid_args = dict(region_size=region_size, image_shape=image_shape, channel_axis=channel_axis)
    X, g, scores, n_steps = _check_common(
        X, relevance, n_steps, order, n_repeats, value_range, batch_size, perturbation, grid_args
    )
    scorer = ModelResponse(model_or_fn, batch_size)
    rng = check_random_state(random_state)
    weights, _, _ = scorer.target_weights(g.initial_input, len(X), target, y)
    if not g.random and order != "random":
        n_repeats = 1
    if return_prediction_changes and not scorer.is_classifier(weights.shape[1]):
        raise ValueError("return_prediction_changes needs a classifier: a regressor's or single-score "
                         "function's prediction does not change class")
    return _run_curves(
        scorer, g, scores, weights, n_steps, order, n_repeats, rng, batch_size, verbose,
        track_changes=return_prediction_changes,
    )


def _run_curves(scorer, g, scores, weights, n_steps, order, n_repeats, rng, batch_size, verbose,
                track_changes=False):
    """Curves ``(n, n_steps + 1)``; with ``track_changes`` also the share of repeats whose predicted
    label differs from the unperturbed one at each step (``(n, n_steps + 1)``)."""
    n = scores.shape[0]
    curves = np.empty((n, n_steps + 1))
    changes = np.empty((n, n_steps + 1)) if track_changes else None
    g.set_order(order)
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
        values, labels, buf, filled = [], [], None, 0
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
                cols = scorer.columns(buf[: filled * b])
                values.append((cols * w).sum(axis=1).reshape(filled, b))
                if track_changes:
                    labels.append(np.asarray(scorer.predicted(cols)).reshape(filled, b))
                filled = 0
        f = np.concatenate(values)  # (n_steps + 1, rows)
        curves[samples] = f.reshape(n_steps + 1, len(samples), n_repeats).mean(axis=2).T
        if track_changes:
            lab = np.concatenate(labels)
            changed = (lab != lab[:1]).astype(float)
            changes[samples] = changed.reshape(n_steps + 1, len(samples), n_repeats).mean(axis=2).T
    return curves if not track_changes else (curves, changes)


def aopc_from_curves(curves, *, cumulative=False):
    """Eq. (3.7): ``AOPC = 1/(L+1) < sum_{k=0..L} f(x^(0)) - f(x^(k)) >`` from perturbation curves.

    Parameters
    ----------
    curves : ndarray of shape (n_samples, L + 1) or (L + 1,)
        ``f(x^(k))`` per sample, as :func:`perturbation_curve` returns (or one mean curve).
    cumulative : bool, default=False
        Return ``AOPC(L')`` for every ``L' = 0..L`` (the x axis of Fig. 3.5) instead of one number.

    Returns
    -------
    float, or ndarray of shape (L + 1,) if ``cumulative``

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import aopc_from_curves
    >>> aopc_from_curves(np.array([[10.0, 2.0, -4.0, -8.0, -10.0]]))
    12.0
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 1:
        curves = curves[None, :]
    if curves.ndim != 2 or curves.shape[1] < 1:
        raise ValueError(f"curves must have shape (n_samples, n_steps + 1), got {np.shape(curves)}")
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
    perturbation="auto",
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
        A lazy 0-d (or 1-d) Dask array for Dask input (:func:`sklrp.dask.aopc_score`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import aopc_score
    >>> w = np.array([1.0, 2.0, 3.0, 4.0])
    >>> X = np.ones((1, 4))
    >>> aopc_score(lambda X: X @ w, X, X * w, perturbation="flip", value_range=(-1, 1))
    12.0
    """
    if _blockwise.is_lazy(X) or _blockwise.is_lazy(relevance):  # Dask: block by block (sklrp.dask)
        return _blockwise.handler("aopc_score")(**locals())
    if relative_to not in (None, "random"):
        raise ValueError(f"relative_to must be None or 'random', got {relative_to!r}")
    grid_args = dict(region_size=region_size, image_shape=image_shape, channel_axis=channel_axis)
    X, g, scores, n_steps = _check_common(
        X, relevance, n_steps, order, n_repeats, value_range, batch_size, perturbation, grid_args
    )
    scorer = ModelResponse(model_or_fn, batch_size)
    rng = check_random_state(random_state)
    weights, _, _ = scorer.target_weights(g.initial_input, len(X), target, y)
    reps = 1 if (not g.random and order != "random") else n_repeats
    result = aopc_from_curves(
        _run_curves(scorer, g, scores, weights, n_steps, order, reps, rng, batch_size, verbose),
        cumulative=cumulative,
    )
    if relative_to == "random":
        base = _run_curves(
            scorer, g, scores, weights, n_steps, "random", n_repeats, rng, batch_size, verbose
        )
        result = result - aopc_from_curves(base, cumulative=cumulative)
    return result


class _AOPCScorer:
    """Scorer ``(estimator, X, y) -> AOPC`` for an explainer with ``explain`` (see make_aopc_scorer)."""

    def __init__(self, target, kwargs):
        self.target, self.kwargs = target, kwargs

    def __call__(self, estimator, X, y=None):
        if not is_explainer(estimator):
            raise TypeError(
                f"the AOPC scorer evaluates an sklrp.LRPTransformer (it needs explain()), got "
                f"{type(estimator).__name__}"
            )
        target = estimator.target if self.target is None else self.target
        uses_y = isinstance(target, str) and target == "true"
        E = estimator.explain(X, target=target, y=y if uses_y else None)
        # a scorer returns a number: on Dask input this computes the lazy AOPC (and the explanation)
        return float(aopc_score(estimator, X, E.relevance, target=E.target, **self.kwargs))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"make_aopc_scorer(target={self.target!r}, {args})"


def make_aopc_scorer(
    *,
    target=None,
    region_size=1,
    n_steps=None,
    order="morf",
    perturbation="auto",
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
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    make_perturbation(perturbation)
    region_size_pair(region_size)
    return _AOPCScorer(target, kwargs)



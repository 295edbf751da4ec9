"""How much a classifier relies on context: the outside/inside relevance ratio of Eq. (4.11)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .regions import check_samples

__all__ = ["context_ratio"]


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


def context_ratio(relevance, mask=None, *, boxes=None, channel_axis=None, positive_only=True):
    """Relevance outside vs. inside an object, ``mu`` of Eq. (4.11).

    ``mu = mean_{q in P_out} R_q / mean_{p in P_in} R_p``: a high ratio means the classifier uses
    a lot of context. Colour relevance is summed over channels first. As the thesis defines it
    ("the distribution of positive values in a relevance map", Section 4.4) only positive
    relevance counts by default: with mixed signs the plain ratio can be negative or
    arbitrarily large when inside relevance nearly cancels, and then says nothing about context.

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
    positive_only : bool, default=True
        Use ``max(R, 0)`` (the thesis' definition); False uses the signed relevance.

    Returns
    -------
    mu : ndarray of shape (n,)
        ``inf`` where the mean inside relevance is zero but not outside, ``nan`` where both are
        zero (a ``RuntimeWarning`` says how many).

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.evaluation import context_ratio
    >>> R = np.ones((1, 4, 4)); R[0, 1:3, 1:3] = 4.0
    >>> context_ratio(R, boxes=[(1, 1, 3, 3)])
    array([0.25])
    """
    R = check_samples(relevance, "relevance", min_ndim=3)
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
    if positive_only:
        R = np.maximum(R, 0.0)
    inside = np.where(m, R, 0.0).sum(axis=(1, 2)) / n_in
    outside = np.where(m, 0.0, R).sum(axis=(1, 2)) / n_out
    zero = inside == 0
    if zero.any():
        what = "positive relevance" if positive_only else "relevance"
        warnings.warn(f"context_ratio: {int(zero.sum())} of {n} maps have no {what} inside the object; their "
                      "ratio is inf (relevance only outside) or nan (none at all)", RuntimeWarning, stacklevel=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return outside / inside

"""Synthetic image data sets that need no network.

Generators return plain numpy arrays, follow scikit-learn's ``make_*`` conventions
(``n_samples``, ``shuffle``, ``random_state``) and are deterministic for a fixed seed.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_clever_hans"]

# A 5x7 copyright-like tag (a "C" in a frame): dense enough to be picked up by a classifier,
# small enough (about 3 % of a 32 x 32 image) to go unnoticed when looking at the images.
_TAG = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 1, 0, 1],
        [1, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 0, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ],
    dtype=float,
)


def _shape_mask(kind, rr, cc, cy, cx, radius):
    """Boolean mask of a filled shape centred at (cy, cx) on a pixel grid."""
    dy, dx = rr - cy, cc - cx
    if kind == 0:  # disc
        return dy**2 + dx**2 <= radius**2
    if kind == 1:  # square
        return (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    if kind == 2:  # plus sign
        w = max(radius / 3.0, 1.0)
        return ((np.abs(dy) <= w) & (np.abs(dx) <= radius)) | (
            (np.abs(dx) <= w) & (np.abs(dy) <= radius)
        )
    if kind == 3:  # horizontal bar
        return (np.abs(dy) <= radius / 2.5) & (np.abs(dx) <= radius * 1.2)
    if kind == 4:  # vertical bar
        return (np.abs(dx) <= radius / 2.5) & (np.abs(dy) <= radius * 1.2)
    # further classes: rings of growing thickness
    r2 = dy**2 + dx**2
    inner = radius * (0.7 - 0.1 * ((kind - 5) % 4))
    return (r2 <= radius**2) & (r2 >= inner**2)


def make_clever_hans(
    n_samples=600,
    *,
    n_classes=3,
    image_shape=(32, 32),
    watermark_class=0,
    watermark_fraction=0.25,
    watermark_position=None,
    watermark_intensity=1.0,
    noise=0.1,
    jitter=4,
    shuffle=True,
    random_state=None,
):
    """Images whose "watermark class" partly carries a small tag: a Clever-Hans data set.

    Reproduces, in miniature, the copyright tag that marks about a fifth of the Pascal VOC
    "horse" images (thesis Section 6.2): each class shows one shape (disc, square, plus, bars,
    rings ...) of random size and intensity near the image centre, on a noisy background, and
    a fraction ``watermark_fraction`` of the ``watermark_class`` images additionally carries a
    5 x 7 tag at a fixed place. A classifier can use the tag as a shortcut; SpRAy on its
    relevance maps should single out the tagged images, SpRAy on the raw images should not.

    Parameters
    ----------
    n_samples : int, default=600
        Total number of images, split as evenly as possible over the classes.
    n_classes : int, default=3
        Number of classes (>= 2).
    image_shape : tuple of int (H, W), default=(32, 32)
        Image size; at least 8 x 10 so the tag fits.
    watermark_class : int, default=0
        Class whose images may carry the tag.
    watermark_fraction : float in [0, 1], default=0.25
        Fraction of ``watermark_class`` images that carry the tag (rounded to the nearest
        count).
    watermark_position : tuple of int (row, col) or None, default=None
        Top-left pixel of the tag; ``None`` puts it one pixel from the bottom-left corner,
        where a copyright line usually sits.
    watermark_intensity : float, default=1.0
        Pixel value of the tag strokes (added to the image).
    noise : float, default=0.1
        Standard deviation of the Gaussian pixel noise.
    jitter : int, default=4
        Maximal shift (pixels) of the shape centre from the image centre.
    shuffle : bool, default=True
        Shuffle the samples; otherwise they are ordered by class.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, H, W)
        Grey-value images (float64).
    y : ndarray of shape (n_samples,)
        Class labels ``0 .. n_classes - 1``.
    watermark : ndarray of shape (n_samples,), dtype bool
        True for the images that carry the tag (the planted ground truth).

    Examples
    --------
    >>> from sklrp.datasets import make_clever_hans
    >>> X, y, watermark = make_clever_hans(n_samples=90, random_state=0)
    >>> X.shape, y.shape, watermark.shape
    ((90, 32, 32), (90,), (90,))
    >>> int(watermark.sum()), bool(set(y[watermark]) == {0})
    (8, True)
    """
    if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
    if not isinstance(n_classes, numbers.Integral) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}.")
    if not 0 <= watermark_class < n_classes:
        raise ValueError(f"watermark_class must be in [0, {n_classes}), got {watermark_class!r}.")
    if not 0.0 <= watermark_fraction <= 1.0:
        raise ValueError(f"watermark_fraction must be in [0, 1], got {watermark_fraction!r}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}.")
    H, W = (int(s) for s in image_shape)
    th, tw = _TAG.shape
    if H < th + 3 or W < tw + 3:
        raise ValueError(f"image_shape must be at least {(th + 3, tw + 3)}, got {(H, W)}.")
    if watermark_position is None:
        watermark_position = (H - th - 1, 1)
    r0, c0 = (int(v) for v in watermark_position)
    if not (0 <= r0 <= H - th and 0 <= c0 <= W - tw):
        raise ValueError(
            f"watermark_position {(r0, c0)} puts the {th}x{tw} tag outside a {H}x{W} image."
        )
    rng = check_random_state(random_state)

    y = np.arange(n_samples) % n_classes
    y.sort()
    rr, cc = np.mgrid[0:H, 0:W].astype(float)
    radius_lo, radius_hi = 0.15 * min(H, W), 0.28 * min(H, W)
    X = noise * rng.standard_normal((n_samples, H, W))
    for i in range(n_samples):
        cy = (H - 1) / 2 + rng.uniform(-jitter, jitter)
        cx = (W - 1) / 2 + rng.uniform(-jitter, jitter)
        radius = rng.uniform(radius_lo, radius_hi)
        X[i] += rng.uniform(0.6, 1.0) * _shape_mask(y[i], rr, cc, cy, cx, radius)

    candidates = np.flatnonzero(y == watermark_class)
    n_tag = int(round(watermark_fraction * candidates.size))
    watermark = np.zeros(n_samples, dtype=bool)
    watermark[rng.choice(candidates, size=n_tag, replace=False)] = True
    X[watermark, r0 : r0 + th, c0 : c0 + tw] += watermark_intensity * _TAG

    if shuffle:
        perm = rng.permutation(n_samples)
        X, y, watermark = X[perm], y[perm], watermark[perm]
    return X, y, watermark

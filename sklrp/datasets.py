"""Synthetic image data sets that need no network.

Generators return plain numpy arrays, follow scikit-learn's ``make_*`` conventions
(``n_samples``, ``shuffle``, ``random_state``) and are deterministic for a fixed seed.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_clever_hans", "make_shapes", "plant_shortcut", "shortcut_mask"]

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


def _regular_polygon_mask(rr, cc, cy, cx, radius, n_vertices, angle):
    """Filled regular polygon: inside all edge half-planes (apothem = r cos(pi/n))."""
    dy, dx = rr - cy, cc - cx
    inside = np.ones(rr.shape, dtype=bool)
    apothem = radius * np.cos(np.pi / n_vertices)
    for k in range(n_vertices):
        phi = angle + (2 * k + 1) * np.pi / n_vertices  # outward normal of edge k
        inside &= dx * np.cos(phi) + dy * np.sin(phi) <= apothem
    return inside


def _round_mask(rr, cc, cy, cx, radius, p):
    """Filled l_p ball ``|dx/r|^p + |dy/r|^p <= 1`` (p >= 2: round, corner-free outline)."""
    return np.abs((cc - cx) / radius) ** p + np.abs((rr - cy) / radius) ** p <= 1.0


def make_shapes(n_samples=200, *, image_size=102, radius=(9.0, 16.0), n_round=(1, 2), noise=0.02,
                positive_fraction=0.5, border_polygons=0.5, random_state=None):
    """Grey images with regular polygons and round shapes (the toy task of Section 2.4.3).

    Each image (a tile of a large scene) shows ``n_round`` round shapes (filled l_p balls,
    p in [2, 2.5]) and, for positive images, one regular polygon with 4 to 7 vertices whose
    centre lies inside the image. Negative images may show a polygon cut by the border
    whose centre lies outside (with probability ``border_polygons``). Labels follow the
    thesis: ``y = +1`` if the centre of a
    polygon lies in the image, else ``-1``. Shapes do not overlap; each is darker or
    brighter than the mid-grey background; Gaussian pixel noise is added.

    Parameters
    ----------
    n_samples : int, default=200
    image_size : int, default=102
        Side of the square images (the thesis' tiles are 102 x 102; a larger value gives
        a "large image" to explain tile-wise, Fig. 2.13).
    radius : (float, float), default=(9.0, 16.0)
        Range of the shapes' circumradius in pixels.
    n_round : (int, int), default=(1, 2)
        Range (inclusive) of the number of round shapes per image.
    noise : float, default=0.02
        Standard deviation of the pixel noise.
    positive_fraction : float, default=0.5
        Fraction of images with a polygon centre inside.
    border_polygons : float, default=0.5
        Probability that a negative image shows a polygon cut by the border (centre
        outside), as tiles cropped from a large scene do.
    random_state : int, RandomState or None, default=None

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size)
        Intensities in [0, 1].
    y : ndarray of shape (n_samples,)
        +1 or -1.
    masks : ndarray of shape (n_samples, image_size, image_size), dtype int8
        0 background, 1 polygon, 2 round shape.

    Examples
    --------
    >>> from sklrp.datasets import make_shapes
    >>> X, y, masks = make_shapes(4, image_size=48, random_state=0)
    >>> X.shape, sorted(set(y.tolist())), int(masks.max())
    ((4, 48, 48), [-1, 1], 2)
    """
    if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"make_shapes: n_samples must be a positive integer, got {n_samples!r}")
    if not isinstance(image_size, numbers.Integral) or image_size < 16:
        raise ValueError(f"make_shapes: image_size must be an integer >= 16, got {image_size!r}")
    r_lo, r_hi = (float(v) for v in radius)
    if not 0 < r_lo <= r_hi or 2 * r_hi >= image_size:
        raise ValueError(f"make_shapes: radius must satisfy 0 < low <= high < image_size / 2, got {radius!r}")
    k_lo, k_hi = (int(v) for v in n_round)
    if not 0 <= k_lo <= k_hi:
        raise ValueError(f"make_shapes: n_round must be 0 <= low <= high, got {n_round!r}")
    if not (0 <= positive_fraction <= 1 and 0 <= border_polygons <= 1) or not np.isfinite(noise) or noise < 0:
        raise ValueError("make_shapes: positive_fraction and border_polygons must be in [0, 1] and noise >= 0")
    rng = check_random_state(random_state)
    s = image_size
    rr, cc = np.mgrid[0:s, 0:s].astype(float)
    X = np.empty((n_samples, s, s))
    masks = np.zeros((n_samples, s, s), dtype=np.int8)
    y = np.where(rng.rand(n_samples) < positive_fraction, 1, -1)
    y[: min(2, n_samples)] = [1, -1][: min(2, n_samples)]  # both classes present
    for i in range(n_samples):
        img = np.full((s, s), 0.5)
        placed = []  # (cy, cx, r) of shapes drawn so far

        def free(cy, cx, r):
            return all(np.hypot(cy - py, cx - px) > r + pr + 2 for py, px, pr in placed)

        def draw(mask, kind):
            tone = rng.uniform(0.05, 0.3) if rng.rand() < 0.5 else rng.uniform(0.7, 0.95)
            img[mask] = tone
            masks[i][mask] = kind

        def place(kind, inside=True):
            for _ in range(100):
                r = rng.uniform(r_lo, r_hi)
                if inside:
                    cy, cx = rng.uniform(r, s - r, size=2)
                else:  # centre just outside one border: the polygon is cut by the tile edge
                    cy, cx = rng.uniform(0, s, size=2)
                    side = rng.randint(4)
                    off = -rng.uniform(1, 0.6 * r)
                    cy, cx = [(off, cx), (s - 1 - off, cx), (cy, off), (cy, s - 1 - off)][side]
                if free(cy, cx, r):
                    placed.append((cy, cx, r))
                    if kind == 1:
                        return draw(_regular_polygon_mask(rr, cc, cy, cx, r, rng.randint(4, 8),
                                                          rng.uniform(0, 2 * np.pi)), 1)
                    return draw(_round_mask(rr, cc, cy, cx, r, rng.uniform(2.0, 2.5)), 2)

        if y[i] == 1:
            place(1)
        elif rng.rand() < border_polygons:
            place(1, inside=False)
        for _ in range(rng.randint(k_lo, k_hi + 1)):
            place(2)
        X[i] = np.clip(img + noise * rng.randn(s, s), 0.0, 1.0)
    return X, y, masks


_CORNERS = {
    "top-left": (0.0, 0.0), "top-right": (0.0, 1.0), "bottom-left": (1.0, 0.0), "bottom-right": (1.0, 1.0),
    "top": (0.0, 0.5), "bottom": (1.0, 0.5), "left": (0.5, 0.0), "right": (0.5, 1.0), "center": (0.5, 0.5),
}


def shortcut_mask(image_shape, *, kind="tag", size=2, position="top-right"):
    """Pixels a planted shortcut occupies (``kind`` "tag" or "frame"), as a boolean (H, W) mask.

    Parameters
    ----------
    image_shape : tuple of int (H, W)
    kind : {"tag", "frame"}, default="tag"
        ``"tag"``: a filled ``size x size`` square; ``"frame"``: a border ring ``size`` pixels wide.
    size : int, default=2
    position : str or (int, int), default="top-right"
        Where a tag sits: ``"top-left"``, ``"top-right"``, ``"bottom-left"``, ``"bottom-right"``,
        ``"top"``, ``"bottom"``, ``"left"``, ``"right"``, ``"center"`` (flush with the border), or the
        (row, col) of its top-left pixel. Ignored for frames.

    Returns
    -------
    mask : ndarray of shape (H, W), dtype bool

    Examples
    --------
    >>> from sklrp.datasets import shortcut_mask
    >>> shortcut_mask((4, 5), size=2, position="bottom-left").astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0]])
    """
    H, W = (int(s) for s in image_shape)
    if not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}.")
    mask = np.zeros((H, W), dtype=bool)
    if kind == "frame":
        if 2 * size >= min(H, W):
            raise ValueError(f"a frame {size} pixels wide does not fit a {H}x{W} image.")
        mask[:size] = mask[-size:] = True
        mask[:, :size] = mask[:, -size:] = True
        return mask
    if kind != "tag":
        raise ValueError(f'kind must be "tag" or "frame" here, got {kind!r}.')
    if size > min(H, W):
        raise ValueError(f"a {size}x{size} tag does not fit a {H}x{W} image.")
    if isinstance(position, str):
        if position not in _CORNERS:
            raise ValueError(f"position must be one of {sorted(_CORNERS)} or (row, col), got {position!r}.")
        fy, fx = _CORNERS[position]
        r0, c0 = int(round(fy * (H - size))), int(round(fx * (W - size)))
    else:
        r0, c0 = (int(v) for v in position)
        if not (0 <= r0 <= H - size and 0 <= c0 <= W - size):
            raise ValueError(f"position {(r0, c0)} puts the {size}x{size} tag outside a {H}x{W} image.")
    mask[r0:r0 + size, c0:c0 + size] = True
    return mask


def plant_shortcut(X, y=None, *, kind="tag", target_class=None, fraction=1.0, size=2, position="top-right",
                   value=None, image_shape=None, random_state=None):
    """Plant a shortcut (a "Clever Hans" cue) into images of one class, or stamp it onto any images.

    A classifier trained on the result can learn to predict ``target_class`` from the cue instead
    of the object, like the copyright tag on Pascal VOC "horse" images (thesis Section 6.2) or the
    uniform image borders of "aeroplane" (Section 6.3). Stamping the same cue onto images of other
    classes (``target_class=None``) and counting predictions that flip to ``target_class`` measures
    how much a model relies on it (the verification of Section 6.3.1).

    Parameters
    ----------
    X : ndarray of shape (n_samples, H, W) or (n_samples, H*W)
        Grey-value images (flat rows need ``image_shape`` unless they are square).
    y : ndarray of shape (n_samples,), default=None
        Labels; needed with ``target_class``.
    kind : {"tag", "frame", "background"}, default="tag"
        ``"tag"``: a filled ``size x size`` square of value ``value`` at ``position``;
        ``"frame"``: a border ring ``size`` pixels wide of value ``value``;
        ``"background"``: ``value`` is added to the background pixels of the image (those within
        15 % of the data range of the image's median value), i.e. a class-specific background level.
    target_class : label or None, default=None
        Plant into images of this class only; None stamps every image.
    fraction : float in (0, 1], default=1.0
        Fraction of the candidate images that get the cue (rounded to the nearest count, at least one).
    size : int, default=2
        Side of the tag or width of the frame (ignored for "background").
    position : str or (int, int), default="top-right"
        Where a tag sits (see :func:`shortcut_mask`).
    value : float, default=None
        Pixel value of tags and frames (default: the maximum of ``X``, a bright cue) or the offset
        of the background (default: a quarter of the data range).
    image_shape : tuple of int (H, W), default=None
        Shape of one image for flat rows; None: ``X.shape[1:]`` or the square root of the row length.
    random_state : int, RandomState instance or None, default=None
        Chooses which images get the cue.

    Returns
    -------
    X_planted : ndarray, same shape as X
        A copy of ``X`` with the cue.
    planted : ndarray of shape (n_samples,), dtype bool
        True for the images that carry it (the ground truth of an audit).

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.datasets import plant_shortcut
    >>> X = np.zeros((6, 4, 4)); y = np.array([0, 0, 0, 0, 1, 1])
    >>> Xp, planted = plant_shortcut(X, y, target_class=0, fraction=0.5, value=1.0, random_state=0)
    >>> planted.tolist(), Xp[planted].sum((1, 2)).tolist()
    ([False, False, True, True, False, False], [4.0, 4.0])
    """
    X = np.asarray(X, dtype=float)
    if X.ndim not in (2, 3) or X.shape[0] < 1:
        raise ValueError(f"X must have shape (n_samples, H, W) or (n_samples, H*W), got {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values.")
    if image_shape is None:
        if X.ndim == 3:
            image_shape = X.shape[1:]
        else:
            side = int(round(np.sqrt(X.shape[1])))
            if side * side != X.shape[1]:
                raise ValueError(f"rows of {X.shape[1]} values are not square images; pass image_shape.")
            image_shape = (side, side)
    H, W = (int(s) for s in image_shape)
    if H * W != int(np.prod(X.shape[1:])):
        raise ValueError(f"image_shape {(H, W)} does not match X with shape {X.shape}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    if kind not in ("tag", "frame", "background"):
        raise ValueError(f'kind must be "tag", "frame" or "background", got {kind!r}.')
    rng = check_random_state(random_state)
    n = X.shape[0]
    if target_class is None:
        candidates = np.arange(n)
    else:
        if y is None or np.shape(y) != (n,):
            raise ValueError("target_class needs y with one label per sample.")
        candidates = np.flatnonzero(np.asarray(y) == target_class)
        if candidates.size == 0:
            raise ValueError(f"no sample has the label target_class={target_class!r}.")
    n_plant = candidates.size if fraction == 1.0 else max(1, int(round(fraction * candidates.size)))
    planted = np.zeros(n, dtype=bool)
    planted[np.sort(rng.choice(candidates, size=n_plant, replace=False))] = True
    lo, hi = float(X.min()), float(X.max())
    imgs = X.reshape(n, H, W).copy()
    if kind == "background":
        offset = 0.25 * (hi - lo) if value is None else float(value)
        sel = imgs[planted]
        med = np.median(sel.reshape(len(sel), -1), axis=1)[:, None, None]
        sel = np.where(np.abs(sel - med) <= 0.15 * (hi - lo), sel + offset, sel)
        imgs[planted] = sel
    else:
        mask = shortcut_mask((H, W), kind=kind, size=size, position=position)
        sub = imgs[planted]
        sub[:, mask] = hi if value is None else float(value)
        imgs[planted] = sub
    return imgs.reshape(X.shape), planted

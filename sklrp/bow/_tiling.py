"""Patch-wise explanation of large images: tiles with overlap, relevance averaged (Fig. 2.13)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["explain_tiled", "TiledExplanation", "tile_positions"]


@dataclass
class TiledExplanation:
    """Relevance of a large image reassembled from tile-wise explanations.

    Attributes
    ----------
    relevance : ndarray of shape (H, W)
        Average of the relevance of all tiles covering each pixel.
    counts : ndarray of shape (H, W)
        Number of tiles covering each pixel.
    positions : ndarray of shape (n_tiles, 2)
        Top-left ``(row, col)`` of every tile.
    output : ndarray of shape (n_tiles,)
        The explained score of every tile.
    target : ndarray of shape (n_tiles,)
    """

    relevance: np.ndarray
    counts: np.ndarray
    positions: np.ndarray
    output: np.ndarray
    target: np.ndarray


def tile_positions(length, tile, stride):
    """Tile starts along one axis: ``0, stride, ...`` plus a last tile flush with the border.

    Examples
    --------
    >>> from sklrp.bow import tile_positions
    >>> tile_positions(10, 4, 3).tolist()
    [0, 3, 6]
    >>> tile_positions(11, 4, 3).tolist()
    [0, 3, 6, 7]
    """
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return np.array(starts)


def explain_tiled(explainer, image, *, tile_size=102, stride=34, target=None):
    """Explain a large image tile by tile and average the overlapping relevance maps.

    Section 2.4.3 crops overlapping ``102 x 102`` test tiles every 34 pixels, explains each
    and "merges the pixel-wise relevance scores obtained for each patch at the original
    location of the patch by locally averaging overlapping relevance maps" (Fig. 2.13).

    Parameters
    ----------
    explainer : LRPTransformer
        Fitted, for images of shape ``(tile_size, tile_size)``.
    image : ndarray of shape (H, W)
    tile_size : int, default=102
    stride : int, default=34
    target : label, "predicted" or None, default=None
        Explained output of every tile (None uses the explainer's ``target``).

    Returns
    -------
    TiledExplanation

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import LinearSVC
    >>> import sklrp
    >>> from sklrp.bow import DenseSIFT, BoWEncoder, explain_tiled
    >>> from sklrp.datasets import make_shapes
    >>> X, y, _ = make_shapes(20, image_size=48, radius=(6, 10), random_state=0)
    >>> model = make_pipeline(DenseSIFT(scales=(1.5,), steps=(4,), backend="numpy"),
    ...                       BoWEncoder(8, random_state=0), LinearSVC())
    >>> lrp = sklrp.LRPTransformer(model, rule="z").fit(X, y)
    >>> big, _, _ = make_shapes(1, image_size=96, random_state=1)
    >>> T = explain_tiled(lrp, big[0], tile_size=48, stride=24, target=1)
    >>> T.relevance.shape, len(T.positions), int(T.counts.max())
    ((96, 96), 9, 4)
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"explain_tiled expects one grey image of shape (H, W), got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("explain_tiled: the image contains NaN or infinity")
    for name, v in (("tile_size", tile_size), ("stride", stride)):
        if not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"explain_tiled: {name} must be a positive integer, got {v!r}")
    h, w = image.shape
    if h < tile_size or w < tile_size:
        raise ValueError(f"explain_tiled: image of shape {image.shape} is smaller than tile_size={tile_size}")
    rows, cols = tile_positions(h, tile_size, stride), tile_positions(w, tile_size, stride)
    positions = np.array([(r, c) for r in rows for c in cols])
    tiles = np.stack([image[r:r + tile_size, c:c + tile_size] for r, c in positions])
    E = explainer.explain(tiles, target=target)
    total = np.zeros((h, w))
    counts = np.zeros((h, w))
    for (r, c), rel in zip(positions, np.asarray(E.relevance)):
        total[r:r + tile_size, c:c + tile_size] += rel
        counts[r:r + tile_size, c:c + tile_size] += 1
    return TiledExplanation(total / counts, counts, positions, E.output, E.target)

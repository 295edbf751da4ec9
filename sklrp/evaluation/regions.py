"""Inputs of the perturbation analysis: checked sample arrays and the region grid (Eq. (3.4)).

A heatmap is evaluated region by region: :class:`RegionGrid` tiles an image (or the
features of a tabular sample) into the locations ``r_p`` of Eq. (3.4) and sums relevance
per region (Eq. (3.5)).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["RegionGrid", "check_samples", "region_size_pair"]


def check_samples(a, name, *, min_ndim=2):
    """``a`` as a finite float64 array of shape ``(n_samples, ...)`` with samples and features.

    scipy.sparse matrices are densified (perturbation analysis writes into every region);
    everything else that is not numeric is refused with a message naming ``name``.
    """
    if hasattr(a, "toarray") and hasattr(a, "nnz"):  # scipy.sparse: perturbed inputs are dense anyway
        a = a.toarray()
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
    if 0 in a.shape[1:]:
        raise ValueError(f"{name} has no features (shape {a.shape}): every sample needs at least one value")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def region_size_pair(region_size):
    """``(m_h, m_w)`` from a positive integer or a pair of them; a clear error otherwise."""
    if isinstance(region_size, numbers.Integral):
        size = (region_size, region_size)
    else:
        try:
            size = tuple(region_size)
        except TypeError:
            size = ()
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
        mh, mw = region_size_pair(region_size)
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



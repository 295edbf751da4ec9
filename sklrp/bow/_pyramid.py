"""Spatial pyramid regions and validation of descriptor arrays shared by the encoders."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ._geometry import N_GEOMETRY

__all__ = ["check_pyramid", "region_members", "check_descriptor_array", "ThreeDInputMixin"]


def check_pyramid(pyramid, where):
    """Validate ``pyramid``: a sequence of ``(rows, cols)`` grids, e.g. ``((1, 1), (2, 2), (3, 1))``."""
    try:
        levels = tuple((int(r), int(c)) for r, c in pyramid)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: pyramid must be a sequence of (rows, cols) pairs, got {pyramid!r}") from None
    if not levels or any(r < 1 or c < 1 for r, c in levels):
        raise ValueError(f"{where}: pyramid levels must be positive (rows, cols) pairs, got {pyramid!r}")
    if any(not isinstance(v, numbers.Integral) for lv in pyramid for v in lv):
        raise ValueError(f"{where}: pyramid entries must be integers, got {pyramid!r}")
    return levels


def region_members(geometry, levels):
    """Bool tensor (n_desc, n_regions): descriptor centre inside region (level by level, row-major).

    Each level tiles the image into ``rows x cols`` cells; a descriptor belongs to the
    cell containing its centre, so every level partitions the descriptors.
    """
    x, y = geometry[:, 0], geometry[:, 1]
    h, w = geometry[:, 3], geometry[:, 4]
    cols = []
    for rows, ncol in levels:
        r = ((y + 0.5) / h * rows).floor().clamp(0, rows - 1).long()
        c = ((x + 0.5) / w * ncol).floor().clamp(0, ncol - 1).long()
        cell = r * ncol + c
        cols.append(cell[:, None] == torch.arange(rows * ncol, device=cell.device)[None])
    return torch.cat(cols, dim=1)


def check_descriptor_array(X, where, n_dims=None):
    """Validate a ``(n_images, n_descriptors, 5 + n_dims)`` array from :class:`DenseSIFT`."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 3 or X.shape[2] <= N_GEOMETRY:
        raise ValueError(
            f"{where} expects local descriptors of shape (n_images, n_descriptors, 5 + n_dims) as produced by "
            f"sklrp.bow.DenseSIFT, got an array of shape {X.shape}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{where}: got an empty descriptor array of shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{where}: descriptors contain NaN or infinity")
    if n_dims is not None and X.shape[2] - N_GEOMETRY != n_dims:
        raise ValueError(f"{where} was fitted on {n_dims}-dimensional descriptors, got "
                         f"{X.shape[2] - N_GEOMETRY}")
    return X


class ThreeDInputMixin:
    """scikit-learn tags of the BoW stages: 3-D input (images, or descriptors per image), float output."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = []
        return tags

"""Descriptor geometry and the descriptor -> pixel projection (Eqs. (2.84)-(2.85), Appendix D.1.2).

Local descriptors travel between pipeline stages as one float array of shape
``(n_images, n_descriptors, N_GEOMETRY + n_dims)``: the first ``N_GEOMETRY`` columns
hold the geometry of each descriptor (centre x, centre y, spatial bin size, image
height, image width), the rest the descriptor itself. Keeping the geometry inside
the array lets the stages work in an ordinary scikit-learn ``Pipeline`` and lets the
encoders build spatial pyramids without side channels.

A descriptor with bin size ``b`` covers the square of ``4b x 4b`` pixels centred at
its centre (its ``area``, Eq. (2.84)), split into ``4 x 4`` spatial bins of ``b x b``
pixels (the SIFT layout used by VLFeat, Vedaldi et al. 2010). Descriptor dimension
``i`` belongs to spatial bin ``i // 8`` (row-major over ``(bin_y, bin_x)``) and
orientation ``i % 8``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["N_GEOMETRY", "DescriptorGeometry", "split_descriptors", "project_to_pixels"]

#: number of geometry columns in front of every descriptor
N_GEOMETRY = 5
_NBINS = 4  # 4 x 4 spatial bins per SIFT descriptor


def split_descriptors(Xt):
    """Split a descriptor array into ``(geometry, descriptors)``.

    Parameters
    ----------
    Xt : ndarray or tensor of shape (n_images, n_descriptors, N_GEOMETRY + n_dims)

    Returns
    -------
    geometry : same type, shape (n_images, n_descriptors, N_GEOMETRY)
    descriptors : same type, shape (n_images, n_descriptors, n_dims)

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.bow import split_descriptors, N_GEOMETRY
    >>> g, d = split_descriptors(np.zeros((2, 3, N_GEOMETRY + 128)))
    >>> g.shape, d.shape
    ((2, 3, 5), (2, 3, 128))
    """
    if Xt.ndim != 3 or Xt.shape[2] <= N_GEOMETRY:
        raise ValueError(
            "expected local descriptors of shape (n_images, n_descriptors, 5 + n_dims) as produced by "
            f"sklrp.bow.DenseSIFT, got shape {tuple(Xt.shape)}"
        )
    return Xt[..., :N_GEOMETRY], Xt[..., N_GEOMETRY:]


@dataclass(frozen=True)
class DescriptorGeometry:
    """Where the descriptors of one image lie (Eq. (2.84): ``area(l)``).

    Attributes
    ----------
    center : ndarray of shape (n_descriptors, 2)
        Centre ``(x, y)`` in pixel coordinates (pixel ``(r, c)`` has its centre at ``(c, r)``).
    bin_size : ndarray of shape (n_descriptors,)
        Side ``b`` of one spatial bin; the descriptor covers ``4b x 4b`` pixels.
    image_shape : tuple of int
        ``(height, width)`` of the image.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.bow import DescriptorGeometry
    >>> g = DescriptorGeometry(np.array([[11.5, 11.5]]), np.array([6.0]), (30, 30))
    >>> g.boxes()
    array([[ 0, 24,  0, 24]])
    >>> g.bin_boxes().shape
    (1, 16, 4)
    """

    center: np.ndarray
    bin_size: np.ndarray
    image_shape: tuple

    @classmethod
    def from_array(cls, geometry):
        """Geometry of one image from its ``(n_descriptors, N_GEOMETRY)`` columns."""
        geometry = np.asarray(geometry, dtype=float)
        shape = (int(geometry[0, 3]), int(geometry[0, 4])) if len(geometry) else (0, 0)
        return cls(geometry[:, :2].copy(), geometry[:, 2].copy(), shape)

    def _origin(self):
        # top-left pixel of the 4b x 4b square centred at the centre
        b = self.bin_size
        left = np.floor(self.center[:, 0] - 2 * b).astype(int) + 1
        top = np.floor(self.center[:, 1] - 2 * b).astype(int) + 1
        return top, left

    def boxes(self):
        """Pixel boxes ``[top, bottom, left, right)`` of each descriptor, clipped to the image."""
        top, left = self._origin()
        side = (_NBINS * self.bin_size).astype(int)
        return _clip(np.stack([top, top + side, left, left + side], axis=1), self.image_shape)

    def bin_boxes(self):
        """Pixel boxes of the 4x4 spatial bins, shape (n_descriptors, 16, 4), row-major (bin_y, bin_x)."""
        top, left = self._origin()
        b = self.bin_size.astype(int)
        by, bx = np.divmod(np.arange(_NBINS * _NBINS), _NBINS)
        t = top[:, None] + by[None] * b[:, None]
        lft = left[:, None] + bx[None] * b[:, None]
        boxes = np.stack([t, t + b[:, None], lft, lft + b[:, None]], axis=2)
        return _clip(boxes, self.image_shape)

    def area(self):
        """Number of pixels ``|area(l)|`` each descriptor covers (Eq. (2.85))."""
        bx = self.boxes()
        return (bx[:, 1] - bx[:, 0]) * (bx[:, 3] - bx[:, 2])


def _clip(boxes, shape):
    h, w = shape
    out = boxes.copy()
    out[..., 0:2] = np.clip(out[..., 0:2], 0, h)
    out[..., 2:4] = np.clip(out[..., 2:4], 0, w)
    return out


def project_to_pixels(values, boxes, image_shape):
    """Flat rule from boxes to pixels: each box spreads its value evenly over its pixels.

    ``R_p = sum_{l : p in area(l)} R_l / |area(l)|`` (Eqs. (2.84)-(2.85), the flat rule
    (2.27)). Boxes of zero area keep their value out of the map (none occur for boxes
    built by :class:`DescriptorGeometry` from descriptors that lie in the image).
    Implemented with a 2-D difference array, so the cost is ``O(n_boxes + H W)``.

    Parameters
    ----------
    values : torch.Tensor of shape (n_images, n_boxes)
    boxes : ndarray of shape (n_boxes, 4)
        ``[top, bottom, left, right)`` pixel boxes shared by all images.
    image_shape : (int, int)

    Returns
    -------
    torch.Tensor of shape (n_images, height, width)

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklrp.bow import project_to_pixels
    >>> R = project_to_pixels(torch.tensor([[4.0]]), np.array([[0, 2, 0, 2]]), (3, 3))
    >>> R[0]
    tensor([[1., 1., 0.],
            [1., 1., 0.],
            [0., 0., 0.]])
    """
    h, w = image_shape
    n = values.shape[0]
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    keep = area > 0
    boxes, area = boxes[keep], area[keep]
    v = values[:, torch.as_tensor(keep, device=values.device)] / torch.as_tensor(
        area, dtype=values.dtype, device=values.device)
    t, b, lft, r = (torch.as_tensor(boxes[:, i], device=values.device) for i in range(4))
    w1 = w + 1
    diff = values.new_zeros(n, (h + 1) * w1)
    diff.index_add_(1, t * w1 + lft, v)
    diff.index_add_(1, t * w1 + r, -v)
    diff.index_add_(1, b * w1 + lft, -v)
    diff.index_add_(1, b * w1 + r, v)
    out = diff.view(n, h + 1, w1).cumsum(1).cumsum(2)
    return out[:, :h, :w]

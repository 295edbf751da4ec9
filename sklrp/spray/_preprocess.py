"""SpRAy preprocessing (Algorithm 3, lines 6-8; Section 6.3, Appendix E)."""

import numpy as np
from scipy.ndimage import gaussian_filter


def _pool_matrix(n_in, n_out, dtype=float):
    """Fractional-overlap sum-pooling matrix of shape (n_out, n_in).

    Pixel ``i`` covers ``[i, i + 1)``, output cell ``a`` covers
    ``[a n_in / n_out, (a + 1) n_in / n_out)``; the entry is the length of their overlap.
    Every column sums to one, so pooling conserves the total relevance exactly, and sizes not
    divisible by the grid (or smaller than it) are handled without dropping pixels.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None).astype(dtype)


def _float_dtype(a):
    return a.dtype if a.dtype in (np.float32, np.float64) else np.float64


def pool_maps(maps, pool_shape):
    """Sum-pool maps of shape (n, H, W) onto a regular ``pool_shape`` grid.

    Relevance of pixels straddling a grid-cell border is split by area, so
    ``pool_maps(R, s).sum((1, 2)) == R.sum((1, 2))`` for any H, W and grid (Section 6.3).
    float32 maps stay float32 (half the memory of float64 for large map sets); other input
    is pooled in float64.

    Parameters
    ----------
    maps : ndarray of shape (n_samples, H, W)
        Relevance maps (channels already summed).
    pool_shape : tuple of int (h, w)
        Output grid.

    Returns
    -------
    pooled : ndarray of shape (n_samples, h, w)

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.spray import pool_maps
    >>> pool_maps(np.ones((1, 4, 4)), (2, 2))[0]
    array([[4., 4.],
           [4., 4.]])
    """
    maps = np.asarray(maps)
    maps = maps.astype(_float_dtype(maps), copy=False)
    ph = _pool_matrix(maps.shape[1], pool_shape[0], maps.dtype)
    pw = _pool_matrix(maps.shape[2], pool_shape[1], maps.dtype)
    return np.matmul(np.matmul(ph, maps), pw.T)


def preprocess(X, *, map_shape, channel_axis, smoothing_sigma, pool_shape, normalize):
    """Algorithm 3, lines 6-8: maps -> flat feature rows (a new array; X is not modified).

    Channel sum, optional Gaussian low-pass (Appendix E), sum pooling onto ``pool_shape``
    (Section 6.3), optional per-map normalisation. float32 input stays float32.
    """
    n = X.shape[0]
    dtype = _float_dtype(X)
    maps = None
    if map_shape is not None:
        shape = tuple(int(s) for s in map_shape)
        if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
            raise ValueError(
                f"map_shape={shape} does not match {int(np.prod(X.shape[1:]))} values per sample."
            )
        maps = X.reshape((n,) + shape)
    elif X.ndim >= 3:
        maps = X
    if maps is None:
        if smoothing_sigma is not None:
            raise ValueError(
                "smoothing_sigma needs spatial maps: pass (n, H, W[, C]) input or set map_shape."
            )
        feats = np.array(X.reshape(n, -1), dtype=dtype, copy=True)
    else:
        if maps.ndim == 4:
            if channel_axis not in (-1, 1, 3):
                raise ValueError(f"channel_axis must be -1, 1 or 3, got {channel_axis}.")
            maps = maps.sum(axis=channel_axis)  # channel sum (Section 6.3)
        elif maps.ndim != 3:
            raise ValueError(f"Maps must be (n, H, W) or (n, H, W, C); got shape {maps.shape}.")
        maps = maps.astype(dtype, copy=False)
        if smoothing_sigma:
            maps = gaussian_filter(maps, sigma=(0, smoothing_sigma, smoothing_sigma))
        if pool_shape is not None:
            pool = tuple(int(s) for s in pool_shape)
            if len(pool) != 2 or min(pool) < 1:
                raise ValueError(f"pool_shape must be two positive ints, got {pool_shape}.")
            maps = pool_maps(maps, pool)
        feats = np.array(maps.reshape(n, -1), dtype=dtype, copy=bool(np.may_share_memory(maps, X)))
    if normalize is not None:
        if normalize == "l1":
            norm = np.abs(feats).sum(axis=1)
        elif normalize == "l2":
            norm = np.sqrt((feats**2).sum(axis=1))
        else:
            norm = np.abs(feats).max(axis=1)
        norm[norm == 0] = 1.0  # all-zero maps stay zero
        feats /= norm[:, None]
    return feats

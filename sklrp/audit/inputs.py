"""Reading and checking the audit's inputs before any expensive work (no torch import here).

Each check ends in :class:`AuditError` with a message that names the problem and the fix.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import AuditError

__all__ = ["load_model", "load_data", "image_shape_of", "aopc_setup", "sniff"]

# magic numbers of what users pass by mistake
_ZIP = b"PK\x03\x04"
_NPY = b"\x93NUMPY"
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00", b"x\x01", b"x\x5e", b"x\x9c", b"x\xda")


def sniff(path):
    """What a file looks like: "npz", "npy", "pickle", "compressed", "text" or "binary"."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_ZIP):
        return "npz"
    if head.startswith(_NPY):
        return "npy"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if head.startswith(_COMPRESSED):
        return "compressed"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def _exists(path, what):
    if not os.path.exists(path):
        raise AuditError(f"{what} file not found: {path}")
    if os.path.isdir(path):
        raise AuditError(f"{what} must be a file, got a directory: {path}")
    if not os.access(path, os.R_OK):
        raise AuditError(f"cannot read {what} file {path}: permission denied")


def load_model(path):
    """Load a fitted estimator saved with ``joblib.dump``; a clear error for anything else."""
    _exists(path, "model")
    kind = sniff(path)
    if kind in ("npz", "npy"):
        raise AuditError(f"{path} is a numpy data file, not a model; the order is MODEL DATA "
                         "(did you swap them?)")
    if kind == "text":
        raise AuditError(f"{path} is a text file, not a model saved with joblib.dump")
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # any unpickling problem is a bad input file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AuditError(f"cannot load a model from {path} ({type(exc).__name__}{': ' + first if first else ''}); "
                         "save it with joblib.dump(model, path)") from None
    if not (hasattr(model, "predict") or hasattr(model, "decision_function")):
        raise AuditError(f"{path} holds a {type(model).__name__}, not a fitted estimator "
                         "(it has no predict or decision_function)")
    return model


def load_data(path):
    """Read ``X`` (required), ``y``, ``masks`` and ``image_shape`` from an ``.npz`` file and check them."""
    _exists(path, "data")
    kind = sniff(path)
    if kind == "pickle" or kind == "compressed":
        raise AuditError(f"{path} looks like a model (joblib/pickle), not data; the order is MODEL DATA "
                         "(did you swap them?)")
    if kind == "npy":
        raise AuditError(f"{path} is a single .npy array; save the data with numpy.savez(path, X=X, y=y)")
    if kind == "text":
        raise AuditError(f"{path} is a text file (CSV?); DATA must be an .npz file: load it with numpy and "
                         "save it with numpy.savez(path, X=X, y=y)")
    if kind != "npz":
        raise AuditError(f"{path} is not an .npz file; save the data with numpy.savez(path, X=X, y=y)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "allow_pickle" in msg or "Object arrays" in msg:
            msg = "it holds Python objects; store numeric arrays only"
        raise AuditError(f"cannot read {path} as .npz: {msg}") from None
    if "X" not in data:
        raise AuditError(f"{path} has no array 'X' (found: {', '.join(sorted(data)) or 'nothing'})")
    X = np.asarray(data["X"])
    if X.ndim < 2 or X.shape[0] < 1 or X[0].size < 1:
        raise AuditError(f"X must have shape (n_samples, n_features) or (n_samples, H, W[, C]), got {X.shape}")
    if X.dtype.kind not in "biuf":
        raise AuditError(f"X must be numeric, got dtype {X.dtype}")
    X = X.astype(float)
    if not np.all(np.isfinite(X)):
        raise AuditError("X contains NaN or infinite values")
    y = data.get("y")
    if y is not None:
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise AuditError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise AuditError("y contains NaN or infinite values")
    image_shape = data.get("image_shape")
    if image_shape is not None:
        try:
            image_shape = tuple(int(v) for v in np.ravel(image_shape))
        except (TypeError, ValueError):
            raise AuditError(f"image_shape must be integers, got {data['image_shape']!r}") from None
        if not image_shape or min(image_shape) < 1 or int(np.prod(image_shape)) != int(np.prod(X.shape[1:])):
            raise AuditError(f"image_shape {image_shape} does not match X with shape {X.shape}")
    masks = data.get("masks")
    if masks is not None:
        masks = _check_masks(np.asarray(masks), X, image_shape)
    return X, y, masks, image_shape


def _check_masks(masks, X, image_shape):
    if masks.shape[0] != X.shape[0]:
        raise AuditError(f"masks has {masks.shape[0]} entries but X has {X.shape[0]} samples")
    if masks.dtype != bool:
        if masks.dtype.kind not in "biuf" or not np.isin(masks, (0, 1)).all():
            raise AuditError("masks must be boolean (True inside the object) or 0/1")
        masks = masks.astype(bool)
    shape = image_shape_of(X, image_shape)
    if masks[0].size != int(np.prod(shape[:2])) and masks[0].size != X[0].size:
        raise AuditError(f"masks must have one value per pixel: got {masks.shape} for images of shape {shape}")
    return masks


def image_shape_of(X, image_shape=None):
    """Shape of one sample for display and regions: given, the array's own, a square, or (1, d)."""
    if image_shape is not None:
        return tuple(int(s) for s in image_shape)
    if X.ndim >= 3:
        return tuple(X.shape[1:])
    side = int(round(np.sqrt(X.shape[1])))
    return (side, side) if side * side == X.shape[1] and side > 1 else (1, X.shape[1])


def is_image(shape):
    return len(shape) >= 2 and shape[0] > 1 and shape[1] > 1


def aopc_setup(shape, region_size=None, n_steps=None):
    """Region size, steps and a warning (or None) for the perturbation curves of Eq. (3.6).

    Defaults: regions of ``min(H, W) // 8`` pixels (about 8 x 8 regions per image, at least
    single pixels) and as many steps as regions (the curve runs to the end); tabular data:
    single features, at most 64 steps. A region larger than the image is an error; a choice
    that leaves fewer regions than the steps asked for is a warning (the curve is cut).
    """
    image = is_image(shape)
    H, W = (shape[0], shape[1]) if image else (1, int(np.prod(shape)))
    if region_size is None:
        region_size = max(1, min(H, W) // 8) if image else 1
    elif region_size < 1:
        raise AuditError(f"--region-size must be >= 1, got {region_size}")
    elif image and region_size > min(H, W):
        raise AuditError(f"--region-size {region_size} is larger than the images ({H}x{W}); "
                         f"use at most {min(H, W)} (default: {max(1, min(H, W) // 8)})")
    elif not image and region_size != 1:
        raise AuditError("--region-size applies to images; tabular data are perturbed one feature at a time")
    n_regions = (-(-H // region_size)) * (-(-W // region_size)) if image else W
    warning = None
    if n_steps is None:
        n_steps = n_regions if image else min(n_regions, 64)
    elif n_steps < 1:
        raise AuditError(f"--n-steps must be >= 1, got {n_steps}")
    elif n_steps > n_regions:
        warning = (f"--n-steps {n_steps} with regions of {region_size}x{region_size} pixels on {H}x{W} images: "
                   f"there are only {n_regions} regions, so the perturbation curves stop after {n_regions} steps")
        n_steps = n_regions
    if image and n_regions < 8:
        extra = f"only {n_regions} regions of {region_size}x{region_size} pixels: AOPC on so few steps is coarse"
        warning = extra if warning is None else f"{warning}; {extra}"
    return int(region_size), int(n_steps), int(n_regions), warning

"""The data and models of ``sklrp audit --demo``: a Clever-Hans data set, an SVM and a CNN."""

from __future__ import annotations

import numpy as np

__all__ = ["demo_data", "demo_models"]


def demo_data(n_samples=800, random_state=0):
    """Clever-Hans images (a quarter of class 0 carries a tag), object masks, and a train/test split.

    Returns
    -------
    (X_train, y_train), (X_test, y_test, watermark_test, masks_test)

    Examples
    --------
    >>> from sklrp.audit.demo import demo_data
    >>> (Xtr, ytr), (X, y, wm, masks) = demo_data(60)
    >>> Xtr.shape, X.shape, masks.shape, int(wm.sum()) > 0
    ((30, 32, 32), (30, 32, 32), (30, 32, 32), True)
    """
    from ..datasets import make_clever_hans

    X, y, wm = make_clever_hans(n_samples=n_samples, random_state=random_state)
    X = np.clip(X, 0.0, None)  # non-negative pixels: the intersection kernel needs them
    H, W = X.shape[1:]
    rr, cc = np.mgrid[0:H, 0:W]
    # the shapes lie within ~0.28*min(H, W) + jitter of the centre: the object mask
    disc = (rr - (H - 1) / 2) ** 2 + (cc - (W - 1) / 2) ** 2 <= (0.28 * min(H, W) + 4) ** 2
    masks = np.broadcast_to(disc, X.shape).copy()
    half = n_samples // 2
    return (X[:half], y[:half]), (X[half:], y[half:], wm[half:], masks[half:])


def demo_models(X_train, y_train, *, device="auto", random_state=0):
    """Train the demo's models: an intersection-kernel SVM and, when skorch is installed, a small CNN.

    Returns
    -------
    models : dict of str -> fitted estimator
    notes : list of str
        What was skipped and why.
    """
    from sklearn.svm import SVC

    from ..kernels import intersection_kernel

    models, notes = {}, []
    models["svm-hik"] = SVC(kernel=intersection_kernel, C=1.0).fit(X_train.reshape(len(X_train), -1), y_train)
    try:
        from skorch import NeuralNetClassifier
    except ImportError:
        notes.append("CNN skipped: skorch is not installed (pip install skorch).")
        return models, notes
    import torch
    from torch import nn

    torch.manual_seed(random_state)
    H, W = X_train.shape[1:]
    module = nn.Sequential(
        nn.Unflatten(1, (1, H)),  # (n, H, W) -> (n, 1, H, W): the net takes the images as they are
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (H // 4) * (W // 4), int(np.max(y_train)) + 1),
    )
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    net = NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=3e-3,
                              max_epochs=15, batch_size=32, train_split=None, verbose=0,
                              device="cuda" if use_cuda else "cpu")
    models["cnn"] = net.fit(X_train.astype(np.float32), y_train.astype(np.int64))
    return models, notes

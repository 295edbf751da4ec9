"""Descriptor-replacement perturbation for AOPC on BoW / FV models (Appendix C.2, Eqs. (C.1)-(C.2))."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..evaluation import Perturbation
from ._bow import BoWEncoder
from ._fisher import FisherVectorEncoder
from ._geometry import N_GEOMETRY

__all__ = ["DescriptorReplacement"]


class DescriptorReplacement(Perturbation):
    """Replace local descriptors, in relevance order, by samples of the encoder's model.

    Pixel perturbation suits BoW / FV models badly: one pixel feeds many descriptors and
    replacement patches bias the local features (Appendix C.2). Instead each step
    replaces ``n_per_step`` descriptors of the image (the thesis uses 100) by descriptors
    drawn from the GMM of a :class:`FisherVectorEncoder` (``mu_k + sigma_k * N(0, 1)``
    with ``k ~ pi``; mapped back through the encoder's PCA when there is one) or, for a
    :class:`BoWEncoder`, by randomly chosen visual words. The model then re-encodes the
    perturbed descriptor set; for mean-pooled encoders this is exactly the update
    ``x^(k) = x^(k-1) + (Psi(l_lambda) - Psi(l_k)) / |L|`` of Eq. (C.2) from the
    unnormalised FV of Eq. (C.1). Descriptors keep their geometry (pyramid region).

    Use with :func:`sklrp.evaluation.aopc_score` / :func:`~sklrp.evaluation.perturbation_curve`:
    ``X`` is the descriptor array of :class:`DenseSIFT` ``(n, L, 5 + D)``, ``relevance``
    the descriptor relevance ``(n, L)`` (or ``(n, L, 5 + D)``, summed over dimensions,
    e.g. ``LRPTransformer(FrozenEstimator(pipeline[1:])).explain(D).relevance``), and the
    model is the pipeline after ``DenseSIFT`` (it takes descriptor arrays). Regions are
    the consecutive groups of ``n_per_step`` descriptors in decreasing relevance, so
    ``order="morf"`` replaces the most relevant first. ``order="random"`` (the baseline of
    Fig. 4.3) replaces the descriptors in a random order: each repeat draws its own random
    groups, so it is a random descriptor order, not a shuffle of relevance-sorted groups.

    Parameters
    ----------
    encoder : FisherVectorEncoder or BoWEncoder
        The fitted encoder whose model generates the replacements.
    n_per_step : int, default=100
        Descriptors replaced per perturbation step.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import LinearSVC
    >>> from sklrp.bow import DenseSIFT, FisherVectorEncoder, PowerNormalizer, DescriptorReplacement
    >>> from sklrp.evaluation import aopc_score
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.rand(6, 40, 40), np.arange(6) % 2
    >>> D = DenseSIFT(backend="numpy").fit_transform(X)
    >>> model = make_pipeline(FisherVectorEncoder(2, random_state=0), PowerNormalizer(), LinearSVC()).fit(D, y)
    >>> g = DescriptorReplacement(model[0], n_per_step=5)
    >>> a = aopc_score(model, D, rng.rand(6, D.shape[1]), perturbation=g, n_repeats=2, random_state=0)
    >>> bool(np.isfinite(a))
    True
    """

    random = True

    def __init__(self, encoder, n_per_step=100):
        self.encoder = encoder
        self.n_per_step = n_per_step

    def bind(self, X, grid, value_range):
        enc = self.encoder
        if isinstance(enc, FisherVectorEncoder):
            check_is_fitted(enc, "gmm_")
        elif isinstance(enc, BoWEncoder):
            check_is_fitted(enc, "codebook_")
        else:
            raise TypeError(f"DescriptorReplacement needs a fitted FisherVectorEncoder or BoWEncoder, got "
                            f"{type(enc).__name__}")
        if not isinstance(self.n_per_step, numbers.Integral) or self.n_per_step < 1:
            raise ValueError(f"n_per_step must be a positive integer, got {self.n_per_step!r}")
        shape = grid.input_shape
        if len(shape) != 2 or shape[1] <= N_GEOMETRY:
            raise ValueError(f"DescriptorReplacement perturbs descriptor arrays (n, L, 5 + D) from DenseSIFT, got "
                             f"samples of shape {shape}")
        return super().bind(X, grid, value_range)

    def region_scores(self, relevance):
        rel = np.asarray(relevance, dtype=float)
        n, n_desc = self.X.shape[0], self.grid.input_shape[0]
        if rel.ndim == 3:
            rel = rel[..., N_GEOMETRY:].sum(-1)
        if rel.shape != (n, n_desc):
            raise ValueError(f"descriptor relevance must have shape (n_samples, n_descriptors) = {(n, n_desc)}, "
                             f"got {np.shape(relevance)}")
        if not np.all(np.isfinite(rel)):
            raise ValueError("descriptor relevance contains NaN or infinity")
        k = self.n_per_step
        n_groups = -(-n_desc // k)
        order = np.argsort(-rel, axis=1, kind="stable")
        padded = np.full((n, n_groups * k), -1)
        padded[:, :n_desc] = order
        self.groups_ = padded.reshape(n, n_groups, k)
        means = np.array([[rel[i, g[g >= 0]].mean() for g in self.groups_[i]] for i in range(n)])
        return means

    def _sample(self, m, rng):
        enc = self.encoder
        if isinstance(enc, BoWEncoder):
            return enc.codebook_[rng.randint(len(enc.codebook_), size=m)]
        g = enc.gmm_
        comp = rng.choice(len(g.weights_), size=m, p=g.weights_ / g.weights_.sum())
        l = g.means_[comp] + np.sqrt(g.covariances_[comp]) * rng.randn(m, g.means_.shape[1])
        return l if enc.pca_ is None else enc.pca_.inverse_transform(l)

    def start(self, rows, rng):
        descriptors = self.X[rows].reshape((len(rows),) + self.grid.input_shape).copy()
        if self.order != "random":
            return descriptors, self.groups_[rows]
        # a random descriptor order: random groups per row and repeat (the engine then permutes the groups)
        n_desc, (n_groups, k) = self.grid.input_shape[0], self.groups_.shape[1:]
        groups = np.full((len(rows), n_groups * k), -1)
        for i in range(len(rows)):
            groups[i, :n_desc] = rng.permutation(n_desc)
        return descriptors, groups.reshape(len(rows), n_groups, k)

    def step(self, state, rows, regions, rng):
        descriptors, groups = state
        idx = groups[np.arange(len(rows)), regions]  # (b, n_per_step), -1 = padding
        r, c = np.nonzero(idx >= 0)
        descriptors[r, idx[r, c], N_GEOMETRY:] = self._sample(len(r), rng)
        return descriptors, groups

    def model_input(self, state):
        return state[0]

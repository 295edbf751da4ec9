"""Fisher vectors (Section 4.2) and their LRP decomposition (Section 4.3, Appendix D.1).

``FisherVectorEncoder`` maps the descriptors of an image to the *unnormalised* Fisher
vector (mean of the embeddings Psi of Eqs. (4.1)-(4.4), per spatial-pyramid region);
``PowerNormalizer`` applies the power and l2 normalisation of Eq. (4.5) as a separate
stage, so that the pair ``PowerNormalizer -> linear SVM`` is the Hellinger-kernel SVM
of Eq. (4.6) and relevance passes the normalisation unchanged (Eq. (4.8)).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ..propagators import Propagator, RuleConfig, register
from ..rules import DenseMap, LayerRelevance
from ._bow import normalise_rows
from ._geometry import N_GEOMETRY
from ._pooling import check_pool_rule, decompose_pool
from ._pyramid import ThreeDInputMixin, check_descriptor_array, check_pyramid, region_members

__all__ = ["FisherVectorEncoder", "FisherVectorPropagator", "PowerNormalizer", "PowerNormalizerPropagator"]


class FisherVectorEncoder(ThreeDInputMixin, TransformerMixin, BaseEstimator):
    """Unnormalised Fisher vectors of local descriptors under a diagonal GMM (Eqs. (4.1)-(4.5)).

    Per descriptor ``l`` (optionally PCA-projected, e.g. 128 -> 80 dimensions as in
    Appendix D.1) and GMM component ``k`` with posterior ``gamma_k(l)``::

        Psi_pi_k(l)    = (gamma_k(l) - pi_k) / sqrt(pi_k)                          (4.1)
        Psi_mu_k(l)    = gamma_k(l) / sqrt(pi_k) (l - mu_k) / sigma_k              (4.2)
        Psi_sigma_k(l) = gamma_k(l) / sqrt(2 pi_k) ((l - mu_k)^2 / sigma_k^2 - 1)  (4.3)

    and the image's vector is the mean of ``Psi(l)`` (Eq. (4.4), layout of Eq. (4.10):
    ``[pi_1..pi_K, mu_1..mu_K, sigma_1..sigma_K]``) over the descriptors of each pyramid
    region, the regions' blocks concatenated. Follow it with :class:`PowerNormalizer`
    for the improved Fisher kernel.

    Parameters
    ----------
    n_components : int, default=16
        GMM components ``K``.
    pca_components : int or None, default=None
        Project descriptors onto this many principal components before the GMM.
    include_pi : bool, default=False
        Include the ``K`` mixture-weight dimensions Psi_pi (often dropped, Chatfield et al. 2011).
    pyramid : sequence of (rows, cols), default=((1, 1),)
    max_descriptors : int, default=50000
        Descriptors sampled from the training images to fit PCA and GMM.
    reg_covar : float, default=1e-4
        Added to the GMM variances (``GaussianMixture(reg_covar=...)``).
    random_state : int, RandomState or None, default=None

    Attributes
    ----------
    gmm_ : GaussianMixture
        Diagonal-covariance mixture (``means_``, ``covariances_`` (variances), ``weights_``).
    pca_ : PCA or None
    n_regions_ : int
    n_dims_ : int
        Descriptor dimension seen by the GMM.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklrp.bow import DenseSIFT, FisherVectorEncoder, PowerNormalizer
    >>> X = np.random.RandomState(0).rand(4, 40, 40)
    >>> fv = make_pipeline(DenseSIFT(backend="numpy"), FisherVectorEncoder(2, pca_components=8, random_state=0),
    ...                    PowerNormalizer())
    >>> fv.fit_transform(X).shape
    (4, 32)
    """

    def __init__(self, n_components=16, *, pca_components=None, include_pi=False, pyramid=((1, 1),),
                 max_descriptors=50000, reg_covar=1e-4, random_state=None):
        self.n_components = n_components
        self.pca_components = pca_components
        self.include_pi = include_pi
        self.pyramid = pyramid
        self.max_descriptors = max_descriptors
        self.reg_covar = reg_covar
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the (PCA and) diagonal GMM on a sample of the training descriptors.

        Parameters
        ----------
        X : array-like of shape (n_images, n_descriptors, 5 + n_dims)
        y : ignored

        Returns
        -------
        self : FisherVectorEncoder
        """
        name = "FisherVectorEncoder"
        if not isinstance(self.n_components, numbers.Integral) or self.n_components < 1:
            raise ValueError(f"{name}: n_components must be a positive integer, got {self.n_components!r}")
        if self.pca_components is not None and (
                not isinstance(self.pca_components, numbers.Integral) or self.pca_components < 1):
            raise ValueError(f"{name}: pca_components must be None or a positive integer, got {self.pca_components!r}")
        if not isinstance(self.max_descriptors, numbers.Integral) or self.max_descriptors < 1:
            raise ValueError(f"{name}: max_descriptors must be a positive integer, got {self.max_descriptors!r}")
        levels = check_pyramid(self.pyramid, name)
        X = check_descriptor_array(X, name)
        desc = X[..., N_GEOMETRY:].reshape(-1, X.shape[2] - N_GEOMETRY)
        rng = check_random_state(self.random_state)
        if len(desc) > self.max_descriptors:
            desc = desc[rng.choice(len(desc), self.max_descriptors, replace=False)]
        self.pca_ = None
        if self.pca_components is not None:
            if self.pca_components > min(desc.shape):
                raise ValueError(f"{name}: pca_components={self.pca_components} exceeds the descriptor dimension "
                                 f"or sample count {min(desc.shape)}")
            self.pca_ = PCA(self.pca_components, random_state=rng.randint(2**31 - 1)).fit(desc)
            desc = self.pca_.transform(desc)
        if len(desc) < self.n_components:
            raise ValueError(f"{name}: {len(desc)} descriptors are too few for n_components={self.n_components}")
        self.gmm_ = GaussianMixture(self.n_components, covariance_type="diag", reg_covar=self.reg_covar,
                                    random_state=rng.randint(2**31 - 1)).fit(desc)
        self.levels_ = levels
        self.n_regions_ = sum(r * c for r, c in levels)
        self.n_dims_ = desc.shape[1]
        self.n_features_in_ = X.shape[1]
        return self

    # -- forward pieces --------------------------------------------------------------
    def _params(self, config):
        g = self.gmm_
        return (config.tensor(g.weights_), config.tensor(g.means_), config.tensor(np.sqrt(g.covariances_)))

    def _project(self, desc, config):
        if self.pca_ is None:
            return desc
        w = config.tensor(self.pca_.components_.T)
        return (desc - config.tensor(self.pca_.mean_)) @ w

    def _posteriors(self, l, pi, mu, sigma):
        """gamma_k(l): (n_desc, K) soft assignments under the diagonal GMM."""
        inv = 1.0 / sigma
        # log N(l; mu_k, sigma_k^2) expanded so only (n_desc x K) matrices appear
        quad = (l * l) @ (inv * inv).T - 2 * l @ (mu * inv * inv).T + ((mu * inv) ** 2).sum(1)
        logp = torch.log(pi) - torch.log(sigma).sum(1) - 0.5 * l.shape[1] * math.log(2 * math.pi) - 0.5 * quad
        return torch.softmax(logp, dim=1)

    def _block_dims(self):
        k, d = self.n_components, self.n_dims_
        return (k if self.include_pi else 0) + 2 * k * d

    @staticmethod
    def _moments(g, l, pi, mu, sigma, n_r):
        """Psi_mu and Psi_sigma parts (K, D) of one region from masked posteriors g (Eqs. (4.2)-(4.3))."""
        s0, s1, s2 = g.sum(0)[:, None], g.T @ l, g.T @ (l * l)
        sq = pi.sqrt()[:, None]
        fmu = (s1 - s0 * mu) / sigma / sq / n_r
        fsig = ((s2 - 2 * mu * s1 + mu * mu * s0) / sigma**2 - s0) / (sq * math.sqrt(2)) / n_r
        return fmu, fsig

    def _encode_one(self, l, members, params):
        pi, mu, sigma = params
        gamma = self._posteriors(l, pi, mu, sigma)
        blocks = []
        for r in range(members.shape[1]):
            g = gamma * members[:, r:r + 1].to(gamma.dtype)
            n_live = float(members[:, r].sum())
            n_r = max(n_live, 1.0)
            fmu, fsig = self._moments(g, l, pi, mu, sigma, n_r)
            parts = [fmu.reshape(-1), fsig.reshape(-1)]
            if self.include_pi:
                parts.insert(0, (g.sum(0) - n_live * pi) / pi.sqrt() / n_r)  # Eq. (4.1)
            blocks.append(torch.cat(parts))
        return torch.cat(blocks)

    def _encode(self, x, config):
        params = self._params(config)
        out = []
        for i in range(x.shape[0]):
            geo, desc = x[i, :, :N_GEOMETRY], x[i, :, N_GEOMETRY:]
            out.append(self._encode_one(self._project(desc, config), region_members(geo, self.levels_), params))
        return torch.stack(out)

    def transform(self, X):
        """Unnormalised Fisher vectors.

        Parameters
        ----------
        X : array-like of shape (n_images, n_descriptors, 5 + n_dims)

        Returns
        -------
        ndarray of shape (n_images, n_regions_ * ((1 if include_pi else 0) + 2 * n_dims_) * n_components)
        """
        check_is_fitted(self, "gmm_")
        n_in = self.gmm_.means_.shape[1] if self.pca_ is None else self.pca_.n_features_in_
        X = check_descriptor_array(X, "FisherVectorEncoder", n_in)
        cfg = RuleConfig(None)
        return self._encode(cfg.tensor(X), cfg).numpy()


@register(FisherVectorEncoder)
class FisherVectorPropagator(Propagator):
    """Fisher-vector dimensions -> descriptors (Eqs. (4.9)-(4.10), (2.79), (D.3)).

    The encoder averages, ``x_d = sum_l Psi(l)_d / |L_r|`` (Eq. (4.5)); the decomposition
    follows Eqs. (4.9)-(4.10), ``z_ld = Psi(l)_d`` and ``z_d = sum_l z_ld = |L_r| x_d``. The
    shares ``z_ld / z_d`` are the same either way, but a stabiliser is not: the epsilon
    rule's ``z_d + eps sign(z_d)`` acts on the thesis' ``z_d``, so ``epsilon`` means what it
    means in Chapter 4 (Fig. 4.3, ``epsilon = 100``, Appendix D.1.1). On the encoder's mean
    scale the same rule is ``x_d + (eps / |L_r|) sign(x_d)``.

    For quotient rules (:attr:`sklrp.rules.Rule.quotient`: z, epsilon) the relevance
    ``R_l = sum_d z_ld c_d`` with ``c_d = R_d / stab(z_d)`` is computed
    without forming the ``(n_desc x FV-dim)`` matrix: up to ``n_desc * K * D = 2^25``
    from ``u = (l - mu_k) / sigma_k`` in descriptor chunks, above that by expanding it
    into products of the ``(n_desc x K)`` posteriors with ``(K x D)`` matrices (the
    encoder's own cost; a few digits are lost where ``z_d`` is small). The result is per
    descriptor *dimension* (Eq. (D.3)); the
    Psi_pi part, which has no dimension, is spread evenly over the descriptor's
    dimensions. With PCA, per-dimension relevance goes back through the projection
    by the configured rule (Eq. (2.31)); the PCA mean absorbs relevance like a bias.
    Other rules (alpha-beta, flat, gamma, the magnitude rule of Eq. (2.7)) use the
    chunked generic decomposition with descriptor-level output.

    Empty dimensions (``gamma_k(l) = 0`` for all descriptors of the region) follow
    Eq. (2.79): ``R_d / |L_r|`` to each descriptor, on the dimension ``d`` refers to.

    With the z-rule the layer is conservative up to dimensions with ``z_d = 0``
    exactly: ``sum_l R_l = sum_d R_d``. On the expanded path, a dimension whose ``z_d``
    vanishes only up to rounding (e.g. a GMM component sitting exactly on many identical
    descriptors, such as the all-zero descriptors of flat image regions) makes the
    z-rule amplify rounding errors; the epsilon rule (the thesis' choice, Appendix
    D.1.1) is safe.
    """

    accepts_nd = True

    def forward(self, x, config):
        return self.step._encode(x, config)

    def backward(self, x, relevance, config):
        rule = config.rule
        check_pool_rule(rule, "FisherVectorEncoder")
        st = self.step
        params = st._params(config)
        out = torch.zeros_like(x)
        bias = x.new_zeros(x.shape[0])
        for i in range(x.shape[0]):
            geo, raw = x[i, :, :N_GEOMETRY], x[i, :, N_GEOMETRY:]
            l = st._project(raw, config)
            members = region_members(geo, st.levels_)
            if rule.quotient:  # R_{l<-d} = z_ld s_d: decomposed down to descriptor dimensions (Eq. (D.3))
                r_dim = self._fast(l, members, relevance[i], rule, params)
            else:
                r_l = self._generic(l, members, relevance[i], rule, params)
                r_dim = (r_l / l.shape[1])[:, None].expand_as(l)
            if st.pca_ is None:
                out[i, :, N_GEOMETRY:] = r_dim
            elif rule.quotient:  # per-dimension relevance through the projection by the rule (Eq. (2.31))
                w = config.tensor(st.pca_.components_.T)
                step = rule.propagate(DenseMap(w, -config.tensor(st.pca_.mean_) @ w), raw, r_dim)
                out[i, :, N_GEOMETRY:] = step.input
                bias[i] = step.bias.sum()
            else:  # descriptor-level rules: keep R_l, spread over the raw dimensions
                out[i, :, N_GEOMETRY:] = (r_dim.sum(1) / raw.shape[1])[:, None]
        return LayerRelevance(out, bias)

    def _split(self, r_block):
        k, d = self.step.n_components, self.step.n_dims_
        off = k if self.step.include_pi else 0
        r_pi = r_block[:off] if off else None
        return r_pi, r_block[off:off + k * d].view(k, d), r_block[off + k * d:].view(k, d)

    def _fast(self, l, members, relevance, rule, params):
        st = self.step
        pi, mu, sigma = params
        gamma = st._posteriors(l, pi, mu, sigma)
        n_desc, dim = l.shape
        block = st._block_dims()
        out = torch.zeros_like(l)
        sq = pi.sqrt()[:, None]
        for r in range(members.shape[1]):
            mem = members[:, r]
            n_r = int(mem.sum())
            sl = slice(r * block, (r + 1) * block)
            rel = relevance[sl]
            if n_r == 0:  # empty region: Eq. (2.79) over the whole image
                out += rel.sum() / (n_desc * dim)
                continue
            memf = mem[:, None].to(gamma.dtype)
            g = gamma * memf
            # rescale each component's posteriors by their maximum: far components have gamma ~ 1e-300,
            # and z_ld / z_d is scale-free, so this avoids overflow in R_d / z_d
            scale = g.amax(0)
            live_k = scale > 0
            scale = torch.where(live_k, scale, torch.ones_like(scale))
            gs = g / scale
            # small problems: u = (l - mu) / sigma explicitly, in descriptor chunks (no cancellation);
            # large ones: the expansion into (n_desc x K) @ (K x D) products, the encoder's own cost
            direct = n_desc * len(pi) * dim <= self.direct_limit
            if direct:
                zmu, zsig = l.new_zeros(mu.shape), l.new_zeros(mu.shape)
                for lo, hi, u in self._chunks(l, mu, sigma):
                    w = gs[lo:hi, :, None]
                    zmu += (w * u).sum(0)
                    zsig += (w * (u * u - 1)).sum(0)
                zmu, zsig = zmu / sq / n_r, zsig / (sq * math.sqrt(2)) / n_r
            else:
                zmu, zsig = st._moments(gs, l, pi, mu, sigma, n_r)
            r_pi, r_mu, r_sig = self._split(rel)
            live = live_k[:, None].to(l.dtype)
            # c_d = R_d / stab(z_d): zmu, zsig are in units of scale_k / n_r of the thesis' z_d = sum_l Psi(l)_d
            unit = (scale * n_r)[:, None]
            c_mu = rule.scale(r_mu, zmu, unit=unit) * live
            c_sig = rule.scale(r_sig, zsig, unit=unit) * live
            if direct:
                per_dim = torch.empty_like(l)
                am, asg = (c_mu / sq)[None], (c_sig / (sq * math.sqrt(2)))[None]
                for lo, hi, u in self._chunks(l, mu, sigma):
                    per_dim[lo:hi] = (gs[lo:hi, :, None] * (u * am + (u * u - 1) * asg)).sum(1)
            else:
                # sum_k gamma_k [(l - mu)/sigma c_mu + ((l - mu)^2/sigma^2 - 1) c_sig / sqrt2] / sqrt(pi), expanded
                a = c_mu / sigma / sq
                b = c_sig / sigma**2 / (sq * math.sqrt(2))
                cc = c_sig / (sq * math.sqrt(2))
                per_dim = l * (gs @ a) + l * l * (gs @ b) - 2 * l * (gs @ (mu * b)) + gs @ (mu * mu * b - mu * a - cc)
            if r_pi is not None:
                z_pi_l = (g - pi[None] * memf) / pi.sqrt()[None]  # n_r * z_ld, Eq. (4.1)
                c_pi = rule.scale(r_pi, z_pi_l.sum(0) / n_r, unit=torch.full_like(pi, float(n_r)))
                per_dim = per_dim + (z_pi_l @ c_pi)[:, None] / dim
            out += per_dim * memf / n_r
            # Eq. (2.79) fallback for components no descriptor of the region reaches
            dead = ~live_k
            if bool(dead.any()):
                spread = (r_mu[dead].sum(0) + r_sig[dead].sum(0)) / n_r
                out += memf * spread[None]
        return out

    #: largest n_desc * K * D handled with explicit (l - mu) / sigma (memory per chunk is bounded separately)
    direct_limit = 1 << 25

    @staticmethod
    def _chunks(l, mu, sigma, budget=1 << 22):
        step = max(1, budget // (mu.shape[0] * mu.shape[1]))
        for lo in range(0, l.shape[0], step):
            hi = min(lo + step, l.shape[0])
            yield lo, hi, (l[lo:hi, None, :] - mu[None]) / sigma[None]

    def _generic(self, l, members, relevance, rule, params):
        st = self.step
        pi, mu, sigma = params
        gamma = st._posteriors(l, pi, mu, sigma)
        count = members.sum(0).clamp(min=1).to(l.dtype)
        n_reg = members.shape[1]

        def zfn(lo, hi):
            g, ll = gamma[lo:hi], l[lo:hi]
            u = (ll[:, None, :] - mu[None]) / sigma[None]
            sq = pi.sqrt()[None, :, None]
            parts = [(g[:, :, None] * u / sq).flatten(1),
                     (g[:, :, None] * (u * u - 1) / (sq * math.sqrt(2))).flatten(1)]
            if st.include_pi:
                parts.insert(0, (g - pi[None]) / pi.sqrt()[None])
            psi = torch.cat(parts, dim=1)
            mem = members[lo:hi].to(l.dtype) / count[None]
            return (mem[:, :, None] * psi[:, None, :]).reshape(hi - lo, -1)

        bag = torch.arange(n_reg, device=l.device).repeat_interleave(st._block_dims())
        # the contributions are Psi(l)_d / |L_r|; the thesis' z_ld = Psi(l)_d (Eqs. (4.9)-(4.10))
        return decompose_pool(zfn, l.shape[0], relevance, rule, bag, members, chunk=256, unit=count[bag])


class PowerNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Power and l2 normalisation of Fisher vectors (Eq. (4.5)).

    ``x <- sign(x) |x|^power`` then ``x <- x / ||x||_2``. With ``power=0.5`` and a
    linear model on top this is the Hellinger kernel on the unnormalised vectors
    (Eq. (4.6)); its propagator passes relevance unchanged (Eq. (4.8)).

    Parameters
    ----------
    power : float, default=0.5
        Exponent in ``(0, 1]``.
    norm : {"l2", "l1", None}, default="l2"

    Attributes
    ----------
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.bow import PowerNormalizer
    >>> PowerNormalizer().fit_transform(np.array([[4.0, -9.0]])).round(4)
    array([[ 0.5547, -0.8321]])
    """

    def __init__(self, power=0.5, norm="l2"):
        self.power = power
        self.norm = norm

    def fit(self, X, y=None):
        """Validate parameters and input.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : PowerNormalizer
        """
        if not isinstance(self.power, numbers.Real) or not 0 < self.power <= 1:
            raise ValueError(f"PowerNormalizer: power must be in (0, 1], got {self.power!r}")
        if self.norm not in ("l1", "l2", None):
            raise ValueError(f"PowerNormalizer: norm must be 'l1', 'l2' or None, got {self.norm!r}")
        validate_data(self, X, reset=True)
        return self

    def _apply(self, x):
        return normalise_rows(torch.sign(x) * x.abs().pow(self.power), self.norm)

    def transform(self, X):
        """Normalised vectors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self, "n_features_in_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._apply(torch.from_numpy(np.array(X, dtype=np.float64))).numpy()


@register(PowerNormalizer)
class PowerNormalizerPropagator(Propagator):
    """Identity backward pass: the normalisation is the Hellinger feature map (Eqs. (4.6), (4.8))."""

    def forward(self, x, config):
        return self.step._apply(x)

    def backward(self, x, relevance, config):
        return LayerRelevance(relevance, x.new_zeros(x.shape[0]))

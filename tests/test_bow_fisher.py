"""Fisher vectors (Eqs. (4.1)-(4.6)) and their LRP decomposition (Eqs. (4.8)-(4.10), (D.3))."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklrp
from sklrp.propagators import RuleConfig, propagator_for
from sklrp.bow import N_GEOMETRY, DenseSIFT, FisherVectorEncoder, PowerNormalizer
from sklrp.rules import AbsZ, AlphaBeta, Epsilon, Flat, Gamma, Z


def _images(n=5, size=36, seed=0):
    rng = np.random.RandomState(seed)
    X = 0.1 * rng.rand(n, size, size)
    for i in range(n):
        r, c = rng.randint(2, size - 12, size=2)
        X[i, r:r + 10, c:c + 10] += 1.0
    return X


@pytest.fixture(scope="module")
def descriptors():
    X = _images()
    # no contrast threshold: identical all-zero descriptors would put a GMM component exactly on them, whose
    # z_d then vanish only up to rounding (see FisherVectorPropagator's note on the z-rule, expanded path)
    return DenseSIFT(scales=(1.5,), steps=(4,), contrast_threshold=0.0, backend="numpy").fit_transform(X)


def _psi(enc, l):
    """Psi_lambda(l) by Eqs. (4.1)-(4.4) with loops over components and dimensions."""
    g = enc.gmm_
    if enc.pca_ is not None:
        l = enc.pca_.transform(l[None])[0]
    k, dim = g.means_.shape
    logp = np.array([np.log(g.weights_[c]) + sum(
        -0.5 * np.log(2 * np.pi * g.covariances_[c, i]) - 0.5 * (l[i] - g.means_[c, i]) ** 2 / g.covariances_[c, i]
        for i in range(dim)) for c in range(k)])
    gamma = np.exp(logp - logp.max())
    gamma /= gamma.sum()
    pi_part, mu_part, sig_part = [], [], []
    for c in range(k):
        pi, s = g.weights_[c], np.sqrt(g.covariances_[c])
        pi_part.append((gamma[c] - pi) / np.sqrt(pi))
        for i in range(dim):
            u = (l[i] - g.means_[c, i]) / s[i]
            mu_part.append(gamma[c] / np.sqrt(pi) * u)
            sig_part.append(gamma[c] / np.sqrt(2 * pi) * (u * u - 1))
    return np.array((pi_part if enc.include_pi else []) + mu_part + sig_part), gamma


def _regions(geo, levels):
    out = []
    for rows, ncol in levels:
        for r in range(rows):
            for c in range(ncol):
                out.append([min(int((y + 0.5) / h * rows), rows - 1) == r
                            and min(int((x + 0.5) / w * ncol), ncol - 1) == c
                            for x, y, _, h, w in geo])
    return np.array(out).T


def _ref_z(enc, xt):
    """z_ld = Psi(l)_d / |L_r| per region block (Eqs. (4.9)-(4.10)), as (n_desc, n_dims)."""
    psi = np.array([_psi(enc, l)[0] for l in xt[:, N_GEOMETRY:]])
    regions = _regions(xt[:, :N_GEOMETRY], enc.levels_)
    blocks = [psi * regions[:, [r]] / max(regions[:, r].sum(), 1) for r in range(regions.shape[1])]
    return np.concatenate(blocks, axis=1), regions


CONFIGS = [dict(), dict(include_pi=True, pyramid=((1, 1), (2, 2))), dict(pca_components=6)]


@pytest.mark.parametrize("params", CONFIGS)
def test_fisher_vector_matches_loop_reference(descriptors, params):
    enc = FisherVectorEncoder(3, random_state=0, **params).fit(descriptors)
    F = enc.transform(descriptors[:2])
    for i in range(2):
        z, _ = _ref_z(enc, descriptors[i])
        np.testing.assert_allclose(F[i], z.sum(0), atol=1e-10)  # x_d = sum_l z_ld (Eq. (4.9))


def test_fisher_vector_equals_vlfeat_improved(descriptors):
    fisher = pytest.importorskip(
        "cyvlfeat.fisher", reason="cyvlfeat not installed: FV cross-check against VLFeat skipped").fisher
    enc = FisherVectorEncoder(4, random_state=0).fit(descriptors)
    ours = PowerNormalizer().fit_transform(enc.transform(descriptors))
    g = enc.gmm_
    for i in range(len(descriptors)):
        ref = fisher(descriptors[i, :, N_GEOMETRY:].astype(np.float32), g.means_.astype(np.float32),
                     g.covariances_.astype(np.float32), g.weights_.astype(np.float32), improved=True)
        np.testing.assert_allclose(ours[i], np.ravel(ref), atol=1e-5)


def test_power_normalizer_is_hellinger_map():
    """Eq. (4.6): signed sqrt + l2 = sign(x) sqrt(|x| / ||x||_1)."""
    X = np.random.RandomState(0).randn(5, 7)
    out = PowerNormalizer().fit_transform(X)
    np.testing.assert_allclose(out, np.sign(X) * np.sqrt(np.abs(X) / np.abs(X).sum(1, keepdims=True)), atol=1e-12)
    prop = propagator_for(PowerNormalizer().fit(X))
    cfg = RuleConfig(Z())
    R = cfg.tensor(X)
    assert torch.equal(prop.backward(cfg.tensor(X), R, cfg).input, R)  # Eq. (4.8): passes unchanged
    with pytest.raises(ValueError, match="power"):
        PowerNormalizer(power=2.0).fit(X)


def _ref_backward(enc, xt, R, rule):
    """R_l <- d = z_ld / stab(z_d) R_d with the fallback of Eq. (2.79), loops over l and d."""
    z, regions = _ref_z(enc, xt)
    n_desc, n_dims = z.shape
    block = n_dims // regions.shape[1]
    gammas = np.array([_psi(enc, l)[1] for l in xt[:, N_GEOMETRY:]])
    r_l = np.zeros(n_desc)
    k = enc.n_components
    off = k if enc.include_pi else 0
    for d in range(n_dims):
        r, dd = divmod(d, block)
        bag = np.where(regions[:, r])[0]
        comp = dd if dd < off else ((dd - off) // enc.n_dims_) % k
        reached = dd < off or any(gammas[j, comp] > 0 for j in bag)
        if not reached:
            r_l[bag] += R[d] / len(bag)
            continue
        # Eqs. (4.9)-(4.10): z_ld = Psi(l)_d, i.e. |L_r| times the encoder's (mean) contribution
        zt = z[:, d] * len(bag)
        zd = zt.sum()
        stab = zd if isinstance(rule, Z) else zd + rule.epsilon * (1 if zd >= 0 else -1)
        if stab == 0:
            continue
        for j in bag:
            r_l[j] += zt[j] / stab * R[d]
    return r_l


@pytest.mark.parametrize("params", CONFIGS[:2])
@pytest.mark.parametrize("rule", [Z(), Epsilon(0.1)])
def test_fv_propagator_matches_loop_reference(descriptors, params, rule):
    enc = FisherVectorEncoder(3, random_state=0, **params).fit(descriptors)
    prop = propagator_for(enc)
    cfg = RuleConfig(rule)
    x = cfg.tensor(descriptors[:2])
    f = prop.forward(x, cfg)
    R = torch.randn(f.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = prop.backward(x, R, cfg)
    r_l = out.input[..., N_GEOMETRY:].sum(-1).numpy()
    for i in range(2):
        np.testing.assert_allclose(r_l[i], _ref_backward(enc, descriptors[i], R[i].numpy(), rule), rtol=1e-7,
                                   atol=1e-8)
    if isinstance(rule, Z) and not enc.include_pi:
        np.testing.assert_allclose(r_l.sum(1), R.sum(1).numpy(), rtol=1e-8)  # sum_l R_l = sum_d R_d


@pytest.mark.parametrize("eps", [0.1, 100.0])
def test_fv_epsilon_acts_on_the_thesis_scale(descriptors, eps):
    """Eq. (4.9): z_d = sum_l Psi(l)_d, |L| times the encoder's mean, so Epsilon(eps) on the FV layer equals the
    epsilon rule on the mean-scale contributions with eps / |L| (one region here: |L| = n_desc)."""
    enc = FisherVectorEncoder(2, random_state=0).fit(descriptors)
    prop = propagator_for(enc)
    cfg = RuleConfig(Epsilon(eps))
    x = cfg.tensor(descriptors[:1])
    f = prop.forward(x, cfg)
    R = f.clone()
    r_l = prop.backward(x, R, cfg).input[0, :, N_GEOMETRY:].sum(-1).numpy()
    z, _ = _ref_z(enc, descriptors[0])  # the encoder's contributions Psi(l)_d / |L|
    n = z.shape[0]
    zd = z.sum(0)
    mean_scale = (z / (zd + eps / n * np.where(zd >= 0, 1.0, -1.0)) * R[0].numpy()).sum(1)
    np.testing.assert_allclose(r_l, mean_scale, rtol=1e-7, atol=1e-10)
    # the share of sum_d R_d that reaches the descriptors, (sum_d z_d R_d / (z_d + eps sign z_d)) / sum_d R_d
    kept = (n * zd * R[0].numpy() / (n * zd + eps * np.where(zd >= 0, 1.0, -1.0))).sum() / R.sum().item()
    np.testing.assert_allclose(r_l.sum() / R.sum().item(), kept, rtol=1e-7)


def test_fv_per_dimension_relevance_eq_d3(descriptors):
    """Eq. (D.3): R_{l_i} = sum_k Psi_mu_k(l)_i / z R + Psi_sigma_k(l)_i / z R (no PCA, z-rule)."""
    enc = FisherVectorEncoder(2, random_state=0).fit(descriptors)
    prop = propagator_for(enc)
    cfg = RuleConfig(Z())
    x = cfg.tensor(descriptors[:1])
    f = prop.forward(x, cfg)
    R = torch.randn(f.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = prop.backward(x, R, cfg).input[0, :, N_GEOMETRY:].numpy()
    z, _ = _ref_z(enc, descriptors[0])
    k, dim = 2, enc.n_dims_
    ref = np.zeros_like(out)
    for j in range(z.shape[0]):
        for i in range(dim):
            for c in range(k):
                for d in (c * dim + i, k * dim + c * dim + i):  # delta(i, Psi_mu_k), delta(i, Psi_sigma_k)
                    ref[j, i] += z[j, d] / z[:, d].sum() * R[0, d].item()
    np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-9)


def test_fv_fallback_for_unreached_components(descriptors):
    enc = FisherVectorEncoder(3, random_state=0).fit(descriptors)
    enc.gmm_.means_[1] += 1e3  # component 1 is far from every descriptor: gamma_1(l) = 0
    prop = propagator_for(enc)
    cfg = RuleConfig(Z())
    x = cfg.tensor(descriptors[:1])
    f = prop.forward(x, cfg)
    dim = enc.n_dims_
    dead = np.zeros(f.shape[1], dtype=bool)
    dead[dim:2 * dim] = dead[3 * dim + dim:3 * dim + 2 * dim] = True
    assert np.all(f[0].numpy()[dead] == 0)
    R = torch.zeros_like(f)
    R[0, dim + 5] = 2.0  # mu part of the dead component, descriptor dimension 5
    out = prop.backward(x, R, cfg).input[0, :, N_GEOMETRY:].numpy()
    n_desc = out.shape[0]
    np.testing.assert_allclose(out[:, 5], 2.0 / n_desc)  # Eq. (2.79), on the dimension d refers to
    assert np.abs(np.delete(out, 5, axis=1)).max() == 0


def test_fv_pca_path_conserves_with_bias(descriptors):
    enc = FisherVectorEncoder(2, pca_components=6, random_state=0).fit(descriptors)
    prop = propagator_for(enc)
    cfg = RuleConfig(Z())
    x = cfg.tensor(descriptors[:2])
    f = prop.forward(x, cfg)
    R = torch.randn(f.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = prop.backward(x, R, cfg)
    # z-rule through the PCA projection: sum R_raw + R_mean = sum R_pca (= sum_d R_d here)
    total = out.input[..., N_GEOMETRY:].sum((1, 2)) + out.bias
    np.testing.assert_allclose(total.numpy(), R.sum(1).numpy(), rtol=1e-6)


@pytest.mark.parametrize("rule", [AlphaBeta(2.0, -1.0), Flat(), Gamma(0.5), AbsZ()], ids=repr)
def test_fv_generic_rules(descriptors, rule):
    enc = FisherVectorEncoder(2, random_state=0, pyramid=((1, 1), (1, 2))).fit(descriptors)
    prop = propagator_for(enc)
    cfg = RuleConfig(rule)
    x = cfg.tensor(descriptors[:1])
    f = prop.forward(x, cfg)
    R = f.clone()
    out = prop.backward(x, R, cfg).input[0, :, N_GEOMETRY:].sum(-1)
    z, regions = _ref_z(enc, descriptors[0])
    ref = np.zeros(z.shape[0])
    block = z.shape[1] // regions.shape[1]
    for d in range(z.shape[1]):
        col = z[:, d]
        if isinstance(rule, Flat):  # Eq. (2.27): the receptive field of d is its region's descriptors
            bag = regions[:, d // block]
            ref[bag] += R[0, d].item() / bag.sum()
        elif isinstance(rule, (Gamma, AbsZ)):  # z_ld + gamma z+_ld, or |z_ld| (Eq. (2.7), Fig. 4.3)
            v = col + rule.gamma * col.clip(min=0) if isinstance(rule, Gamma) else np.abs(col)
            if v.sum() != 0:
                ref += v / v.sum() * R[0, d].item()
        else:
            zp, zn = col.clip(min=0), col.clip(max=0)
            if zp.sum() > 0:
                ref += rule.alpha * zp / zp.sum() * R[0, d].item()
            if zn.sum() < 0:
                ref += rule.beta * zn / zn.sum() * R[0, d].item()
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-7, atol=1e-10)


def test_fv_pipeline_to_pixels(descriptors):
    X = _images(10, 36, seed=1)
    y = np.arange(10) % 2
    X[y == 1, :8, :8] = 1.0
    pipe = make_pipeline(DenseSIFT(scales=(1.5,), steps=(4,), backend="numpy"),
                         FisherVectorEncoder(2, random_state=0), PowerNormalizer(), LinearSVC()).fit(X, y)
    E = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z", dtype="float64").fit(X, y).explain(X[:3])
    assert E.relevance.shape == (3, 36, 36)
    np.testing.assert_allclose(E.relevance.sum((1, 2)) + E.bias_relevance, E.output, rtol=1e-7)


def test_fv_bad_input(descriptors):
    with pytest.raises(ValueError, match="n_components"):
        FisherVectorEncoder(0).fit(descriptors)
    with pytest.raises(ValueError, match="pca_components"):
        FisherVectorEncoder(2, pca_components=500).fit(descriptors)
    with pytest.raises(ValueError, match="5 \\+ n_dims"):
        FisherVectorEncoder(2).fit(np.zeros((4, 3)))
    with pytest.raises(NotFittedError):
        FisherVectorEncoder(2).transform(descriptors)
    enc = FisherVectorEncoder(2, random_state=0).fit(descriptors)
    with pytest.raises(ValueError, match="fitted on 128-dimensional"):
        enc.transform(descriptors[..., :-1])


@parametrize_with_checks([PowerNormalizer()])
def test_power_normalizer_estimator_checks(estimator, check):
    check(estimator)


def test_fv_dimension_relevance_with_bin_geometry_is_finer_and_conserves():
    """Eq. (D.3) + SIFT bin geometry (Appendix D.1.2): 16x finer maps, still conservative."""
    X = _images(8, 36, seed=2)
    y = np.arange(8) % 2
    pipe = make_pipeline(DenseSIFT(scales=(1.5,), steps=(8,), contrast_threshold=0.0, backend="numpy"),
                         FisherVectorEncoder(2, random_state=0), PowerNormalizer(), LinearSVC()).fit(X, y)
    maps = {}
    for mapping in ("descriptor", "bins"):
        pipe[0].set_params(pixel_mapping=mapping)  # only changes the backward pass
        E = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z", dtype="float64").fit(X, y).explain(X[:2])
        np.testing.assert_allclose(E.relevance.sum((1, 2)) + E.bias_relevance, E.output, rtol=1e-8)
        maps[mapping] = E.relevance
    # same total, different (finer) spatial distribution
    np.testing.assert_allclose(maps["bins"].sum((1, 2)), maps["descriptor"].sum((1, 2)), rtol=1e-10)
    assert not np.allclose(maps["bins"], maps["descriptor"])
    n_levels = [len(np.unique(np.round(m[0], 12))) for m in (maps["descriptor"], maps["bins"])]
    assert n_levels[1] > n_levels[0]


@pytest.mark.parametrize("params", CONFIGS)
def test_fv_expanded_path_matches_direct_path(descriptors, params):
    """Large images use the (n_desc x K) @ (K x D) expansion; it agrees with explicit (l - mu) / sigma."""
    enc = FisherVectorEncoder(3, random_state=0, **params).fit(descriptors)
    cfg = RuleConfig(Epsilon(0.01))
    x = cfg.tensor(descriptors[:2])
    prop = propagator_for(enc)
    R = torch.randn(prop.forward(x, cfg).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    direct = prop.backward(x, R, cfg)
    prop.direct_limit = 0
    expanded = prop.backward(x, R, cfg)
    np.testing.assert_allclose(expanded.input.numpy(), direct.input.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(expanded.bias.numpy(), direct.bias.numpy(), rtol=1e-6, atol=1e-9)

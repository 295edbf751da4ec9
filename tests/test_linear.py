"""Linear models and linear preprocessing: exact decomposition, references, conservation."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.decomposition import PCA, IncrementalPCA, TruncatedSVD
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    Normalizer,
    QuantileTransformer,
    StandardScaler,
)
from sklearn.svm import LinearSVC

import sklrp
from sklrp.propagators import RuleConfig, propagator_for
from sklrp.linear import elementwise
from sklrp.rules import Epsilon, Z

RNG = np.random.RandomState(0)
X_BIN, Y_BIN = make_classification(n_samples=60, n_features=6, random_state=0)
X_MC, Y_MC = make_classification(n_samples=90, n_features=6, n_informative=4, n_classes=3, random_state=1)
X_REG, Y_REG = make_regression(n_samples=50, n_features=5, n_targets=2, random_state=2)


def _scores(model, X):
    s = model.decision_function(X) if hasattr(model, "decision_function") else model.predict(X)
    return s.reshape(len(X), -1)


CLASSIFIERS = [
    LogisticRegression(),
    LinearSVC(),
    SGDClassifier(random_state=0),
    RidgeClassifier(),
]


@pytest.mark.parametrize("model", CLASSIFIERS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("X,y", [(X_BIN, Y_BIN), (X_MC, Y_MC)], ids=["binary", "multiclass"])
def test_linear_classifiers_exact_decomposition(model, X, y):
    model = model.fit(X, y)
    lrp = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X, y)
    E = lrp.explain(X)
    scores = _scores(model, X)
    W = np.atleast_2d(model.coef_)
    b = np.atleast_1d(model.intercept_)
    for n in range(len(X)):  # loop reference: R_d = w_d x_d, R_b = b (Eqs. (2.14)-(2.15))
        k = list(model.classes_).index(E.target[n])
        if scores.shape[1] == 1:
            sign = 1.0 if k == 1 else -1.0
            ref = [sign * W[0, d] * X[n, d] for d in range(X.shape[1])]
            ref_b, ref_out = sign * b[0], sign * scores[n, 0]
        else:
            ref = [W[k, d] * X[n, d] for d in range(X.shape[1])]
            ref_b, ref_out = b[k], scores[n, k]
        np.testing.assert_allclose(E.relevance[n], ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(E.bias_relevance[n], ref_b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(E.output[n], ref_out, rtol=1e-10)
    # conservation, exact for linear models whatever the rule
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(E.residual, 0, atol=1e-10)
    np.testing.assert_array_equal(E.target, model.predict(X))


@pytest.mark.parametrize("model", [LinearRegression(), Ridge(alpha=0.1)], ids=lambda m: type(m).__name__)
def test_linear_regressors_single_and_multi_output(model):
    single = clone_fit(model, X_REG, Y_REG[:, 0])
    E = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(single)).fit(X_REG).explain(X_REG)
    np.testing.assert_allclose(E.output, single.predict(X_REG), rtol=1e-10)
    np.testing.assert_allclose(E.relevance, X_REG * single.coef_, rtol=1e-10)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10)

    multi = clone_fit(model, X_REG, Y_REG)
    lrp = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(multi)).fit(X_REG)
    for k in range(2):
        E = lrp.explain(X_REG, target=k)
        np.testing.assert_allclose(E.output, multi.predict(X_REG)[:, k], rtol=1e-10)
        np.testing.assert_allclose(E.relevance, X_REG * multi.coef_[k], rtol=1e-10)
    with pytest.raises(ValueError, match="ambiguous for a regressor with 2 outputs"):
        lrp.explain(X_REG)
    with pytest.raises(ValueError, match="output index"):
        lrp.explain(X_REG, target=5)


def clone_fit(model, X, y):
    from sklearn.base import clone

    return clone(model).fit(X, y)


def test_standard_scaler_matches_eq_2_54_loop():
    X = RNG.randn(7, 4) * 3 + 1
    sc = StandardScaler().fit(X)
    prop = propagator_for(sc)
    cfg = RuleConfig(Z())
    x = cfg.tensor(X)
    z = prop.forward(x, cfg)
    np.testing.assert_allclose(z.numpy(), sc.transform(X), rtol=1e-12)
    R = RNG.randn(7, 4)
    res = prop.backward(x, cfg.tensor(R), cfg)
    s = 1 / sc.scale_
    for n in range(7):
        for d in range(4):
            zz = (X[n, d] - sc.mean_[d]) * s[d]
            # Eq. (2.54) without beta: R = x * s * R_z / z; the mean absorbs -mu s R_z / z (Eq. (2.53))
            np.testing.assert_allclose(res.input[n, d].item(), X[n, d] * s[d] * R[n, d] / zz, rtol=1e-10)
    mu_rel = (-sc.mean_ * s * R / sc.transform(X)).sum(1)
    np.testing.assert_allclose(res.bias.numpy(), mu_rel, rtol=1e-10)
    np.testing.assert_allclose((res.input.sum(1) + res.bias).numpy(), R.sum(1), rtol=1e-10)


@pytest.mark.parametrize(
    "step",
    [
        StandardScaler(),
        StandardScaler(with_mean=False),
        StandardScaler(with_std=False),
        MinMaxScaler(),
        MinMaxScaler(feature_range=(-1, 2)),
        Normalizer(),
        Normalizer(norm="l1"),
        Normalizer(norm="max"),
        PCA(3),
        PCA(3, whiten=True),
        IncrementalPCA(3),
        TruncatedSVD(3),
        FunctionTransformer(np.tanh),
        FunctionTransformer(),
    ],
    ids=lambda s: repr(s),
)
def test_forward_replay_equals_transform_and_z_rule_conserves(step):
    step = step.fit(RNG.rand(12, 5) + 0.1)
    # fresh samples: a training minimum maps to exactly 0, the z-rule's documented 0/0 case
    X = RNG.rand(12, 5) + 0.1
    prop = propagator_for(step)
    cfg = RuleConfig(Z())
    x = cfg.tensor(X)
    out = prop.forward(x, cfg)
    np.testing.assert_allclose(out.numpy(), step.transform(X), rtol=1e-10, atol=1e-12)
    R = cfg.tensor(RNG.randn(*out.shape))
    res = prop.backward(x, R, cfg)
    assert res.input.shape == x.shape
    np.testing.assert_allclose((res.input.sum(1) + res.bias).numpy(), R.sum(1).numpy(), rtol=1e-9, atol=1e-12)


def test_pca_propagator_matches_dense_loop_reference_with_epsilon():
    X = RNG.randn(6, 4)
    pca = PCA(2, whiten=True).fit(X)
    W = pca.components_.T / np.sqrt(pca.explained_variance_)
    b = -pca.mean_ @ W
    R = RNG.randn(6, 2)
    cfg = RuleConfig(Epsilon(0.5))
    res = propagator_for(pca).backward(cfg.tensor(X), cfg.tensor(R), cfg)
    ref = np.zeros_like(X)
    for n in range(6):
        for j in range(2):
            z = sum(X[n, i] * W[i, j] for i in range(4)) + b[j]
            st = z + 0.5 * (1 if z >= 0 else -1)
            for i in range(4):
                ref[n, i] += X[n, i] * W[i, j] / st * R[n, j]
    np.testing.assert_allclose(res.input.numpy(), ref, rtol=1e-10)


def test_minmax_clip_sends_clipped_relevance_to_bias():
    X = np.array([[0.0, 1.0], [1.0, 2.0], [0.5, 1.5]])
    sc = MinMaxScaler(clip=True).fit(X)
    X_test = np.array([[2.0, 1.5]])  # first feature is clipped at 1
    cfg = RuleConfig(Z())
    prop = propagator_for(sc)
    np.testing.assert_allclose(prop.forward(cfg.tensor(X_test), cfg).numpy(), sc.transform(X_test))
    res = prop.backward(cfg.tensor(X_test), cfg.tensor([[1.0, 1.0]]), cfg)
    assert res.input[0, 0].item() == 0.0
    np.testing.assert_allclose(res.input.sum().item() + res.bias.sum().item(), 2.0)


def test_pipeline_scaler_pca_logreg_z_rule_is_gradient_times_input():
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), PCA(3), LogisticRegression()).fit(X, y)
    E = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model), rule="z").fit(X, y).explain(X)
    df = model.decision_function(X)
    k = np.searchsorted(model.classes_, E.target)
    np.testing.assert_allclose(E.output, df[np.arange(len(X)), k], rtol=1e-10)
    # the whole chain is affine: the z-rule gives x_d * dF/dx_d and the biases absorb the rest
    sc, pca, lr = model[0], model[1], model[2]
    w_eff = (lr.coef_ @ pca.components_) / sc.scale_  # (K, d)
    np.testing.assert_allclose(E.relevance, X * w_eff[k], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10)
    np.testing.assert_allclose(E.residual, 0, atol=1e-10)


@pytest.mark.parametrize("rule", ["epsilon", "alphabeta", "zplus", "flat", "wsquare", "zb"])
def test_pipeline_conservation_with_every_rule(rule):
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(MinMaxScaler(), PCA(3), LogisticRegression()).fit(X, y)
    E = (
        sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model), rule=rule, low=-1.0, high=2.0)
        .fit(X, y)
        .explain(X)
    )
    assert np.all(np.isfinite(E.relevance))
    # the bookkeeping identity always holds; the residual is what stabilisers absorbed
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output, rtol=1e-10)
    if rule in ("flat", "wsquare", "zb"):
        # input-invariant rules pass all relevance below the head; only the head bias is absorbed
        np.testing.assert_allclose(E.residual, 0, atol=1e-9)


def test_bias_modes_uniform_and_weighted():
    X, y = X_BIN, Y_BIN
    model = LogisticRegression().fit(X, y)
    keep = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X, y).explain(X)
    uni = (
        sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model), bias="uniform")
        .fit(X, y)
        .explain(X)
    )
    wtd = (
        sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model), bias="weighted")
        .fit(X, y)
        .explain(X)
    )
    D = X.shape[1]
    # Eq. (2.73): R_d += R_b / D
    np.testing.assert_allclose(uni.relevance, keep.relevance + keep.bias_relevance[:, None] / D, rtol=1e-10)
    # Eq. (2.74) made conservative: R_d += w_d^2/||w||^2 R_b
    w = model.coef_[0]
    np.testing.assert_allclose(
        wtd.relevance, keep.relevance + keep.bias_relevance[:, None] * (w**2 / (w**2).sum()), rtol=1e-10
    )
    for E in (uni, wtd):
        np.testing.assert_allclose(E.bias_relevance, 0)
        np.testing.assert_allclose(E.relevance.sum(1), E.output, rtol=1e-10)


def test_function_transformer_declared_elementwise_and_rejected_otherwise():
    @elementwise
    def signed_log(X):
        return np.sign(X) * np.log1p(np.abs(X))

    X, y = X_BIN, Y_BIN
    model = make_pipeline(FunctionTransformer(signed_log), LogisticRegression()).fit(X, y)
    E = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X, y).explain(X)
    # element-wise steps pass relevance unchanged (Eq. (2.37))
    np.testing.assert_allclose(
        E.relevance, signed_log(X) * np.where(E.target == 1, 1, -1)[:, None] * model[-1].coef_[0], rtol=1e-10
    )

    bad = make_pipeline(FunctionTransformer(lambda X: X[:, ::-1]), LogisticRegression()).fit(X, y)
    with pytest.raises(TypeError, match="only element-wise functions"):
        sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(bad)).fit(X, y)


def test_unsupported_step_names_class_and_lists_supported():
    X, y = X_BIN, Y_BIN
    model = make_pipeline(QuantileTransformer(n_quantiles=10), LogisticRegression()).fit(X, y)
    with pytest.raises(
        TypeError, match="cannot explain a QuantileTransformer step.*Supported: .*StandardScaler"
    ):
        sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X, y)
    from sklearn.neighbors import KNeighborsClassifier

    with pytest.raises(TypeError, match="KNeighborsClassifier"):
        sklrp.LRPTransformer(device="cpu", estimator=KNeighborsClassifier()).fit(X, y)
    assert "StandardScaler" in sklrp.supported_steps()


def test_sparse_coef_is_supported():
    X, y = X_BIN, Y_BIN
    model = LogisticRegression().fit(X, y)
    dense = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X, y).transform(X)
    model.sparsify()
    sparse = sklrp.LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X, y).transform(X)
    np.testing.assert_allclose(dense, sparse)


def test_float32_on_cpu():
    X, y = X_MC, Y_MC
    lrp = sklrp.LRPTransformer(device="cpu", estimator=LogisticRegression(), dtype="float32").fit(X, y)
    E = lrp.explain(X)
    ref = sklrp.LRPTransformer(device="cpu", estimator=LogisticRegression()).fit(X, y).explain(X)
    np.testing.assert_allclose(E.relevance, ref.relevance, rtol=1e-4, atol=1e-5)
    assert torch.float32 == lrp._config().dtype


@pytest.mark.parametrize("target", ["predicted", "array", "mixed"])
def test_wide_multiclass_rows_in_blocks_match_loop(target):
    # d = 3000 puts the 200 rows into several cache blocks; mixed weights take the matmul path
    rng = np.random.RandomState(1)
    X, y = rng.randn(200, 3000), np.arange(200) % 4
    model = LogisticRegression(max_iter=200).fit(X, y)
    lrp = sklrp.LRPTransformer(FrozenEstimator(model), device="cpu").fit(X[:4], y[:4])
    if target == "mixed":
        # a one-vs-one style combination of score columns through the head directly
        from sklrp.propagators import build_chain

        _, head = build_chain(model)
        config = lrp._config()
        weights = torch.as_tensor(rng.randn(200, 4))
        x = torch.as_tensor(X)
        hr = head.relevance(x, weights, head.scores(x, config), config)
        expected = X * (weights.numpy() @ model.coef_)
        np.testing.assert_allclose(hr.relevance.numpy(), expected, rtol=1e-12, atol=1e-12)
        return
    labels = model.predict(X) if target == "predicted" else rng.randint(4, size=200)
    E = lrp.explain(X, target=None if target == "predicted" else labels)
    expected = np.empty_like(X)
    for n in range(X.shape[0]):
        for d in range(X.shape[1]):
            expected[n, d] = X[n, d] * model.coef_[labels[n], d]
    np.testing.assert_allclose(E.relevance, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, atol=1e-10)


def test_refit_model_behind_a_frozen_estimator_is_seen():
    # the head caches coef_/intercept_ as tensors; a refit replaces the arrays and must be used
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    model = LogisticRegression().fit(X, y)
    lrp = sklrp.LRPTransformer(FrozenEstimator(model), device="cpu").fit(X, y)
    lrp.explain(X[:3])
    model.fit(X, 1 - y)
    E = lrp.explain(X[:3], target=1)
    np.testing.assert_allclose(E.relevance, X[:3] * model.coef_[0], rtol=1e-12)
    np.testing.assert_allclose(E.output, model.decision_function(X[:3]), rtol=1e-12)

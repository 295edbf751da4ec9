"""LRPTransformer as a scikit-learn estimator: conventions, targets, bad input."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklrp
from sklrp import LRPTransformer

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_BIN, Y_BIN = make_classification(n_samples=40, n_features=5, random_state=0)


@parametrize_with_checks(
    [
        LRPTransformer(device="cpu"),
        LRPTransformer(device="cpu", estimator=LogisticRegression(max_iter=1000), rule="z", bias="uniform"),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_default_estimator_is_linear_svc():
    lrp = LRPTransformer(device="cpu").fit(X_IRIS, Y_IRIS)
    assert isinstance(lrp.estimator_, LinearSVC)
    np.testing.assert_array_equal(lrp.classes_, [0, 1, 2])
    assert lrp.transform(X_IRIS).shape == X_IRIS.shape


def test_frozen_estimator_is_not_refit():
    model = LogisticRegression(max_iter=1000).fit(X_IRIS, Y_IRIS)
    coef = model.coef_.copy()
    lrp = LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X_IRIS[:10], np.zeros(10))
    np.testing.assert_array_equal(lrp.estimator_.estimator.coef_, coef)
    assert lrp.estimator_.estimator is model


def test_unfrozen_estimator_is_cloned_and_fitted():
    est = LogisticRegression(max_iter=1000)
    lrp = LRPTransformer(device="cpu", estimator=est).fit(X_IRIS, Y_IRIS)
    assert lrp.estimator_ is not est
    assert not hasattr(est, "coef_")


def test_as_last_pipeline_step():
    pipe = make_pipeline(
        StandardScaler(), LRPTransformer(device="cpu", estimator=LogisticRegression(max_iter=1000))
    )
    R = pipe.fit(X_IRIS, Y_IRIS).transform(X_IRIS[:7])
    Xs = pipe[0].transform(X_IRIS[:7])
    lr = pipe[-1].estimator_
    pred = lr.predict(Xs)
    np.testing.assert_allclose(R, Xs * lr.coef_[pred], rtol=1e-10)


def test_clone_get_set_params():
    lrp = LRPTransformer(device="cpu", estimator=LogisticRegression(C=2.0), epsilon=0.5)
    params = lrp.get_params()
    assert params["epsilon"] == 0.5 and params["estimator__C"] == 2.0
    lrp.set_params(epsilon=3.0, estimator__C=1.0, rule="z")
    c = clone(lrp)
    assert c.epsilon == 3.0 and c.rule == "z" and c.estimator.C == 1.0


def test_grid_search_over_epsilon():
    model = make_pipeline(StandardScaler(), PCA(3), LogisticRegression(max_iter=1000)).fit(X_IRIS, Y_IRIS)

    def negative_absorbed(est, X, y=None):
        # a scorer preferring less stabiliser absorption: picks the smallest epsilon
        return -np.abs(est.explain(X).residual).mean()

    idx = np.arange(len(X_IRIS))
    search = GridSearchCV(
        LRPTransformer(device="cpu", estimator=FrozenEstimator(model)),
        {"epsilon": [100.0, 1.0, 0.01]},
        scoring=negative_absorbed,
        cv=[(idx[::2], idx[1::2])],
    ).fit(X_IRIS, Y_IRIS)
    assert search.best_params_ == {"epsilon": 0.01}
    assert search.best_estimator_.transform(X_IRIS).shape == X_IRIS.shape


def test_targets_predicted_true_label_array():
    model = LogisticRegression(max_iter=1000).fit(X_IRIS, Y_IRIS)
    lrp = LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X_IRIS, Y_IRIS)
    df = model.decision_function(X_IRIS)
    E = lrp.explain(X_IRIS)
    np.testing.assert_array_equal(E.target, model.predict(X_IRIS))
    np.testing.assert_allclose(E.output, df.max(1), rtol=1e-12)
    E = lrp.explain(X_IRIS, target="true", y=Y_IRIS)
    np.testing.assert_allclose(E.output, df[np.arange(150), Y_IRIS], rtol=1e-12)
    E = lrp.explain(X_IRIS, target=2)
    np.testing.assert_allclose(E.output, df[:, 2], rtol=1e-12)
    labels = np.arange(150) % 3
    E = lrp.explain(X_IRIS, target=labels)
    np.testing.assert_allclose(E.output, df[np.arange(150), labels], rtol=1e-12)
    # relevance of class k for all samples via the constructor parameter
    R2 = (
        LRPTransformer(device="cpu", estimator=FrozenEstimator(model), target=2)
        .fit(X_IRIS, Y_IRIS)
        .transform(X_IRIS)
    )
    np.testing.assert_allclose(R2, X_IRIS * model.coef_[2], rtol=1e-12)
    # target="true" in a pipeline: fit_transform passes y
    Rt = LRPTransformer(device="cpu", estimator=FrozenEstimator(model), target="true").fit_transform(
        X_IRIS, Y_IRIS
    )
    np.testing.assert_allclose(Rt, X_IRIS * model.coef_[Y_IRIS], rtol=1e-12)


def test_string_labels_and_binary_sign():
    y = np.where(Y_BIN == 1, "spam", "ham")
    model = LogisticRegression(max_iter=1000).fit(X_BIN, y)
    lrp = LRPTransformer(device="cpu", estimator=FrozenEstimator(model)).fit(X_BIN, y)
    f = model.decision_function(X_BIN)
    np.testing.assert_allclose(lrp.explain(X_BIN, target="spam").output, f)
    np.testing.assert_allclose(lrp.explain(X_BIN, target="ham").output, -f)
    # the predicted class is always explained with a positive score
    assert np.all(lrp.explain(X_BIN).output >= 0)
    with pytest.raises(ValueError, match="unknown target label 'eggs'.*ham"):
        lrp.explain(X_BIN, target="eggs")


def test_batch_size_does_not_change_result():
    lrp = LRPTransformer(
        device="cpu",
        estimator=make_pipeline(StandardScaler(), PCA(3), LogisticRegression(max_iter=1000)),
        batch_size=7,
    )
    lrp.fit(X_IRIS, Y_IRIS)
    a = lrp.explain(X_IRIS)
    b = lrp.set_params(batch_size=1000).explain(X_IRIS)
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-12)
    np.testing.assert_array_equal(a.target, b.target)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_lone_linear_model_batches_by_its_temporaries(n_classes, capsys):
    """A lone linear model writes into the result and keeps (rows, n_outputs) temporaries only:
    batch_size * n_features / (2 n_outputs + 2) rows per batch, same relevance as any batching."""
    from sklearn.datasets import load_digits

    X, y = load_digits(n_class=n_classes, return_X_y=True)  # 64 features
    lrp = LRPTransformer(device="cpu", estimator=LogisticRegression(max_iter=1000), batch_size=6, verbose=True)
    lrp.fit(X, y)
    per_row = 2 * (1 if n_classes == 2 else n_classes) + 2
    assert lrp.get_chain().head.temporaries_per_row() == per_row
    a = lrp.explain(X)
    rows = 6 * 64 // per_row
    assert rows > 6
    n_batches = -(-len(X) // rows)
    assert f"{n_batches}/{n_batches}" in capsys.readouterr().err  # the progress bar's count
    b = lrp.set_params(batch_size=10_000).explain(X)
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-12)
    np.testing.assert_allclose(a.relevance.sum(1) + a.bias_relevance, a.output, rtol=1e-12)
    np.testing.assert_array_equal(a.target, b.target)


def test_verbose_progress_bar(capsys):
    LRPTransformer(
        device="cpu", estimator=LogisticRegression(max_iter=1000), verbose=True, batch_size=50
    ).fit(X_IRIS, Y_IRIS).transform(X_IRIS)
    assert "LRP" in capsys.readouterr().err


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    return LRPTransformer(device="cpu", estimator=LogisticRegression(max_iter=1000)).fit(X_IRIS, Y_IRIS)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_rejected(fitted, value):
    X = X_IRIS[:3].copy()
    X[1, 2] = value
    with pytest.raises(ValueError, match="NaN|infinity"):
        fitted.transform(X)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("pipeline", [False, True])
def test_nonfinite_rejected_where_the_weight_is_zero(value, pipeline):
    # a lone linear model checks its scores instead of X: inf * 0 and nan * 0 must still raise
    X = np.c_[X_BIN, np.zeros(len(X_BIN))]
    model = LogisticRegression(max_iter=1000, penalty="l1", solver="liblinear", C=0.5)
    model = make_pipeline(StandardScaler(with_std=False), model) if pipeline else model
    lrp = LRPTransformer(device="cpu", estimator=model).fit(X, Y_BIN)
    assert lrp.estimator_[-1].coef_[0, -1] == 0 if pipeline else lrp.estimator_.coef_[0, -1] == 0
    X_bad = X[:6].copy()
    X_bad[4, -1] = value
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        lrp.explain(X_bad)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the residual
def test_finite_input_that_overflows_a_sum_is_accepted():
    # like scikit-learn: only NaN/inf entries are errors, not large finite values (here the sum of
    # the batch overflows, the model's output does not)
    X_fit = np.random.RandomState(0).randn(50, 3)
    lrp = LRPTransformer(LinearRegression(), device="cpu").fit(X_fit, 1e-3 * X_fit[:, 0])
    X = X_fit[:2].copy()
    X[0, :2] = 1e308
    E = lrp.explain(X)
    assert np.isfinite(E.relevance).all() and np.isfinite(E.output).all()


@pytest.mark.parametrize("estimator", [LogisticRegression(max_iter=1000),
                                       make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))])
def test_output_that_overflows_is_an_error(estimator):
    # a finite input whose explained output overflows gives no NaN relevance: an error naming the row
    lrp = LRPTransformer(estimator, device="cpu").fit(X_BIN, Y_BIN)
    X = X_BIN[:3].copy()
    X[1] = 1e308
    with pytest.raises(ValueError, match=r"not finite .* \(first: row 1\).*overflowed"):
        lrp.explain(X)


@pytest.mark.parametrize("estimator", [LogisticRegression(max_iter=1000),
                                       make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))])
def test_streamed_and_generic_paths_agree(estimator):
    # float64 on the CPU with bias="keep" writes into the result; float32 and bias modes do not
    X, y = (X_BIN, Y_BIN)
    fast = LRPTransformer(device="cpu", estimator=estimator, rule="z", batch_size=7).fit(X, y)
    E = fast.explain(X)
    slow = clone(fast).set_params(dtype="float32").fit(X, y).explain(X)
    np.testing.assert_allclose(E.relevance, slow.relevance, rtol=1e-4, atol=1e-5)
    uniform = clone(fast).set_params(bias="uniform").fit(X, y).explain(X)
    if not hasattr(estimator, "steps"):
        d = X.shape[1]
        np.testing.assert_allclose(uniform.relevance, E.relevance + E.bias_relevance[:, None] / d, atol=1e-12)
    np.testing.assert_allclose(uniform.relevance.sum(1) + uniform.bias_relevance, E.output, atol=1e-12)
    np.testing.assert_allclose(E.residual, 0, atol=1e-12)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, atol=1e-12)
    assert E.relevance.flags.c_contiguous and E.relevance.dtype == np.float64


def test_wrong_n_features(fitted):
    with pytest.raises(ValueError, match="4 features"):
        fitted.transform(X_IRIS[:, :3])


def test_1d_input(fitted):
    with pytest.raises(ValueError, match="2D array|Reshape"):
        fitted.transform(X_IRIS[0])


def test_sparse_input_clear_error(fitted):
    with pytest.raises(TypeError, match="[Ss]parse"):
        fitted.transform(sp.csr_matrix(X_IRIS))


def test_unfitted_transformer():
    with pytest.raises(NotFittedError):
        LRPTransformer(device="cpu").transform(X_IRIS)


def test_unfitted_frozen_estimator():
    with pytest.raises(NotFittedError, match="LogisticRegression instance is not fitted"):
        LRPTransformer(device="cpu", estimator=FrozenEstimator(LogisticRegression(max_iter=1000))).fit(
            X_IRIS, Y_IRIS
        )


def test_target_errors(fitted):
    with pytest.raises(ValueError, match="unknown target label 7"):
        fitted.explain(X_IRIS, target=7)
    with pytest.raises(ValueError, match="target='true' needs y"):
        fitted.explain(X_IRIS, target="true")
    with pytest.raises(ValueError, match="shape \\(n_samples,\\)"):
        fitted.explain(X_IRIS, target=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="y has 2 samples"):
        fitted.explain(X_IRIS, target="true", y=[0, 1])


@pytest.mark.parametrize(
    "params,err,match",
    [
        ({"bias": "spread"}, ValueError, "'bias' parameter of LRPTransformer must be a str among"),
        ({"rule": "lrp"}, ValueError, "unknown rule"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"epsilon": -1.0}, ValueError, "epsilon"),
        ({"alpha": 2.0, "beta": 1.0, "rule": "alphabeta"}, ValueError, "alpha \\+ beta"),
        ({"dtype": "float16"}, ValueError, "dtype"),
        ({"device": "tpu"}, ValueError, "device"),
    ],
)
def test_bad_parameters_raise_at_fit(params, err, match):
    with pytest.raises(err, match=match):
        LRPTransformer(**{"estimator": LogisticRegression(max_iter=1000), "device": "cpu", **params}).fit(
            X_IRIS, Y_IRIS
        )


def test_cuda_requested_without_gpu():
    import torch

    if torch.cuda.is_available():
        lrp = LRPTransformer(LogisticRegression(max_iter=1000), device="cuda").fit(X_IRIS, Y_IRIS)
        assert lrp.transform(X_IRIS).shape == X_IRIS.shape
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            LRPTransformer(LogisticRegression(max_iter=1000), device="cuda").fit(X_IRIS, Y_IRIS)


def test_weighted_bias_needs_linear_projection():
    from sklrp.propagators import Head

    class _Opaque:  # a head without a linear projection w
        pass

    with pytest.raises(TypeError, match="bias='weighted' needs a linear projection"):
        Head(_Opaque()).bias_weights(None, None, None)


def test_public_names():
    for name in ("LRPTransformer", "Explanation", "rules", "propagator_for", "supported_steps"):
        assert hasattr(sklrp, name)


def test_float32_input_is_not_copied_to_float64():
    # memory is the float64 output plus one batch, not also a float64 copy of X
    import tracemalloc

    rng = np.random.RandomState(0)
    X = rng.randn(40_000, 50).astype(np.float32)
    lrp = LRPTransformer(LogisticRegression(max_iter=200), device="cpu").fit(X[:500], X[:500, 0] > 0)
    tracemalloc.start()
    try:
        R = lrp.transform(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert R.dtype == np.float64 and peak < R.nbytes + 0.25 * X.nbytes
    np.testing.assert_allclose(R, lrp.transform(X.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_gamma_parameter_reaches_the_rule():
    lrp = LRPTransformer(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), rule="gamma",
                         gamma=0.5, device="cpu").fit(X_IRIS, Y_IRIS)
    assert lrp.get_chain().config.rule == sklrp.rules.Gamma(0.5)
    assert lrp.transform(X_IRIS[:3]).shape == (3, 4)
    with pytest.raises(ValueError, match="'gamma' parameter of LRPTransformer"):
        LRPTransformer(LogisticRegression(), gamma=-1.0).fit(X_IRIS, Y_IRIS)

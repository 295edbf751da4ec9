"""Tabular pipelines end to end through LRPTransformer: raw mixed-type frames in, one relevance column per
raw column out, conservation with the z-rule, and clear refusals."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

import sklrp
from test_tabular import explain_chain, mixed_frame, mixed_preprocessor


def quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


MODELS = {
    "logistic_regression": lambda: LogisticRegression(),
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(8,), activation="relu", max_iter=300, random_state=0),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_mixed_frame_through_lrp_transformer_conserves_the_output(model):
    df, y = mixed_frame()
    lrp = quiet_fit(sklrp.LRPTransformer(make_pipeline(mixed_preprocessor(), MODELS[model]()), rule="z"), df, y)
    X = df.iloc[:25]
    E = lrp.explain(X)
    assert E.relevance.shape == (25, 5)
    np.testing.assert_array_equal(E.feature_names, df.columns)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(E.output, np.abs(lrp.estimator_.decision_function(X)) if model != "mlp" else
                               np.abs(np.log(lrp.estimator_.predict_proba(X)[:, 1] /
                                             lrp.estimator_.predict_proba(X)[:, 0])), rtol=1e-8)
    assert np.all(E.relevance[:, 4] == 0.0)  # "note" is read by no transformer
    # the same numbers as Algorithm 1 by hand through the propagators
    r, rb, out = explain_chain(lrp.estimator_, X)
    np.testing.assert_allclose(E.relevance, r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(E.bias_relevance, rb, rtol=1e-12, atol=1e-14)
    frame = E.to_frame()
    assert list(frame.columns) == list(df.columns)
    np.testing.assert_array_equal(lrp.get_feature_names_out(), df.columns)
    lrp.set_output(transform="pandas")
    R = lrp.transform(X)
    assert isinstance(R, pd.DataFrame) and list(R.columns) == list(df.columns)


def test_mixed_frame_bias_modes_and_epsilon_are_bounded():
    df, y = mixed_frame()
    model = make_pipeline(mixed_preprocessor(), LogisticRegression()).fit(df, y)
    complete = df["age"].notna().to_numpy()[:10]
    assert 0 < complete.sum() < 10
    for bias in ("keep", "uniform", "weighted"):
        E = sklrp.LRPTransformer(FrozenEstimator(model), rule="z", bias=bias).fit(df, y).explain(df.iloc[:10])
        # An age imputed by the training mean is exactly 0 after the scaler: under the z-rule that unit passes
        # no relevance (0/0 := 0), so the share of the intercept spread onto it is absorbed; nothing else is.
        np.testing.assert_allclose((E.relevance.sum(1) + E.bias_relevance)[complete], E.output[complete],
                                   rtol=1e-10, atol=1e-12)
        if bias == "keep":
            np.testing.assert_allclose(E.residual, 0.0, atol=1e-12)
    E = sklrp.LRPTransformer(FrozenEstimator(model), rule="epsilon", epsilon=0.1).fit(df, y).explain(df.iloc[:10])
    assert np.all(np.isfinite(E.relevance)) and np.all(np.abs(E.residual) < np.abs(E.output) + 1)


def test_numeric_imputer_first_and_imputer_then_encoder():
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    X[::7, 1] = np.nan
    y = (X[:, 0] > 0).astype(int)
    E = sklrp.LRPTransformer(make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()),
                             rule="z").fit(X, y).explain(X[:10])
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10)
    codes = rng.randint(0, 3, (60, 2)).astype(float)
    codes[::5, 0] = np.nan
    pipe = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(), LogisticRegression())
    E = sklrp.LRPTransformer(pipe, rule="z").fit(codes, y).explain(codes[:10])  # the encoder is not first
    assert E.relevance.shape == (10, 2)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10)


def test_string_encoder_first_and_string_steps_after_the_first_are_refused():
    X = np.array([["a", "x"], ["b", "y"], ["a", "y"], ["b", "x"]] * 5, dtype=object)
    y = np.arange(20) % 2
    E = sklrp.LRPTransformer(make_pipeline(OneHotEncoder(), LogisticRegression()), rule="z").fit(X, y).explain(X[:4])
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10)
    pipe = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(), LogisticRegression())
    with pytest.raises(TypeError, match="OneHotEncoder takes raw samples"):
        sklrp.LRPTransformer(pipe).fit(X, y)


def test_unsupported_inner_transformer_is_refused_before_fitting():
    df, y = mixed_frame()
    ct = ColumnTransformer([("num", StandardScaler(), ["income"]), ("te", TargetEncoder(), ["city"])])
    lrp = sklrp.LRPTransformer(make_pipeline(ct, LogisticRegression()))
    with pytest.raises(TypeError, match=r"ColumnTransformer transformer 'te'.*TargetEncoder.*Supported:"):
        lrp.fit(df, y)
    assert not hasattr(lrp, "estimator_")  # nothing was trained


def test_bad_raw_inputs_are_clear_errors():
    df, y = mixed_frame()
    lrp = sklrp.LRPTransformer(make_pipeline(mixed_preprocessor(), LogisticRegression())).fit(df, y)
    with pytest.raises(ValueError, match="feature names"):
        lrp.explain(df.iloc[:3, :4])
    with pytest.raises(ValueError, match="4 features"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names"
        lrp.explain(df.iloc[:3, :4].to_numpy())
    # missing values reaching the model: a frozen pipeline without an imputer
    complete = df.assign(age=df["age"].fillna(40.0))
    ct = ColumnTransformer([("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["city"])])
    frozen = sklrp.LRPTransformer(FrozenEstimator(make_pipeline(ct, LogisticRegression()).fit(complete, y)))
    with pytest.raises(ValueError, match=r"NaN or infinity in columns \['num__age'\]"):
        frozen.fit(complete, y).explain(df.iloc[:20])
    with pytest.raises(ValueError, match="features"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lrp.explain(np.array(["a", "b"], dtype=object))


def test_breast_cancer_mlp_conserves_and_scaler_shift_is_bias_relevance():
    X, y = load_breast_cancer(return_X_y=True)
    for model in (LogisticRegression(max_iter=1000), MLPClassifier(hidden_layer_sizes=(10,), max_iter=200,
                                                                    random_state=0)):
        pipe = quiet_fit(make_pipeline(StandardScaler(), model), X, y)
        E = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z").fit(X, y).explain(X[:20])
        np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-9, atol=1e-12)
    # the linear model: the bias relevance is the intercept plus the scaler's shift -w mu / s (Eq. (2.53))
    pipe_lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    sc, lr = pipe_lr[0], pipe_lr[-1]
    E = sklrp.LRPTransformer(FrozenEstimator(pipe_lr), rule="z", target=1).fit(X, y).explain(X[:5])
    shift = -(lr.coef_[0] * sc.mean_ / sc.scale_).sum()
    np.testing.assert_allclose(E.bias_relevance, lr.intercept_[0] + shift, rtol=1e-12)
    np.testing.assert_allclose(E.relevance, X[:5] * lr.coef_[0] / sc.scale_, rtol=1e-10)

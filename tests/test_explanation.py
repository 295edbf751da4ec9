"""Explanation: residual split, feature names, frames, save/load."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.datasets import load_breast_cancer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

import sklrp
from sklrp import Explanation

DATA = load_breast_cancer(as_frame=True)
X_DF, Y = DATA.data.iloc[:200], DATA.target.iloc[:200]


def _lrp(**kw):
    return sklrp.LRPTransformer(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
                                device="cpu", **kw).fit(X_DF, Y)


def test_residual_split_exact_model():
    E = _lrp(rule="z").explain(X_DF.iloc[:5])
    np.testing.assert_array_equal(E.taylor_remainder, 0)
    np.testing.assert_allclose(E.absorbed, E.residual)
    assert E.relative_residual.max() < 1e-10


def test_residual_split_epsilon_absorbs():
    E = _lrp(rule="epsilon", epsilon=10.0).explain(X_DF.iloc[:5])
    assert np.all(np.abs(E.absorbed) > 1e-6)  # the stabiliser took relevance (Eq. (2.23))
    np.testing.assert_array_equal(E.taylor_remainder, 0)
    np.testing.assert_allclose(E.relative_residual, np.abs(E.residual) / np.abs(E.output))


def test_residual_split_taylor_head():
    X = np.random.RandomState(0).rand(60, 4)
    y = (X[:, 0] > X[:, 1]).astype(int)
    E = sklrp.LRPTransformer(SVC(kernel="rbf"), taylor="first_order", device="cpu").fit(X, y).explain(X[:5])
    # the root-point head reports its own remainder; nothing else in this chain absorbs
    assert np.all(np.abs(E.taylor_remainder) > 0)
    np.testing.assert_allclose(E.taylor_remainder, E.residual, atol=1e-12)
    np.testing.assert_allclose(E.absorbed, 0, atol=1e-12)
    exact = sklrp.LRPTransformer(SVC(kernel="rbf"), device="cpu").fit(X, y).explain(X[:5])
    assert exact.relative_residual.max() < 1e-6


def test_relative_residual_at_zero_output():
    E = Explanation(np.zeros((2, 1)), np.zeros(2), np.array([0.0, 0.0]), np.zeros(2), np.array([0.0, 1.0]))
    np.testing.assert_array_equal(E.relative_residual, [0.0, np.inf])


def test_feature_names_from_dataframe_and_frames():
    lrp = _lrp(rule="z")
    E = lrp.explain(X_DF.iloc[:4])
    assert list(E.feature_names) == list(X_DF.columns)
    np.testing.assert_array_equal(lrp.get_feature_names_out(), X_DF.columns)
    frame = E.to_frame(summary=True)
    assert list(frame.columns[:30]) == list(X_DF.columns)
    np.testing.assert_allclose(frame[X_DF.columns].to_numpy(), E.relevance)
    np.testing.assert_allclose(frame["output"], E.output)


def test_set_output_pandas_returns_named_relevance():
    lrp = _lrp(rule="z").set_output(transform="pandas")
    R = lrp.transform(X_DF.iloc[5:9])
    assert isinstance(R, pd.DataFrame)
    assert list(R.columns) == list(X_DF.columns) and list(R.index) == list(X_DF.index[5:9])
    np.testing.assert_allclose(R.to_numpy(), lrp.set_output(transform="default").transform(X_DF.iloc[5:9]))


def test_numpy_input_has_generic_names():
    lrp = sklrp.LRPTransformer(make_pipeline(StandardScaler(), LogisticRegression(C=0.1)), device="cpu")
    lrp.fit(X_DF.to_numpy(), Y)
    E = lrp.explain(X_DF.to_numpy()[:2])
    assert E.feature_names is None
    assert lrp.get_feature_names_out()[:2].tolist() == ["x0", "x1"]
    assert E.to_frame().columns[:2].tolist() == ["x0", "x1"]


def test_save_load_round_trip_dense(tmp_path):
    X = np.random.RandomState(0).rand(40, 4)
    y = np.where(X[:, 0] > X[:, 1], "yes", "no")
    E = sklrp.LRPTransformer(SVC(kernel="rbf"), device="cpu").fit(X, y).explain(X[:6])
    E.feature_names = np.array(["a", "b", "c", "d"], dtype=object)
    E.save(tmp_path / "e.npz")
    F = Explanation.load(tmp_path / "e.npz")
    for key in ("relevance", "bias_relevance", "output", "residual", "taylor_remainder", "root_point"):
        np.testing.assert_array_equal(getattr(F, key), getattr(E, key))
    assert F.target.tolist() == E.target.tolist()
    assert F.feature_names.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(F.extras["root_found"], E.extras["root_found"])


def test_save_load_round_trip_text(tmp_path):
    docs = ["good film good", "bad film", "good plot", "bad plot twist"]
    lrp = sklrp.LRPTransformer(make_pipeline(CountVectorizer(), LinearSVC()), rule="z").fit(docs, [1, 0, 1, 0])
    E = lrp.explain(docs)
    E.save(tmp_path / "t")
    F = Explanation.load(tmp_path / "t.npz")
    assert sparse.issparse(F.relevance)
    np.testing.assert_array_equal(F.relevance.toarray(), E.relevance.toarray())
    assert F.extras["tokens"] == E.extras["tokens"]
    assert F.feature_names.tolist() == E.feature_names.tolist()


def test_save_refuses_unstorable_values(tmp_path):
    E = Explanation(np.zeros((1, 1)), np.zeros(1), np.zeros(1), np.array([object()], dtype=object), np.zeros(1))
    with pytest.raises(ValueError, match="numbers and strings only; target has values of type"):
        E.save(tmp_path / "x.npz")


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not an sklrp Explanation file"):
        Explanation.load(tmp_path / "other.npz")


def test_to_frame_refuses_images():
    E = Explanation(np.zeros((2, 3, 3)), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="reshape it first"):
        E.to_frame()

"""The execution seam: Chain (Algorithm 1), targets, support checks before fitting, concurrency."""

import threading
import time

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import sklrp
from sklrp.chain import Chain, resolve_target
from sklrp.propagators import RuleConfig, check_supported
from sklrp.rules import Z

X_IRIS, Y_IRIS = load_iris(return_X_y=True)


def _pipe():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_IRIS, Y_IRIS)


def test_chain_runs_algorithm_1_like_the_transformer():
    model = _pipe()
    chain = Chain(model, RuleConfig(Z()))
    E = chain.explain(X_IRIS[:10])
    lrp = sklrp.LRPTransformer(FrozenEstimator(model), rule="z", device="cpu").fit(X_IRIS)
    np.testing.assert_array_equal(E.relevance, lrp.explain(X_IRIS[:10]).relevance)
    # the pieces: scores, predicted labels, weights, and the decomposition of one batch
    scores = chain.score_columns(X_IRIS[:10])
    np.testing.assert_allclose(scores, model.decision_function(X_IRIS[:10]), rtol=1e-12)
    labels = chain.predicted(scores)
    np.testing.assert_array_equal(labels, model.predict(X_IRIS[:10]))
    w = chain.target_weights(labels, scores.shape[1])
    np.testing.assert_allclose((w * scores).sum(1), E.output, rtol=1e-12)
    part = chain.decompose(chain.config.tensor(X_IRIS[:10]))
    np.testing.assert_allclose(part.relevance.numpy(), E.relevance, rtol=1e-12)
    np.testing.assert_allclose(part.relevance_sum.numpy() + part.bias.numpy(), part.output.numpy(), rtol=1e-10)


def test_chain_scores_are_differentiable():
    chain = Chain(_pipe())
    x = chain.config.tensor(X_IRIS[:3]).requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(chain.scores(x)[:, 0].sum(), x)
    assert g.shape == x.shape and bool(g.abs().sum() > 0)


def test_get_chain_follows_set_params():
    lrp = sklrp.LRPTransformer(LogisticRegression(max_iter=1000), device="cpu").fit(X_IRIS, Y_IRIS)
    assert lrp.get_chain().config.rule == sklrp.rules.Epsilon(1e-2)
    lrp.set_params(rule="z")
    assert lrp.get_chain().config.rule == Z()


@pytest.mark.parametrize("target, y, message", [
    ("true", None, "target='true' needs y"),
    ("true", np.zeros(2), r"y must have shape \(n_samples,\) = \(3,\)"),
    (np.zeros(2), None, r"target array must have shape \(n_samples,\) = \(3,\)"),
    (float("nan"), None, "target must be 'predicted', 'true'"),
])
def test_resolve_target_errors(target, y, message):
    with pytest.raises(ValueError, match=message):
        resolve_target(target, y, 3)


@pytest.mark.parametrize("target", ["cat", "Predicted", 7, 1.5])
def test_unknown_target_label_names_the_classes(target):
    lrp = sklrp.LRPTransformer(LogisticRegression(max_iter=1000), device="cpu").fit(X_IRIS, Y_IRIS)
    with pytest.raises(ValueError, match=r"unknown target label .*classes are \[0, 1, 2\]"):
        lrp.explain(X_IRIS[:2], target=target)


class _LoudFit(ClassifierMixin, BaseEstimator):
    """An estimator sklrp cannot explain, whose fit must never be reached."""

    def fit(self, X, y):
        time.sleep(5)
        raise AssertionError("fit was called although the model is unsupported")


@pytest.mark.parametrize("estimator", [_LoudFit(), make_pipeline(StandardScaler(), _LoudFit())])
def test_unsupported_model_refused_before_fitting(estimator):
    start = time.perf_counter()
    with pytest.raises(TypeError, match=r"cannot explain a _LoudFit step.*Supported: .*LogisticRegression"):
        sklrp.LRPTransformer(estimator).fit(X_IRIS, Y_IRIS)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(TypeError, match="_LoudFit"):
        check_supported(estimator)


def test_frozen_model_with_other_feature_count_is_refused_at_fit():
    model = LogisticRegression(max_iter=1000).fit(X_IRIS, Y_IRIS)
    X5 = np.hstack([X_IRIS, X_IRIS[:, :1]])
    with pytest.raises(ValueError, match="X has 5 features, but the explained FrozenEstimator was fitted on 4"):
        sklrp.LRPTransformer(FrozenEstimator(model)).fit(X5)


# -- concurrency ------------------------------------------------------------------------------
def _mlp_module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _skorch_net():
    from skorch import NeuralNetClassifier

    torch.manual_seed(0)
    net = NeuralNetClassifier(
        torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(-1)),
        max_epochs=2, train_split=None, verbose=0)
    return FrozenEstimator(net.fit(X_IRIS.astype(np.float32), Y_IRIS))


_FAMILIES = {
    "linear": lambda: LogisticRegression(max_iter=1000),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    "hik-svm": lambda: SVC(kernel=sklrp.kernels.intersection_kernel),
    "torch": lambda: sklrp.nn.TorchModel(_mlp_module(), classes=[0, 1, 2]),
    "skorch": _skorch_net,
}


def _stress(lrp, X, n_threads=4, calls=6):
    """Every thread explains its own row subsets; each result must equal the same call made alone."""
    rng = np.random.RandomState(0)
    work_items = [[rng.permutation(len(X))[: len(X) // 2] for _ in range(calls)] for _ in range(n_threads)]
    expected = [[lrp.explain(X[rows]).relevance for rows in items] for items in work_items]
    errors, wrong = [], []

    def work(i):
        for rows, want in zip(work_items[i], expected[i]):
            try:
                got = lrp.explain(X[rows]).relevance
            except Exception as exc:  # noqa: BLE001 - any exception is a failure of the test
                errors.append(repr(exc))
                continue
            if not np.array_equal(got, want):
                wrong.append(float(np.abs(got - want).max()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert not wrong, f"{len(wrong)} concurrent calls differ from the single-threaded result (max {max(wrong)})"


@pytest.mark.parametrize("family", ["linear", "pipeline", "hik-svm"])
def test_concurrent_explanations_equal_single_threaded(family):
    X = np.abs(X_IRIS)
    lrp = sklrp.LRPTransformer(_FAMILIES[family](), device="cpu", batch_size=16).fit(X, Y_IRIS)
    _stress(lrp, X)


@pytest.mark.parametrize("repeat", range(20))
@pytest.mark.parametrize("family", ["torch", "skorch"])
def test_concurrent_torch_explanations_equal_single_threaded(family, repeat):
    # torch heads keep their forward pass per call and serialise hooks per module
    X = X_IRIS.astype(np.float64)
    lrp = sklrp.LRPTransformer(_FAMILIES[family](), device="cpu", batch_size=16, rule="epsilon").fit(X, Y_IRIS)
    _stress(lrp, X, calls=3)


def test_concurrent_text_explanations_equal_single_threaded():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    docs = [f"word{i % 7} word{i % 5} common text {i % 3}" for i in range(60)]
    y = np.arange(60) % 2
    lrp = sklrp.LRPTransformer(make_pipeline(TfidfVectorizer(), LinearSVC()), device="cpu", batch_size=8).fit(docs, y)
    expected = lrp.explain(docs).relevance.toarray()
    results = [None] * 4

    def work(i):
        results[i] = lrp.explain(docs).relevance.toarray()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        np.testing.assert_array_equal(got, expected)

"""sklrp.nn inside scikit-learn: skorch nets, FrozenEstimator, TorchModel, targets, heatmap sanity."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from torch import nn

import sklrp
from sklrp.nn import THESIS_COMPOSITE, TorchModel, lrp

torch.set_num_threads(1)


class TanhMLP(nn.Module):
    def __init__(self, softmax=False):
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 10)]
        if softmax:
            layers.append(nn.Softmax(dim=-1))
        self.seq = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq(x)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        )

    def forward(self, x):
        return self.seq(x)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y.astype(np.int64)


def _net(module, **kw):
    torch.manual_seed(0)
    params = dict(max_epochs=12, lr=0.005, optimizer=torch.optim.Adam, criterion=nn.CrossEntropyLoss,
                  train_split=None, verbose=0, batch_size=64)
    params.update(kw)
    return NeuralNetClassifier(module, **params)


@pytest.fixture(scope="module")
def cnn_lrp(digits):
    X, y = digits
    # float64 everywhere: on a GPU machine "auto" would compute in float32 and blur the exact checks
    return sklrp.LRPTransformer(_net(SmallCNN), **THESIS_COMPOSITE, dtype="float64").fit(X[:1200], y[:1200])


@pytest.fixture(scope="module")
def mlp_lrp(digits):
    X, y = digits
    return sklrp.LRPTransformer(_net(TanhMLP), rule="epsilon", epsilon=0.01).fit(X[:1200], y[:1200])


def _ink_correlation(R, X):
    """Mean Pearson correlation between positive relevance and ink, per sample."""
    r = np.clip(R.reshape(len(R), -1), 0, None)
    x = X.reshape(len(X), -1)
    rc, xc = r - r.mean(1, keepdims=True), x - x.mean(1, keepdims=True)
    return float(np.mean((rc * xc).sum(1) / np.sqrt((rc ** 2).sum(1) * (xc ** 2).sum(1) + 1e-12)))


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_trained_nets_put_positive_relevance_on_the_strokes(which, digits, cnn_lrp, mlp_lrp, request):
    X, y = digits
    lrp_ = cnn_lrp if which == "cnn" else mlp_lrp
    assert (lrp_.estimator_.predict(X[1200:]) == y[1200:]).mean() > 0.85  # the nets did learn
    E = lrp_.explain(X[1200:1400])
    assert E.relevance.shape == (200, 1, 8, 8)
    assert _ink_correlation(E.relevance, X[1200:1400]) > 0.4
    # the flat rule on the input layer ignores the pixels: its maps are far less stroke-aligned
    flat = sklrp.LRPTransformer(FrozenEstimator(lrp_.estimator_), **THESIS_COMPOSITE, flat_depth=1).fit(X[:10])
    R_flat = flat.transform(X[1200:1400])
    assert _ink_correlation(E.relevance, X[1200:1400]) > _ink_correlation(R_flat, X[1200:1400]) + 0.1


def test_lrptransformer_fits_skorch_and_explains_conservatively(digits):
    X, y = digits
    lrp_ = sklrp.LRPTransformer(_net(SmallCNN, max_epochs=2), rule="z", dtype="float64").fit(X[:300], y[:300])
    E = lrp_.explain(X[300:320])
    np.testing.assert_array_equal(E.target, lrp_.estimator_.predict(X[300:320]))
    np.testing.assert_allclose(E.relevance.reshape(20, -1).sum(1) + E.bias_relevance, E.output, rtol=1e-8, atol=1e-10)
    assert np.abs(E.residual).max() < 1e-8
    with torch.no_grad():
        logits = lrp_.estimator_.module_(torch.as_tensor(X[300:320])).numpy()
    np.testing.assert_allclose(E.output, logits.max(1), rtol=1e-5, atol=1e-6)


def test_frozen_fitted_net_and_targets(digits, cnn_lrp):
    X, y = digits
    net = cnn_lrp.estimator_
    frozen = sklrp.LRPTransformer(FrozenEstimator(net), **THESIS_COMPOSITE, dtype="float64").fit(X[:5], y[:5])
    np.testing.assert_allclose(frozen.transform(X[1300:1310]), cnn_lrp.transform(X[1300:1310]))
    E_true = frozen.explain(X[1300:1310], target="true", y=y[1300:1310])
    np.testing.assert_array_equal(E_true.target, y[1300:1310])
    E_3 = frozen.explain(X[1300:1310], target=3)
    assert np.all(E_3.target == 3)
    labels = np.arange(10)
    E_arr = frozen.explain(X[1300:1310], target=labels)
    np.testing.assert_array_equal(E_arr.target, labels)
    # Fig. 2.8: the map of all outputs together is the sum of the per-class maps
    total = sum(frozen.explain(X[1300:1310], target=k).relevance for k in range(10))
    model = frozen.estimator_.estimator.module_
    comp = sklrp.nn.make_composite(**THESIS_COMPOSITE)
    all_at_once = lrp(model.double(), torch.as_tensor(X[1300:1310], dtype=torch.float64), comp, target="all")
    model.float()
    np.testing.assert_allclose(all_at_once.relevance.numpy(), total, rtol=1e-7, atol=1e-10)


def test_softmax_terminated_skorch_net_explains_logits(digits):
    X, y = digits
    net = _net(lambda: TanhMLP(softmax=True), max_epochs=2, criterion=nn.NLLLoss)
    net.set_params(module=TanhMLP, module__softmax=True)
    lrp_ = sklrp.LRPTransformer(net, rule="z").fit(X[:200], y[:200])
    E = lrp_.explain(X[200:205])
    with torch.no_grad():
        logits = lrp_.estimator_.module_.seq[:-1](torch.as_tensor(X[200:205])).numpy()
    np.testing.assert_allclose(E.output, logits.max(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(E.target, lrp_.estimator_.predict(X[200:205]))


def test_torch_model_with_input_shape(digits, cnn_lrp):
    X, y = digits
    module = cnn_lrp.estimator_.module_
    flat = X.reshape(len(X), -1)
    lrp_ = sklrp.LRPTransformer(TorchModel(module, input_shape=(1, 8, 8), classes=np.arange(10)),
                                **THESIS_COMPOSITE, dtype="float64").fit(flat[:10])
    R = lrp_.transform(flat[1300:1310])
    assert R.shape == (10, 64)
    np.testing.assert_allclose(R, cnn_lrp.transform(X[1300:1310]).reshape(10, 64), rtol=1e-10)
    np.testing.assert_array_equal(lrp_.estimator_.predict(flat[1300:1310]), cnn_lrp.estimator_.predict(X[1300:1310]))
    with pytest.raises(ValueError, match="input_shape"):
        TorchModel(module, input_shape=(1, 7, 7)).fit(flat[:3])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchModel("not a module").fit(flat[:3])


def test_float32_and_device_options(digits, cnn_lrp):
    X = digits[0]
    r64 = cnn_lrp.transform(X[1300:1310])
    frozen = sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_), **THESIS_COMPOSITE, dtype="float32",
                                  device="cpu", batch_size=3).fit(X[:3])
    r32 = frozen.transform(X[1300:1310])
    np.testing.assert_allclose(r32, r64, rtol=1e-3, atol=1e-5 * np.abs(r64).max())
    # the user's float32 module stays float32 after a float64 explanation
    assert next(cnn_lrp.estimator_.module_.parameters()).dtype == torch.float32


def test_composite_parameters_are_searchable(digits, cnn_lrp):
    X, y = digits

    def neg_abs_residual(est, X_, y_):
        return -float(np.abs(est.explain(X_).residual).mean())

    base = sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_))
    grid = {"conv_rule": ["zplus", "alphabeta"], "flat_depth": [None, 1], "epsilon": [0.01, 1.0]}
    search = GridSearchCV(base, grid, scoring=neg_abs_residual, cv=[(np.arange(20), np.arange(20, 40))])
    search.fit(X[1300:1340], y[1300:1340])
    assert set(search.best_params_) == set(grid)


def test_bad_inputs(digits, cnn_lrp):
    X, y = digits
    bad = X[1300:1302].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cnn_lrp.transform(bad)
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        cnn_lrp.transform(bad)
    with pytest.raises(RuntimeError):  # the conv net cannot take a wrong per-sample shape
        cnn_lrp.transform(np.zeros((2, 1, 5, 5), dtype=np.float32))
    with pytest.raises(NotFittedError):
        sklrp.LRPTransformer(FrozenEstimator(_net(SmallCNN))).fit(X[:5], y[:5])
    with pytest.raises(NotFittedError):
        sklrp.LRPTransformer().transform(X[:2].reshape(2, -1))
    with pytest.raises(ValueError, match="unknown target"):
        cnn_lrp.explain(X[1300:1302], target=11)
    with pytest.raises(TypeError, match="weighted"):
        sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_), bias="weighted").fit(X[:2]).transform(X[:2])
    # bias="uniform" spreads the absorbed bias relevance over the pixels: conservation without bias term
    E = sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_), rule="z", bias="uniform",
                             dtype="float64").fit(X[:2]).explain(X[:4])
    np.testing.assert_allclose(E.relevance.reshape(4, -1).sum(1), E.output, rtol=1e-8, atol=1e-10)


def test_unsupported_module_error_names_layer():
    class WithLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    X = np.random.RandomState(0).rand(3, 4)
    lrp_ = sklrp.LRPTransformer(TorchModel(WithLSTM(), classes=[0, 1])).fit(X)
    with pytest.raises(TypeError, match="LSTM"):
        lrp_.transform(X)


def test_verbose_progress_bar(digits, cnn_lrp, capsys):
    X, _ = digits
    lrp_ = sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_), verbose=True, batch_size=4).fit(X[:2])
    assert lrp_.transform(X[:10]).shape == (10, 1, 8, 8)
    assert "LRP" in capsys.readouterr().err


# ----------------------------------------------------------------------------- estimator checks
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


@parametrize_with_checks(
    [TorchModel(nn.Sequential(nn.LazyLinear(2)))],
    expected_failed_checks=lambda est: {
        "check_estimators_overwrite_params": (
            "TorchModel explains the given trained module itself instead of copying a possibly large net; "
            "the checks need a LazyLinear (they vary n_features) and fit materialises its weights, which the "
            "check sees as a mutated parameter. Non-lazy modules are not modified."
        ),
    },
)
def test_torch_model_sklearn_compatible(estimator, check):
    check(estimator)


def test_scores_are_differentiable_when_asked(digits, cnn_lrp):
    """Callers that differentiate the head's scores (sensitivity analysis) get the plain net."""
    X, _ = digits
    chain = cnn_lrp.get_chain()
    x = chain.config.tensor(X[1300:1303]).requires_grad_(True)
    with torch.enable_grad():
        s = chain.scores(x)
        (g,) = torch.autograd.grad(s[:, 0].sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0
    with torch.no_grad():
        plain = chain.scores(chain.config.tensor(X[1300:1303]))
        np.testing.assert_allclose(s.detach().cpu().numpy(), plain.cpu().numpy())


def test_binary_classifier_and_regressor(digits):
    from skorch import NeuralNetBinaryClassifier, NeuralNetRegressor

    X, y = digits
    Xb, yb = X[:300], (y[:300] >= 5)
    torch.manual_seed(0)

    class Single(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x):
            return self.seq(x).squeeze(-1)

    binary = NeuralNetBinaryClassifier(Single, max_epochs=3, lr=0.01, optimizer=torch.optim.Adam, train_split=None,
                                       verbose=0)
    lrp_ = sklrp.LRPTransformer(binary, rule="z").fit(Xb, yb.astype(np.float32))
    E1, E0 = lrp_.explain(Xb[:6], target=1), lrp_.explain(Xb[:6], target=0)
    # one logit: class 0 explains -f(x), so its map is the negated map of class 1
    np.testing.assert_allclose(E0.relevance, -E1.relevance, rtol=1e-10, atol=1e-12)
    Ep = lrp_.explain(Xb[:6])
    np.testing.assert_array_equal(Ep.target, lrp_.estimator_.predict(Xb[:6]))
    assert np.all(Ep.output >= 0)

    torch.manual_seed(0)
    reg = NeuralNetRegressor(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 1)),
        max_epochs=2, lr=0.01, optimizer=torch.optim.Adam, train_split=None, verbose=0,
    )
    lrp_r = sklrp.LRPTransformer(reg, rule="z").fit(Xb, y[:300, None].astype(np.float32))
    Er = lrp_r.explain(Xb[:4])
    with torch.no_grad():
        pred = lrp_r.estimator_.module_(torch.as_tensor(Xb[:4])).numpy().ravel()
    np.testing.assert_allclose(Er.output, pred, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Er.relevance.reshape(4, -1).sum(1) + Er.bias_relevance + Er.residual, Er.output)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float32_matches_cpu_float64(digits, cnn_lrp):
    X, _ = digits
    gpu = sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_), **THESIS_COMPOSITE, device="auto").fit(X[:2])
    assert gpu._config().device.type == "cuda" and gpu._config().dtype == torch.float32
    r_gpu = gpu.transform(X[1300:1340])
    cpu = sklrp.LRPTransformer(FrozenEstimator(cnn_lrp.estimator_), **THESIS_COMPOSITE, device="cpu").fit(X[:2])
    r_cpu = cpu.transform(X[1300:1340])
    np.testing.assert_allclose(r_gpu, r_cpu, rtol=1e-3, atol=1e-4 * np.abs(r_cpu).max())
    # the user's net stays where skorch put it
    assert next(cnn_lrp.estimator_.module_.parameters()).device.type == cnn_lrp.estimator_.device

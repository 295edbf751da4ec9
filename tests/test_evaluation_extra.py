"""Evaluation defaults for tabular data, Eq. (3.7) in one place, the V metric, the signal baselines,
the signed/positive context ratio, and input checks."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import sklrp
from sklrp.evaluation import (
    RegionGrid,
    aopc_from_curves,
    deconvolution_heatmap,
    guided_backprop_heatmap,
    perturbation_curve,
)
from sklrp.evaluation.perturbations import resolve_value_range


@pytest.fixture(scope="module")
def cancer_svc():
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    svc = SVC(kernel="rbf").fit(Xtr, ytr)
    E = sklrp.LRPTransformer(svc, device="cpu").fit(Xtr, ytr).explain(Xte[:80])
    return svc, Xte[:80], E


def test_default_aopc_discriminates_on_standardised_tabular_data(cancer_svc):
    # measured: informed 1.10-1.16 vs random 0.48-0.54 over three splits (about +110 %); one global
    # noise range gave 1.44-1.46 vs 1.43-1.46
    svc, X, E = cancer_svc
    informed = sklrp.aopc_score(svc, X, E.relevance, random_state=0)
    random = sklrp.aopc_score(svc, X, E.relevance, order="random", n_repeats=5, random_state=0)
    assert informed > 1.5 * random
    rel = sklrp.aopc_score(svc, X, E.relevance, relative_to="random", n_repeats=5, random_state=0)
    assert rel > 0.4


def test_auto_perturbation_is_mean_for_tabular_and_uniform_for_images(cancer_svc):
    svc, X, E = cancer_svc
    kw = dict(n_steps=5, random_state=0)
    np.testing.assert_array_equal(perturbation_curve(svc, X, E.relevance, **kw),
                                  perturbation_curve(svc, X, E.relevance, perturbation="mean", **kw))
    imgs = np.random.RandomState(0).rand(4, 6, 6)
    f = lambda Z: Z.reshape(len(Z), -1).sum(1)  # noqa: E731
    np.testing.assert_array_equal(perturbation_curve(f, imgs, imgs, region_size=2, **kw),
                                  perturbation_curve(f, imgs, imgs, region_size=2, perturbation="uniform",
                                                     value_range="global", **kw))


def test_value_ranges():
    X = np.array([[0.0, 10.0], [2.0, 30.0]])
    tab, img = RegionGrid((2,)), RegionGrid((1, 2))
    lo, hi = resolve_value_range(None, X, tab)
    np.testing.assert_array_equal(lo, [0.0, 10.0]) and np.testing.assert_array_equal(hi, [2.0, 30.0])
    assert resolve_value_range(None, X, img) == (0.0, 30.0)
    assert resolve_value_range("global", X, tab) == (0.0, 30.0)
    assert resolve_value_range((-1, 1), X, tab) == (-1.0, 1.0)
    for bad in ("wide", (1, 0), (0, np.inf), 3.0):
        with pytest.raises(ValueError, match="value_range must be"):
            resolve_value_range(bad, X, tab)


def test_per_feature_uniform_noise_stays_in_each_features_range():
    X = np.array([[0.0, 100.0], [1.0, 200.0], [0.5, 150.0]])
    seen = []

    def f(Z):
        seen.append(Z.copy())
        return Z.sum(1)

    perturbation_curve(f, X, X, perturbation="uniform", n_repeats=20, order="random", random_state=0)
    Z = np.concatenate(seen)
    assert Z[:, 0].min() >= 0 and Z[:, 0].max() <= 1 and Z[:, 1].min() >= 100 and Z[:, 1].max() <= 200


def test_aopc_from_curves_is_eq_3_7():
    rng = np.random.RandomState(0)
    curves = rng.randn(5, 7)
    ref = np.mean([[curves[i, 0] - curves[i, k] for k in range(7)] for i in range(5)])
    assert aopc_from_curves(curves) == pytest.approx(ref)
    cum = aopc_from_curves(curves, cumulative=True)
    for L in range(7):
        assert cum[L] == pytest.approx(np.mean([np.mean([curves[i, 0] - curves[i, k] for k in range(L + 1)])
                                                for i in range(5)]))
    assert aopc_from_curves(curves[0]) == pytest.approx(np.mean(curves[0, 0] - curves[0]))
    with pytest.raises(ValueError, match="curves must have shape"):
        aopc_from_curves(np.zeros((2, 2, 2)))


def test_prediction_changes_against_a_loop():
    # V of Fig. 4.3: share of samples whose predicted class differs from the unperturbed one
    rng = np.random.RandomState(1)
    X = rng.randn(30, 5)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    R = X * model.coef_[0]
    curves, changes = perturbation_curve(model, X, R, perturbation="flip", value_range=(-3, 3),
                                         return_prediction_changes=True)
    order = np.argsort(-R, axis=1, kind="stable")
    for i in range(len(X)):
        x, base = X[i].copy(), model.predict(X[i:i + 1])[0]
        assert changes[i, 0] == 0
        for k in range(5):
            x[order[i, k]] = -3 + 3 - X[i, order[i, k]]
            assert changes[i, k + 1] == float(model.predict(x[None])[0] != base)
    assert 0 < changes[:, -1].mean() <= 1
    with pytest.raises(ValueError, match="needs a classifier"):
        perturbation_curve(lambda Z: Z.sum(1), X, R, return_prediction_changes=True)


# -- deconvolution and guided backpropagation (Section 3.2) ---------------------------------
def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()


def _manual_signal(net, x, cls, guided):
    """Backward signal by hand: W2^T e_c, rectified (and masked by the activation if guided), then W1^T."""
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2 = net[2].weight.detach().numpy()
    pre = w1 @ x + b1
    s = np.maximum(w2[cls], 0.0)
    if guided:
        s = s * (pre > 0)
    return np.abs(w1.T @ s)


@pytest.mark.parametrize("guided", [False, True])
def test_signal_baselines_against_hand_computation(guided):
    net = _net()
    X = np.random.RandomState(0).randn(6, 3)
    fn = guided_backprop_heatmap if guided else deconvolution_heatmap
    H = fn(net, X, target=1)
    for i in range(len(X)):
        np.testing.assert_allclose(H[i], _manual_signal(net, X[i], 1, guided), rtol=1e-10)


def test_signal_baselines_through_an_explainer_and_functional_relu():
    class Functional(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net[2](torch.nn.functional.relu(self.net[0](x)))

    net = _net()
    X = np.random.RandomState(0).randn(6, 3)
    ref = deconvolution_heatmap(net, X, target=0)
    np.testing.assert_allclose(deconvolution_heatmap(Functional(net), X, target=0), ref, rtol=1e-10)
    lrp = sklrp.LRPTransformer(sklrp.nn.TorchModel(net, classes=[0, 1]), device="cpu").fit(X)
    np.testing.assert_allclose(sklrp.deconvolution_heatmap(lrp, X, target=0), ref, rtol=1e-10)
    # the gradient itself is untouched afterwards
    np.testing.assert_allclose(sklrp.sensitivity_heatmap(net, X, target=0),
                               sklrp.sensitivity_heatmap(Functional(net), X, target=0), rtol=1e-10)


def test_signal_baselines_need_a_torch_network():
    X = np.random.RandomState(0).randn(10, 3)
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    with pytest.raises(ValueError, match="deconvolution_heatmap needs a torch network"):
        deconvolution_heatmap(model, X)


# -- context ratio ------------------------------------------------------------------------
def test_context_ratio_positive_only_is_the_default():
    R = np.zeros((1, 4, 4))
    R[0, 1:3, 1:3] = [[2.0, -1.0], [2.0, -1.0]]  # inside mean: 0.5 signed, 1.0 positive
    R[0, 0, 0] = 6.0
    R[0, 3, 3] = -6.0  # outside mean: 0 signed, 0.5 positive
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    np.testing.assert_allclose(sklrp.context_ratio(R, mask), [0.5 / 1.0])
    np.testing.assert_allclose(sklrp.context_ratio(R, mask, positive_only=False), [0.0])


def test_context_ratio_warns_on_empty_inside():
    R = np.zeros((2, 3, 3))
    R[0, 0, 0] = 1.0
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    with pytest.warns(RuntimeWarning, match="2 of 2 maps have no positive relevance inside"):
        mu = sklrp.context_ratio(R, mask)
    assert np.isinf(mu[0]) and np.isnan(mu[1])


# -- inputs -------------------------------------------------------------------------------
def test_sparse_input_is_densified():
    rng = np.random.RandomState(0)
    X = rng.rand(20, 6)
    model = LogisticRegression().fit(X, X[:, 0] > 0.5)
    R = X * model.coef_[0]
    dense = sklrp.aopc_score(model, X, R)
    assert sklrp.aopc_score(model, sp.csr_matrix(X), sp.csr_matrix(R)) == pytest.approx(dense)


@pytest.mark.parametrize("call", [
    lambda f, X, R: sklrp.aopc_score(f, X, R),
    lambda f, X, R: sklrp.perturbation_curve(f, X, R),
    lambda f, X, R: sklrp.sensitivity_heatmap(f, X),
])
def test_zero_features_are_refused(call):
    with pytest.raises(ValueError, match=r"X has no features \(shape \(3, 0\)\)"):
        call(lambda Z: Z.sum(1), np.zeros((3, 0)), np.zeros((3, 0)))


@pytest.mark.parametrize("region_size", [2.5, "3", (1, 2, 3), 0])
def test_bad_region_size(region_size):
    imgs = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="region_size must be a positive integer or a pair of them"):
        sklrp.aopc_score(lambda Z: Z.sum((1, 2)), imgs, imgs, region_size=region_size)

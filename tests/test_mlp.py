"""scikit-learn MLPs (sklrp.nn.sklearn_mlp) against a numpy loop written from the thesis' formulas.

The reference runs the MLP forward from ``coefs_`` / ``intercepts_`` by hand and applies
the rules of Table 2.1 neuron by neuron (loops over i and j), one sample at a time, with
activations passing relevance unchanged (Eq. (2.37)).
"""

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklrp
from sklrp.nn import MLPHead, mlp_module
from sklrp.propagators import RuleConfig, propagator_for
from sklrp.rules import AlphaBeta, Epsilon, Flat, WSquare, Z, ZPlus

torch.set_num_threads(1)
ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
G = {"identity": lambda z: z, "logistic": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
     "relu": lambda z: np.maximum(z, 0)}


# ----------------------------------------------------------------------------- reference
def ref_rule(rule, W, b, x, R):
    """One rule of Table 2.1 with loops over i and j (one sample): (R_in, R_bias)."""
    n_in, n_out = W.shape
    r_in, r_b = np.zeros(n_in), 0.0
    for j in range(n_out):
        if isinstance(rule, Flat):  # Eq. (2.27)
            conn = [i for i in range(n_in) if W[i, j] != 0]
            for i in conn:
                r_in[i] += R[j] / len(conn)
            continue
        if isinstance(rule, WSquare):  # Eq. (2.28)
            den = sum(W[i, j] ** 2 for i in range(n_in))
            for i in range(n_in):
                r_in[i] += W[i, j] ** 2 / den * R[j]
            continue
        z = [x[i] * W[i, j] for i in range(n_in)]
        if isinstance(rule, AlphaBeta):  # Eqs. (2.24)-(2.26), bias in its parts, 0/0 := 0
            zp = sum(max(v, 0.0) for v in z) + max(b[j], 0.0)
            zn = sum(min(v, 0.0) for v in z) + min(b[j], 0.0)
            for i in range(n_in):
                r_in[i] += (rule.alpha * max(z[i], 0.0) / zp if zp else 0.0) * R[j]
                r_in[i] += (rule.beta * min(z[i], 0.0) / zn if zn else 0.0) * R[j]
            r_b += (rule.alpha * max(b[j], 0.0) / zp if zp else 0.0) * R[j]
            r_b += (rule.beta * min(b[j], 0.0) / zn if zn else 0.0) * R[j]
            continue
        zj = sum(z) + b[j]
        if isinstance(rule, Epsilon):  # Eq. (2.22), sign(0) = +1
            zj += rule.epsilon * (1.0 if zj >= 0 else -1.0)
        if zj == 0:  # 0/0 := 0: the unit's relevance is absorbed
            continue
        for i in range(n_in):
            r_in[i] += z[i] / zj * R[j]
        r_b += b[j] / zj * R[j]
    return r_in, r_b


def ref_mlp(mlp, x, c, rules):
    """LRP of one sample: ``rules[l]`` for layer ``l`` (0 = input layer), initial relevance ``c * logits``.

    Returns (R_input, R_bias, relevances per layer input from the top down).
    """
    acts, L = [np.asarray(x, dtype=float)], len(mlp.coefs_)
    for l, (W, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        z = acts[-1] @ W + b
        acts.append(G[mlp.activation](z) if l < L - 1 else z)  # output activation left out
    R, rb, per_layer = c * acts[-1], 0.0, []
    for l in reversed(range(L)):
        R, r = ref_rule(rules[l], mlp.coefs_[l], mlp.intercepts_[l], acts[l], R)  # activations: identity
        rb += r
        per_layer.append(R)
    return R, rb, per_layer


def fit_quietly(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


_CACHE = {}


def fitted(kind, act):
    key = (kind, act)
    if key not in _CACHE:
        rng = np.random.RandomState(0)
        X = rng.randn(60, 4)
        if kind == "regressor":
            y = np.c_[X[:, 0] - X[:, 1] ** 2, X[:, 2] * X[:, 3]]
            est = MLPRegressor(hidden_layer_sizes=(5, 3), activation=act, max_iter=60, random_state=0)
        else:
            y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (kind == "multiclass") * (X[:, 3] > 0.5)
            est = MLPClassifier(hidden_layer_sizes=(5, 3), activation=act, max_iter=60, random_state=0)
        _CACHE[key] = (fit_quietly(est, X, y), X, y)
    return _CACHE[key][:2]


def labels(kind):
    fitted(kind, "relu")
    return _CACHE[(kind, "relu")][2]


def initial_weights(mlp, E, kind):
    """The target weights c over the logit columns for the explained targets."""
    if kind == "regressor":
        return np.eye(len(mlp.intercepts_[-1]))[E.target.astype(int)]
    if kind == "binary":
        return np.where(E.target == mlp.classes_[1], 1.0, -1.0)[:, None]
    return (E.target[:, None] == mlp.classes_[None, :]).astype(float)


# ----------------------------------------------------------------------------- reference tests
@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("rule", [Z(), Epsilon(0.1), AlphaBeta(2.0, -1.0), ZPlus()], ids=repr)
def test_mlp_matches_numpy_loop_reference(kind, act, rule):
    mlp, X = fitted(kind, act)
    target = 1 if kind == "regressor" else "predicted"
    E = sklrp.LRPTransformer(FrozenEstimator(mlp), rule=rule, target=target).fit(X).explain(X[:4])
    c = initial_weights(mlp, E, kind)
    for n in range(4):
        r, rb, _ = ref_mlp(mlp, X[n], c[n], [rule] * len(mlp.coefs_))
        np.testing.assert_allclose(E.relevance[n], r, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(E.bias_relevance[n], rb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("params, rules", [
    (dict(rule="epsilon", epsilon=0.05, input_rule="wsquare"), [WSquare(), Epsilon(0.05), Epsilon(0.05)]),
    (dict(rule="alphabeta", flat_depth=1), [Flat(), AlphaBeta(2.0, -1.0), AlphaBeta(2.0, -1.0)]),
    (dict(rule="z", flat_depth=2), [Flat(), Flat(), Z()]),
], ids=["input_rule", "flat_depth1", "flat_depth2"])
def test_mlp_composites_match_reference(params, rules):
    mlp, X = fitted("multiclass", "tanh")
    E = sklrp.LRPTransformer(FrozenEstimator(mlp), **params).fit(X).explain(X[:3])
    c = initial_weights(mlp, E, "multiclass")
    for n in range(3):
        r, rb, _ = ref_mlp(mlp, X[n], c[n], rules)
        np.testing.assert_allclose(E.relevance[n], r, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(E.bias_relevance[n], rb, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_module_reproduces_predictions_and_logits_are_explained(act):
    for kind in ("binary", "multiclass", "regressor"):
        mlp, X = fitted(kind, act)
        logits = mlp_module(mlp)(torch.as_tensor(X)).detach().numpy()
        if kind == "regressor":
            np.testing.assert_allclose(logits, mlp.predict(X), rtol=1e-10, atol=1e-12)
            continue
        proba = mlp.predict_proba(X)
        if kind == "binary":
            assert logits.shape[1] == 1
            np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, 0])), proba[:, 1], rtol=1e-10)
        else:
            soft = np.exp(logits - logits.max(1, keepdims=True))
            np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), proba, rtol=1e-10, atol=1e-14)
        E = sklrp.LRPTransformer(FrozenEstimator(mlp), rule="z").fit(X).explain(X)
        np.testing.assert_array_equal(E.target, mlp.predict(X))
        if kind == "binary":
            # one logit column, positive for classes_[1]; explaining classes_[0] explains -z
            np.testing.assert_allclose(E.output, np.abs(logits[:, 0]), rtol=1e-10)
            E0 = sklrp.LRPTransformer(FrozenEstimator(mlp), rule="z", target=mlp.classes_[0]).fit(X).explain(X)
            np.testing.assert_allclose(E0.output, -logits[:, 0], rtol=1e-10)
        else:
            np.testing.assert_allclose(E.output, logits.max(1), rtol=1e-10)


@pytest.mark.parametrize("act", ["identity", "tanh", "relu", "logistic"])
def test_z_rule_conserves_in_a_pipeline(act):
    mlp, X = fitted("multiclass", act)
    net = MLPClassifier(hidden_layer_sizes=(6,), activation=act, max_iter=60, random_state=1)
    pipe = make_pipeline(StandardScaler(), net)
    pipe = fit_quietly(pipe, X * 3 + 1, labels("multiclass"))
    E = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z").fit(X).explain(X * 3 + 1)
    scale = np.abs(E.relevance).sum(1) + np.abs(E.bias_relevance) + np.abs(E.output)
    assert np.all(np.abs(E.residual) <= 1e-12 * scale)


@pytest.mark.parametrize("act, lost", [("logistic", True), ("tanh", False), ("relu", False)])
def test_unit_with_zero_preactivation_bounds_z_rule_conservation(act, lost):
    """g(0) = 1/2 for logistic units: a unit with z_j = 0 receives R_j and cannot pass it down.

    The z-rule then loses exactly that R_j (the documented bound); activations with
    g(0) = 0 lose nothing.
    """
    mlp, X = fitted("multiclass", act)
    dead = copy.deepcopy(mlp)
    dead.coefs_[0][:, 2] = 0.0  # hidden unit 2 of the first layer: z = 0 for every input
    dead.intercepts_[0][2] = 0.0
    E = sklrp.LRPTransformer(FrozenEstimator(dead), rule="z").fit(X).explain(X[:6])
    c = initial_weights(dead, E, "multiclass")
    for n in range(6):
        _, _, per_layer = ref_mlp(dead, X[n], c[n], [Z()] * 3)
        r_unit = per_layer[1][2]  # relevance of the dead unit (input of layer 1)
        assert (abs(r_unit) > 1e-6) == lost
        np.testing.assert_allclose(E.residual[n], r_unit, rtol=1e-8, atol=1e-12)


def test_epsilon_absorbs_as_eq_2_23():
    mlp, X = fitted("binary", "logistic")
    E = sklrp.LRPTransformer(FrozenEstimator(mlp), rule="epsilon", epsilon=0.5).fit(X).explain(X[:5])
    c = initial_weights(mlp, E, "binary")
    # what the stabiliser absorbs, layer by layer: R_j * eps sign(z_j) / (z_j + eps sign(z_j))
    for n in range(5):
        acts = [X[n]]
        for l, (W, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
            z = acts[-1] @ W + b
            acts.append(G["logistic"](z) if l < 2 else z)
        R, absorbed = c[n] * acts[-1], 0.0
        for l in reversed(range(3)):
            z = acts[l] @ mlp.coefs_[l] + mlp.intercepts_[l]
            s = np.where(z >= 0, 0.5, -0.5)
            absorbed += np.sum(R * s / (z + s))
            R, _ = ref_rule(Epsilon(0.5), mlp.coefs_[l], mlp.intercepts_[l], acts[l], R)
        np.testing.assert_allclose(E.residual[n], absorbed, rtol=1e-9, atol=1e-12)


def test_float32_matches_float64():
    mlp, X = fitted("multiclass", "relu")
    lrp = sklrp.LRPTransformer(FrozenEstimator(mlp), rule="epsilon").fit(X)
    E64 = lrp.explain(X)
    E32 = lrp.set_params(dtype="float32").explain(X)
    np.testing.assert_allclose(E32.relevance, E64.relevance, rtol=1e-4, atol=1e-4)


def test_refitted_model_is_never_explained_with_stale_weights():
    mlp, X = fitted("regressor", "tanh")
    mlp = copy.deepcopy(mlp)
    head = propagator_for(mlp)
    assert isinstance(head, MLPHead)
    config = RuleConfig(Z())
    before = head.scores(torch.as_tensor(X), config).numpy()
    mlp.coefs_[-1] *= 2.0  # in place, as partial_fit's optimiser does
    mlp.intercepts_[-1] *= 2.0
    after = head.scores(torch.as_tensor(X), config).numpy()
    np.testing.assert_allclose(after, 2 * before, rtol=1e-12)
    np.testing.assert_allclose(after, mlp.predict(X), rtol=1e-10)


def test_multilabel_and_poisson_explain_their_logits():
    rng = np.random.RandomState(2)
    X = rng.randn(50, 3)
    Y = (X > 0).astype(int)
    ml = fit_quietly(MLPClassifier(hidden_layer_sizes=(4,), max_iter=50, random_state=0), X, Y)
    logits = mlp_module(ml)(torch.as_tensor(X)).detach().numpy()
    E = sklrp.LRPTransformer(FrozenEstimator(ml), rule="z", target=2).fit(X).explain(X[:5])
    np.testing.assert_allclose(E.output, logits[:5, 2], rtol=1e-10)  # the label's logit (index = label)
    np.testing.assert_allclose(E.relevance.sum(1) + E.bias_relevance, E.output, rtol=1e-10)
    pois = fit_quietly(MLPRegressor(hidden_layer_sizes=(4,), loss="poisson", max_iter=50, random_state=0), X,
                       np.exp(X[:, 0]))
    E = sklrp.LRPTransformer(FrozenEstimator(pois), rule="z").fit(X).explain(X[:5])
    np.testing.assert_allclose(E.output, np.log(pois.predict(X[:5])), rtol=1e-10)  # exp output removed


def test_mlp_fitted_by_lrp_transformer_and_in_supported_steps():
    X, y = np.random.RandomState(3).randn(40, 3), np.arange(40) % 3
    lrp = sklrp.LRPTransformer(MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0), rule="z")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        R = lrp.fit_transform(X, y)
    assert R.shape == X.shape
    np.testing.assert_array_equal(lrp.classes_, [0, 1, 2])
    assert "MLPClassifier, MLPRegressor" in sklrp.supported_steps()


# ----------------------------------------------------------------------------- bad inputs
def test_unfitted_mlp_is_a_clear_error():
    X = np.zeros((3, 2))
    with pytest.raises(NotFittedError, match="MLPClassifier"):
        sklrp.LRPTransformer(FrozenEstimator(MLPClassifier())).fit(X).explain(X)
    with pytest.raises(NotFittedError, match="not fitted"):
        mlp_module(MLPRegressor())


def test_bad_inputs_and_modes():
    mlp, X = fitted("regressor", "relu")
    lrp = sklrp.LRPTransformer(FrozenEstimator(mlp)).fit(X)
    bad = X[:2].copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lrp.explain(bad)
    with pytest.raises(ValueError, match="ambiguous"):
        lrp.explain(X[:2], target="predicted")
    with pytest.raises(ValueError, match="output index"):
        lrp.explain(X[:2], target=5)
    with pytest.raises(ValueError, match="features"):
        lrp.explain(X[:2, :3], target=0)
    with pytest.raises(TypeError, match="weighted"):
        sklrp.LRPTransformer(FrozenEstimator(mlp), bias="weighted", target=0).fit(X).explain(X[:2])
    # bias="uniform" spreads the absorbed bias of the output layer only (Eq. (2.73)); the sum is unchanged
    Ek = sklrp.LRPTransformer(FrozenEstimator(mlp), rule="z", target=0).fit(X).explain(X[:3])
    Eu = sklrp.LRPTransformer(FrozenEstimator(mlp), rule="z", target=0, bias="uniform").fit(X).explain(X[:3])
    np.testing.assert_allclose(Eu.relevance.sum(1) + Eu.bias_relevance, Ek.output, rtol=1e-10)


def test_single_class_classifier_is_a_clear_error():
    X = np.random.RandomState(0).randn(10, 2)
    mlp = fit_quietly(MLPClassifier(hidden_layer_sizes=(2,), max_iter=5), X, np.ones(10, dtype=int))
    with pytest.raises(ValueError, match="single class"):
        sklrp.LRPTransformer(FrozenEstimator(mlp)).fit(X).explain(X)


def test_unknown_activation_is_rejected():
    mlp, X = fitted("binary", "relu")
    odd = copy.deepcopy(mlp)
    odd.activation = "softplus"
    with pytest.raises(ValueError, match="activation='softplus'"):
        propagator_for(odd)

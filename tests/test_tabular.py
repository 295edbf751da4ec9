"""Tabular preprocessing propagators (sklrp.tabular) against loop references written from their definitions.

The references find the source column(s) of every output column independently of the
propagators: from the names ``get_feature_names_out`` gives the output columns (for
encoders, imputers, bins and splines every output name starts with its input column's
name), from ``powers_`` for polynomial features and from ``get_support`` for
selectors. Relevance is then moved output column by output column in Python loops.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.exceptions import NotFittedError
from sklearn.feature_selection import RFE, SelectFromModel, SelectKBest, SelectPercentile, VarianceThreshold
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import (
    KBinsDiscretizer,
    MaxAbsScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    SplineTransformer,
    StandardScaler,
    TargetEncoder,
)

from sklrp.propagators import RuleConfig, build_chain, propagator_for
from sklrp.rules import AlphaBeta, Epsilon, Z
from sklrp.tabular import Routing

torch.set_num_threads(1)
CFG = RuleConfig(Z())


# ----------------------------------------------------------------------------- helpers and references
def rel_for(width, n=4, seed=0):
    return torch.as_tensor(np.random.RandomState(seed).randn(n, width))


def ref_route_by_name(step, input_names, R):
    """Output column j goes to the input column whose name prefixes its output name (loops over j)."""
    out_names = step.get_feature_names_out(input_names) if not hasattr(step, "feature_names_in_") else \
        step.get_feature_names_out()
    R = np.asarray(R)
    r_in, r_b = np.zeros((R.shape[0], len(input_names))), np.zeros(R.shape[0])
    for j, name in enumerate(out_names):
        src = [i for i, inp in enumerate(input_names)
               if name.startswith(f"{inp}_") or name == inp or name == f"missingindicator_{inp}"]
        assert len(src) == 1, (name, src)
        r_in[:, src[0]] += R[:, j]
    return r_in, r_b


def check_routing_step(step, X, names=None, n=4):
    """forward == transform (dense); backward == the name-based loop reference; exact conservation."""
    prop = propagator_for(step)
    out = step.transform(X[:n])
    out = out.toarray() if sparse.issparse(out) else np.asarray(out, dtype=float)
    x = prop.forward(X[:n], CFG)
    np.testing.assert_array_equal(x.numpy(), out)
    R = rel_for(out.shape[1], n)
    lr = prop.backward(X[:n], R, CFG)
    names = list(names) if names is not None else [f"x{i}" for i in range(np.shape(X)[1])]
    ref_r, ref_b = ref_route_by_name(step, names, R.numpy())
    np.testing.assert_allclose(lr.input.numpy(), ref_r, rtol=0, atol=1e-14)
    np.testing.assert_allclose(lr.input.sum(1) + lr.bias, R.sum(1), rtol=1e-13)
    return prop, lr


def explain_chain(pipe, X, rule=Z(), target=None):
    """Algorithm 1 by hand through build_chain (forward once, head, every step backward)."""
    cfg = RuleConfig(rule)
    body, head = build_chain(pipe)
    acts = [X if getattr(body[0], "raw_input", False) else cfg.tensor(X)]
    for p in body:
        acts.append(p.forward(acts[-1], cfg))
    s = head.scores(acts[-1], cfg)
    labels = head.predicted(s.numpy()) if target is None else np.full(s.shape[0], target)
    w = cfg.tensor(head.target_weights(labels, s.shape[1]))
    out = (w * s).sum(1)
    hr = head.relevance(acts[-1], w, s, cfg)
    r, rb = hr.relevance, hr.bias
    for p, a in zip(reversed(body), reversed(acts[:-1])):
        lr = p.backward(a, r, cfg)
        r, rb = lr.input, rb + lr.bias
    return r.numpy(), rb.numpy(), out.numpy()


CATS = np.array([["a", "x", 1], ["a", "y", 2], ["b", "y", 2], ["c", "y", 3], ["a", "z", 1], ["d", "y", 3],
                 ["b", "x", 2], ["a", "y", 1]], dtype=object)


# ----------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("params", [
    {}, {"drop": "first"}, {"drop": "if_binary"}, {"drop": np.array(["b", "y", 2], dtype=object)},
    {"min_frequency": 2}, {"max_categories": 2, "drop": "first"}, {"handle_unknown": "ignore"},
    {"handle_unknown": "infrequent_if_exist", "min_frequency": 2}, {"sparse_output": True},
], ids=["default", "drop_first", "if_binary", "drop_array", "min_freq", "max_cat_drop", "ignore", "infrequent",
        "sparse"])
def test_one_hot_relevance_is_sum_over_its_columns(params):
    params = {"sparse_output": False, **params}
    enc = OneHotEncoder(**params).fit(CATS)
    X = CATS.copy()
    if params.get("handle_unknown") in ("ignore", "infrequent_if_exist"):
        X[1, 0] = "unseen"
    check_routing_step(enc, X, n=6)


def test_one_hot_unknown_category_gets_no_relevance_from_a_linear_model():
    """handle_unknown="ignore": the unknown category is an all-zero block, so the feature gets zero relevance."""
    y = np.array([0, 1, 1, 0, 0, 1, 1, 0])
    pipe = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(CATS, y)
    X = CATS[:3].copy()
    X[1, 0] = "unseen"
    r, rb, out = explain_chain(pipe, X)
    assert r[1, 0] == 0.0 and r[0, 0] != 0.0
    np.testing.assert_allclose(r.sum(1) + rb, out, rtol=1e-12)
    # the relevance of a categorical column is the sum over its one-hot columns of w_j x_j
    coef = pipe[-1].coef_[0] * np.where(out * np.sign(pipe.decision_function(X)) >= 0, 1, -1)[:, None]
    onehot = pipe[0].transform(X).toarray()
    sources = np.repeat(np.arange(3), [len(c) for c in pipe[0].categories_])
    for n in range(3):
        for i in range(3):
            assert np.isclose(r[n, i], sum(coef[n, j] * onehot[n, j] for j in np.flatnonzero(sources == i)))


@pytest.mark.parametrize("params", [{}, {"handle_unknown": "use_encoded_value", "unknown_value": -1}])
def test_ordinal_encoder_passes_relevance_unchanged(params):
    enc = OrdinalEncoder(**params).fit(CATS)
    X = CATS.copy()
    if params:
        X[0, 1] = "unseen"
    prop = propagator_for(enc)
    np.testing.assert_array_equal(prop.forward(X, CFG).numpy(), enc.transform(X))
    R = rel_for(3, n=len(X))
    np.testing.assert_array_equal(prop.backward(X, R, CFG).input.numpy(), R.numpy())


@pytest.mark.parametrize("encode", ["onehot", "onehot-dense", "ordinal"])
def test_kbins_columns_return_to_their_feature(encode):
    X = np.random.RandomState(0).randn(40, 3)
    kb = KBinsDiscretizer(n_bins=[3, 4, 2], encode=encode, strategy="uniform").fit(X)
    check_routing_step(kb, X)


@pytest.mark.parametrize("params", [{}, {"include_bias": False}, {"extrapolation": "periodic", "n_knots": 4}])
def test_spline_columns_return_to_their_feature(params):
    X = np.random.RandomState(1).randn(30, 3)
    check_routing_step(SplineTransformer(**params).fit(X), X)


def ref_poly(powers, R):
    """Exponent shares p_ji / d_j with loops; degree-0 outputs to the bias."""
    r_in, r_b = np.zeros((R.shape[0], powers.shape[1])), np.zeros(R.shape[0])
    for j in range(powers.shape[0]):
        d = powers[j].sum()
        if d == 0:
            r_b += R[:, j]
            continue
        for i in range(powers.shape[1]):
            r_in[:, i] += powers[j, i] / d * R[:, j]
    return r_in, r_b


@pytest.mark.parametrize("params", [{"degree": 3}, {"degree": 2, "interaction_only": True},
                                    {"degree": (2, 3), "include_bias": False}])
def test_polynomial_features_match_exponent_shares(params):
    X = np.random.RandomState(2).randn(10, 3)
    poly = PolynomialFeatures(**params).fit(X)
    prop = propagator_for(poly)
    np.testing.assert_allclose(prop.forward(X, CFG).numpy(), poly.transform(X), rtol=1e-15)
    R = rel_for(poly.n_output_features_, n=5)
    lr = prop.backward(X[:5], R, CFG)
    ref_r, ref_b = ref_poly(poly.powers_, R.numpy())
    np.testing.assert_allclose(lr.input.numpy(), ref_r, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(lr.bias.numpy(), ref_b, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(lr.input.sum(1) + lr.bias, R.sum(1), rtol=1e-12)


def test_polynomial_shares_of_a_mixed_monomial_and_z_rule_conservation():
    X = np.random.RandomState(3).randn(50, 2)
    y = X[:, 0] ** 2 * X[:, 1] + X[:, 0] * X[:, 1]
    pipe = make_pipeline(PolynomialFeatures(3), LinearRegression()).fit(X, y)
    r, rb, out = explain_chain(pipe, X[:6], target=0)
    np.testing.assert_allclose(r.sum(1) + rb, out, rtol=1e-10)
    np.testing.assert_allclose(out, pipe.predict(X[:6]), rtol=1e-10)
    # x0^2 x1 hands 2/3 to x0 and 1/3 to x1; the model is (almost) exactly y
    poly = PolynomialFeatures(3).fit(X)
    j = [k for k, p in enumerate(poly.powers_) if tuple(p) == (2, 1)][0]
    R = torch.zeros(1, poly.n_output_features_, dtype=torch.float64)
    R[0, j] = 3.0
    np.testing.assert_allclose(propagator_for(poly).backward(X[:1], R, CFG).input.numpy(), [[2.0, 1.0]])


# ----------------------------------------------------------------------------- imputers
def test_simple_imputer_with_indicator_and_dropped_empty_column():
    X = np.array([[1.0, np.nan, np.nan, 4.0], [np.nan, 2.0, np.nan, 5.0], [3.0, 1.0, np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Skipping features without any observed values"
        check_routing_step(SimpleImputer(add_indicator=True).fit(X), X, n=3)
        _, lr = check_routing_step(SimpleImputer().fit(X), X, n=3)
    assert np.all(lr.input.numpy()[:, 2] == 0.0)  # the empty column is dropped: exactly zero relevance


@pytest.mark.parametrize("params", [{"keep_empty_features": True}, {"strategy": "constant", "fill_value": -1.0}])
def test_simple_imputer_keeps_columns(params):
    X = np.array([[1.0, np.nan, np.nan], [np.nan, 2.0, np.nan], [3.0, 1.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Skipping features without any observed values"
        check_routing_step(SimpleImputer(add_indicator=True, **params).fit(X), X, n=3)


def test_simple_imputer_on_strings_as_first_step_is_explained_or_refused_clearly():
    X = np.array([["a", np.nan], [np.nan, "y"], ["a", "x"]], dtype=object)
    imp = SimpleImputer(strategy="most_frequent", add_indicator=True).fit(X)
    with pytest.raises(TypeError, match="not numeric.*ColumnTransformer"):
        propagator_for(imp).forward(X, CFG)
    # its backward pass needs only the row count: routing works on the raw batch
    lr = propagator_for(imp).backward(X, rel_for(4, n=3), CFG)
    assert lr.input.shape == (3, 2)


@pytest.mark.parametrize("features", ["missing-only", "all"])
def test_missing_indicator_routes_to_the_watched_column(features):
    X = np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, 3.0], [3.0, 1.0, 3.0]])
    mi = MissingIndicator(features=features).fit(X)
    prop = propagator_for(mi)
    R = rel_for(len(mi.features_), n=3)
    r = prop.backward(X, R, CFG).input.numpy()
    ref = np.zeros((3, 3))
    for k, src in enumerate(mi.features_):
        ref[:, src] += R.numpy()[:, k]
    np.testing.assert_array_equal(r, ref)
    np.testing.assert_array_equal(prop.forward(X, CFG).numpy(), mi.transform(X))


# ----------------------------------------------------------------------------- selectors
@pytest.mark.parametrize("make", [
    lambda: SelectKBest(k=3), lambda: SelectPercentile(percentile=50), lambda: VarianceThreshold(0.5),
    lambda: SelectFromModel(LogisticRegression(), max_features=2),
    lambda: RFE(LogisticRegression(), n_features_to_select=2),
], ids=["kbest", "percentile", "variance", "from_model", "rfe"])
def test_selectors_give_dropped_features_exactly_zero(make):
    rng = np.random.RandomState(4)
    X = rng.randn(60, 6) * [1, 0.1, 2, 0.3, 1, 3]
    y = (X[:, 0] + X[:, 2] > 0).astype(int)
    sel = make().fit(X, y)
    prop = propagator_for(sel)
    x = torch.as_tensor(X[:5])
    np.testing.assert_array_equal(prop.forward(x, CFG).numpy(), sel.transform(X[:5]))
    R = rel_for(sel.get_support().sum(), n=5)
    r = prop.backward(x, R, CFG).input.numpy()
    support = sel.get_support()
    ref = np.zeros((5, 6))
    k = 0
    for i in range(6):
        if support[i]:
            ref[:, i] = R.numpy()[:, k]
            k += 1
    np.testing.assert_array_equal(r, ref)
    assert np.all(r[:, ~support] == 0.0)
    # through a pipeline with the z-rule: exactly conservative, dropped features zero
    pipe = make_pipeline(StandardScaler(), make(), LogisticRegression()).fit(X, y)
    r, rb, out = explain_chain(pipe, X[:5])
    np.testing.assert_allclose(r.sum(1) + rb, out, rtol=1e-12)
    assert np.all(r[:, ~pipe[1].get_support()] == 0.0)


# ----------------------------------------------------------------------------- scalers
def ref_diagonal_z(w, b, x, R):
    r_in, r_b = np.zeros_like(x), np.zeros(x.shape[0])
    for n in range(x.shape[0]):
        for d in range(x.shape[1]):
            z = x[n, d] * w[d] + b[d]
            if z != 0:
                r_in[n, d] = x[n, d] * w[d] / z * R[n, d]
                r_b[n] += b[d] / z * R[n, d]
    return r_in, r_b


@pytest.mark.parametrize("step", [MaxAbsScaler(), RobustScaler(), RobustScaler(with_centering=False),
                                  RobustScaler(with_scaling=False)], ids=repr)
def test_maxabs_and_robust_scalers_follow_eq_2_54(step):
    X = np.random.RandomState(5).randn(20, 3) * [1, 4, 0.5] + [0, 2, -1]
    step.fit(X)
    prop = propagator_for(step)
    x = torch.as_tensor(X[:6])
    np.testing.assert_allclose(prop.forward(x, CFG).numpy(), step.transform(X[:6]), rtol=1e-14)
    if isinstance(step, MaxAbsScaler):
        w, b = 1 / step.scale_, np.zeros(3)
    else:
        s = step.scale_ if step.with_scaling else np.ones(3)
        w, b = 1 / s, (-step.center_ / s if step.with_centering else np.zeros(3))
    R = rel_for(3, n=6)
    lr = prop.backward(x, R, CFG)
    ref_r, ref_b = ref_diagonal_z(w, b, X[:6], R.numpy())
    np.testing.assert_allclose(lr.input.numpy(), ref_r, rtol=1e-12)
    np.testing.assert_allclose(lr.bias.numpy(), ref_b, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- ColumnTransformer
def mixed_frame(n=80, seed=0):
    """Numeric columns with missing values and two categorical string columns."""
    rng = np.random.RandomState(seed)
    df = pd.DataFrame({
        "age": rng.normal(40, 12, n).round(),
        "income": rng.lognormal(10, 0.5, n),
        "city": rng.choice(["Berlin", "Paris", "Rome"], n),
        "plan": rng.choice(["basic", "plus", "pro", "team"], n, p=[0.4, 0.3, 0.2, 0.1]),
        "note": rng.choice(["-", "?"], n),
    })
    df.loc[rng.rand(n) < 0.15, "age"] = np.nan
    df.loc[rng.rand(n) < 0.1, "plan"] = np.nan
    y = ((df["age"].fillna(40) > 45) ^ (df["city"] == "Rome") | (df["plan"] == "pro")).astype(int).to_numpy()
    return df, y


def mixed_preprocessor():
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), ["age", "income"]),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["city", "plan"]),
    ], remainder="drop")


def test_column_transformer_matches_per_column_reference():
    """Scaled columns by Eq. (2.54), one-hot columns summed per categorical column, passthrough unchanged."""
    df, y = mixed_frame()
    df["age"] = df["age"].fillna(30.0)
    ct = ColumnTransformer([("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(), ["city", "plan"]),
                            ("skip", "drop", ["note"])], remainder="passthrough", sparse_threshold=0)
    df["score"] = np.arange(len(df)) % 7 - 3.0
    ct.fit(df, y)
    prop = propagator_for(ct)
    X = df.iloc[:5]
    out = prop.forward(X, CFG).numpy()
    np.testing.assert_allclose(out, ct.transform(X).astype(float))
    R = rel_for(out.shape[1], n=5).numpy()
    lr = prop.backward(X, torch.as_tensor(R), CFG)
    ref, ref_b = np.zeros((5, df.shape[1])), np.zeros(5)
    sc = ct.named_transformers_["num"]
    cols = list(df.columns)
    for n in range(5):
        for k, name in enumerate(["age", "income"]):
            x, w, b = X[name].iloc[n], 1 / sc.scale_[k], -sc.mean_[k] / sc.scale_[k]
            z = x * w + b
            ref[n, cols.index(name)] += x * w / z * R[n, k]
            ref_b[n] += b / z * R[n, k]
        onehot_names = ct.named_transformers_["cat"].get_feature_names_out()
        for j, name in enumerate(onehot_names):
            src = name.split("_")[0]
            ref[n, cols.index(src)] += R[n, ct.output_indices_["cat"].start + j]
        ref[n, cols.index("score")] += R[n, ct.output_indices_["remainder"].start]
    np.testing.assert_allclose(lr.input.numpy(), ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lr.bias.numpy(), ref_b, rtol=1e-12, atol=1e-14)
    assert np.all(lr.input.numpy()[:, cols.index("note")] == 0.0)  # dropped: exactly zero


@pytest.mark.parametrize("model", [LogisticRegression(), MLPClassifier(hidden_layer_sizes=(6,), activation="tanh",
                                                                       max_iter=300, random_state=0)],
                         ids=["logistic_regression", "mlp"])
def test_mixed_frame_pipeline_conserves_with_z_rule(model):
    df, y = mixed_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(mixed_preprocessor(), model).fit(df, y)
    X = df.iloc[:12]
    r, rb, out = explain_chain(pipe, X)
    assert r.shape == (12, 5)
    np.testing.assert_allclose(r.sum(1) + rb, out, rtol=1e-10, atol=1e-12)
    assert np.all(r[:, 4] == 0.0)  # "note" is not read by any transformer
    # the relevance of a categorical column is the sum over its one-hot columns (head relevance routed back)
    if isinstance(model, LogisticRegression):
        Xt = pipe[0].transform(X)
        sign = np.where(pipe.predict(X) == pipe[-1].classes_[1], 1.0, -1.0)
        head_r = sign[:, None] * pipe[-1].coef_[0] * Xt
        cat = pipe[0].output_indices_["cat"]
        names = pipe[0].named_transformers_["cat"][-1].get_feature_names_out()
        for src, col in (("x0", 2), ("x1", 3)):  # the encoder sees the imputer's unnamed output
            js = [cat.start + j for j, nm in enumerate(names) if nm.startswith(src + "_")]
            np.testing.assert_allclose(r[:, col], head_r[:, js].sum(1), rtol=1e-12, atol=1e-14)


def test_mixed_frame_epsilon_and_alphabeta_run_and_bound():
    df, y = mixed_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(mixed_preprocessor(), MLPClassifier(hidden_layer_sizes=(5,), max_iter=200,
                                                                 random_state=0)).fit(df, y)
    for rule in (Epsilon(0.1), AlphaBeta(2.0, -1.0)):
        r, rb, out = explain_chain(pipe, df.iloc[:6], rule=rule)
        assert np.all(np.isfinite(r)) and r.shape == (6, 5)


def test_column_transformer_column_specs_and_numeric_tensor_input():
    """int, slice, bool mask, callable selectors and a remainder transformer; tensors when not first."""
    rng = np.random.RandomState(6)
    X = rng.randn(30, 6)
    X[:, 5] = rng.randint(0, 3, 30)
    ct = ColumnTransformer([
        ("a", StandardScaler(), slice(0, 2)),
        ("b", PolynomialFeatures(2), np.array([False, False, True, True, False, False])),
        ("c", OneHotEncoder(sparse_output=True), [5]),
        ("d", "passthrough", [0]),  # column 0 read twice: relevances add up (Eq. (2.12))
    ], remainder=MaxAbsScaler(), sparse_threshold=1.0).fit(X)
    assert sparse.issparse(ct.transform(X))
    prop = propagator_for(ct)
    x = torch.as_tensor(X[:4])
    np.testing.assert_allclose(prop.forward(x, CFG).numpy(), ct.transform(X[:4]).toarray(), rtol=1e-14)
    R = rel_for(ct.transform(X[:1]).shape[1])
    lr_t = prop.backward(x, R, CFG)
    lr_np = prop.backward(X[:4], R, CFG)
    np.testing.assert_array_equal(lr_t.input.numpy(), lr_np.input.numpy())
    np.testing.assert_allclose(lr_t.input.sum(1) + lr_t.bias, R.sum(1), rtol=1e-12)
    d = ct.output_indices_["d"].start
    a0 = propagator_for(ct.named_transformers_["a"]).backward(x[:, :2], R[:, :2], CFG).input[:, 0]
    np.testing.assert_allclose(lr_t.input[:, 0].numpy(), (a0 + R[:, d]).numpy(), rtol=1e-14)
    # make_column_selector resolves to names on a DataFrame
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(6)])
    ct2 = ColumnTransformer([("n", StandardScaler(), make_column_selector(pattern="c[0-2]")),
                             ("s", "passthrough", slice("c3", "c4"))]).fit(df)
    lr = propagator_for(ct2).backward(df.iloc[:4], rel_for(5), CFG)
    assert np.all(lr.input.numpy()[:, 5] == 0.0) and np.all(lr.input.numpy()[:, 3:5] == rel_for(5).numpy()[:, 3:5])


def test_column_transformer_with_pandas_output_and_feature_union():
    df, y = mixed_frame()
    ct = mixed_preprocessor()
    ct.set_output(transform="pandas")
    for s in ct.transformers:
        if hasattr(s[1], "steps"):
            s[1][-1].set_params(**({"sparse_output": False} if isinstance(s[1][-1], OneHotEncoder) else {}))
    ct.fit(df, y)
    assert isinstance(ct.transform(df.iloc[:3]), pd.DataFrame)
    prop = propagator_for(ct)
    np.testing.assert_allclose(prop.forward(df.iloc[:3], CFG).numpy(), ct.transform(df.iloc[:3]).to_numpy())
    R = rel_for(ct.transform(df.iloc[:1]).shape[1], n=3)
    lr = prop.backward(df.iloc[:3], R, CFG)
    np.testing.assert_allclose(lr.input.sum(1) + lr.bias, R.sum(1), rtol=1e-12)

    X = np.random.RandomState(7).randn(20, 3)
    fu = FeatureUnion([("poly", PolynomialFeatures(2, include_bias=False)), ("sel", SelectKBest(k=2)),
                       ("gone", "drop")], transformer_weights={"sel": 2.0}).fit(X, X[:, 0] > 0)
    prop = propagator_for(fu)
    np.testing.assert_allclose(prop.forward(X[:4], CFG).numpy(), fu.transform(X[:4]))
    R = rel_for(fu.transform(X[:1]).shape[1])
    lr = prop.backward(torch.as_tensor(X[:4]), R, CFG)
    ref = propagator_for(fu.transformer_list[0][1]).backward(X[:4], R[:, :9], CFG).input
    ref = ref + propagator_for(fu.transformer_list[1][1]).backward(torch.as_tensor(X[:4]), R[:, 9:], CFG).input
    np.testing.assert_allclose(lr.input.numpy(), ref.numpy(), rtol=1e-14)


# ----------------------------------------------------------------------------- bad inputs
def test_unsupported_inner_transformer_is_named_with_the_supported_list():
    df, y = mixed_frame()
    ct = ColumnTransformer([("num", StandardScaler(), ["income"]),
                            ("target_enc", make_pipeline(SimpleImputer(strategy="most_frequent"), TargetEncoder()),
                             ["city"])]).fit(df, y)
    with pytest.raises(TypeError, match=r"transformer 'target_enc'.*TargetEncoder.*Supported: .*OneHotEncoder"):
        propagator_for(ct)
    with pytest.raises(TypeError, match=r"transformer 'target_enc'.*TargetEncoder"):
        build_chain(make_pipeline(ct, LogisticRegression()).fit(df, y))


def test_missing_values_reaching_the_model_are_a_clear_error():
    df, y = mixed_frame()
    ct = ColumnTransformer([("num", StandardScaler(), ["age"])]).fit(df, y)
    with pytest.raises(ValueError, match=r"NaN or infinity in columns \['num__age'\].*SimpleImputer"):
        propagator_for(ct).forward(df.iloc[:20], CFG)


def test_non_numeric_output_and_shape_errors():
    df, y = mixed_frame()
    ct = ColumnTransformer([("keep", "passthrough", ["city"])]).fit(df, y)
    with pytest.raises(TypeError, match="not numeric"):
        propagator_for(ct).forward(df.iloc[:3], CFG)
    enc = OneHotEncoder().fit(CATS)
    with pytest.raises(ValueError, match="relevance must have shape"):
        propagator_for(enc).backward(CATS[:2], rel_for(3, n=2), CFG)
    with pytest.raises(ValueError, match="rows"):
        propagator_for(enc).backward(CATS[:3], rel_for(10, n=2), CFG)


def test_unfitted_steps_are_refused():
    with pytest.raises(NotFittedError):
        propagator_for(ColumnTransformer([("a", StandardScaler(), [0])]))
    with pytest.raises(NotFittedError):
        build_chain(make_pipeline(OneHotEncoder(), LogisticRegression()))


def test_routing_validates_and_names_constants():
    r = Routing.from_sources([0, -1, 1, 0], 2)
    np.testing.assert_array_equal(r.constants(), [1])
    lr = r.propagate(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64))
    np.testing.assert_array_equal(lr.input.numpy(), [[5.0, 3.0]])
    np.testing.assert_array_equal(lr.bias.numpy(), [2.0])


def test_adapter_checks_raw_tables():
    df, y = mixed_frame()
    prop = propagator_for(mixed_preprocessor().fit(df, y))
    assert prop.raw_input and prop.n_columns() == 5 and list(prop.feature_names()) == list(df.columns)
    assert prop.check_input(df) is df
    with pytest.raises(ValueError, match="4 columns, but the ColumnTransformer was fitted on 5"):
        prop.check_input(df.iloc[:, :4].to_numpy())
    with pytest.raises(ValueError, match="2-D table"):
        prop.check_raw(np.array(["a", "b"]))
    mixed = prop.check_raw([["a", 1.5], ["b", 2.0]])  # mixed rows keep their numbers
    assert mixed.dtype == object and mixed[0, 1] == 1.5
    # fitted on numbers only: takes tensors anywhere in a chain
    assert not propagator_for(OneHotEncoder().fit(np.array([[1.0], [2.0]]))).raw_input
    assert propagator_for(OneHotEncoder().fit(CATS)).raw_input
    assert not propagator_for(ColumnTransformer([("s", StandardScaler(), [0])]).fit(np.ones((3, 2)))).raw_input

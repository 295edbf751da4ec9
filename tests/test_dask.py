"""Dask input (sklrp.dask): explanations and AOPC computed block by block on a real cluster of
worker processes equal the in-memory results."""

import logging
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import sklrp
from sklrp.evaluation import aopc_from_curves

da = pytest.importorskip("dask.array", reason="dask not installed (pip install 'sklrp[dask]')")
distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed (pip install 'sklrp[dask]')")
import dask  # noqa: E402
from dask.array import PerformanceWarning  # noqa: E402

FIELDS = ("relevance", "bias_relevance", "output", "target", "residual", "taylor_remainder")


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each, for the whole module.

    Workers fork from a server that has imported sklrp once (instead of each spawned worker
    importing torch and sklrp again): the same processes, a third of the start-up time.
    """
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(["distributed", "sklrp"])
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, distributed.Client(cluster) as c:
        yield c


def _data(n=240, d=5, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    return X, y


def _torch_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).double()
    return sklrp.nn.TorchModel(net, classes=[0, 1, 2])


FAMILIES = {
    "linear": (lambda: LogisticRegression(max_iter=1000), {}),
    "pipeline": (lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), {}),
    # Taylor decomposition at root points (Eqs. (2.75)-(2.76)): root_point and extras["root_found"] too
    "rbf-taylor": (lambda: SVC(kernel="rbf", gamma=0.5, C=10.0), {"n_root_candidates": 20}),
    "torch": (_torch_model, {"rule": "epsilon"}),
}


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    out = {}
    for name, (make, params) in FAMILIES.items():
        lrp = sklrp.LRPTransformer(make(), device="cpu", batch_size=40, **params).fit(X[:120], y[:120])
        out[name] = lrp
    return X, y, out


def _assert_explanations(got, want, exact):
    check = np.testing.assert_array_equal if exact else (
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12))
    for key in FIELDS:
        if key == "target":
            np.testing.assert_array_equal(got.target, want.target)
        else:
            check(getattr(got, key), getattr(want, key))
    assert (got.root_point is None) == (want.root_point is None)
    if want.root_point is not None:
        check(got.root_point, want.root_point)
    assert set(got.extras) == set(want.extras)
    for key in want.extras:
        np.testing.assert_array_equal(got.extras[key], want.extras[key])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_explain_on_two_worker_processes_equals_in_memory(client, fitted, family):
    X, y, models = fitted
    lrp = models[family]
    want = lrp.explain(X)
    # row chunks that are multiples of batch_size: the same batches, so the very same numbers;
    # ragged chunks: equal to rounding (BLAS sums differently shaped batches in another order)
    for chunks, exact in (((80, 120, 40), True), (37, False)):
        E = lrp.explain(da.from_array(X, chunks=(chunks, -1)))
        assert isinstance(E.relevance, da.Array) and E.relevance.chunks == da.from_array(X, chunks=(chunks, -1)).chunks
        assert all(isinstance(getattr(E, key), da.Array) for key in FIELDS)
        with distributed.get_task_stream(client) as stream:
            got = sklrp.dask.compute(E)
        assert len({task["worker"] for task in stream.data}) == 2  # both worker processes explained blocks
        _assert_explanations(got, want, exact)
    # transform: the relevance alone, lazily
    R = lrp.transform(da.from_array(X, chunks=(80, -1)))
    assert isinstance(R, da.Array)
    np.testing.assert_array_equal(R.compute(), want.relevance)


def test_explanation_fields_are_lazy_with_the_same_semantics(client, fitted):
    X, y, models = fitted
    lrp = models["rbf-taylor"]
    E = lrp.explain(da.from_array(X, chunks=(80, -1)), target=1)
    want = lrp.explain(X, target=1)
    # derived quantities stay lazy and agree with the in-memory ones
    assert isinstance(E.absorbed, da.Array) and isinstance(E.relative_residual, da.Array)
    E = sklrp.dask.persist(E)
    assert isinstance(E.relevance, da.Array)
    np.testing.assert_array_equal(E.absorbed.compute(), want.absorbed)
    np.testing.assert_array_equal(E.relative_residual.compute(), want.relative_residual)
    np.testing.assert_array_equal(E.target.compute(), np.ones(len(X), dtype=int))
    # conservation (Eq. (2.75)): relevance + bias + residual = output, block by block
    total = E.relevance.sum(axis=1) + E.bias_relevance + E.residual
    np.testing.assert_allclose(total.compute(), E.output.compute(), rtol=1e-12, atol=1e-12)


def test_per_sample_targets_and_true_labels_follow_the_blocks(client, fitted):
    X, y, models = fitted
    lrp = models["linear"]
    Xd = da.from_array(X, chunks=(50, -1))
    labels = (y + 1) % 3
    for target in (labels, da.from_array(labels, chunks=70)):  # numpy, and a Dask array chunked otherwise
        got = sklrp.dask.compute(lrp.explain(Xd, target=target))
        _assert_explanations(got, lrp.explain(X, target=labels), exact=True)
    got = sklrp.dask.compute(lrp.explain(Xd, target="true", y=da.from_array(y, chunks=30)))
    _assert_explanations(got, lrp.explain(X, target="true", y=y), exact=True)
    # an empty first block: the input is checked on the first sample there is
    got = sklrp.dask.compute(lrp.explain(da.from_array(X, chunks=((0, 120, 120), -1)), target=labels))
    _assert_explanations(got, lrp.explain(X, target=labels), exact=True)


def test_the_explainer_is_shipped_once_per_graph():
    # a model of over 0.8 MB: the serialised graph holds it once and grows by far less per extra block
    rng = np.random.RandomState(0)
    d = 100_000
    lrp = sklrp.LRPTransformer(LinearRegression(), device="cpu").fit(rng.randn(3, d), rng.randn(3))
    lrp.explain(np.zeros((1, d)))  # what the explainer holds once it has explained (converted coefficients)
    model_bytes = len(pickle.dumps(lrp))
    assert model_bytes > 800_000

    def graph_bytes(n_blocks):
        E = lrp.explain(da.zeros((n_blocks, d), chunks=(1, d)))
        graph = dask.utils.ensure_dict(E.relevance.__dask_graph__())
        import cloudpickle

        return len(cloudpickle.dumps(graph))

    small, large = graph_bytes(2), graph_bytes(12)
    assert model_bytes < small < 2 * model_bytes
    assert large - small < model_bytes / 4


# -- AOPC -----------------------------------------------------------------------------------------
def test_aopc_scorer_returns_a_number_on_dask_input(client, fitted):
    """make_aopc_scorer (GridSearchCV's contract: a float) computes the lazy AOPC of Dask input."""
    X, y, models = fitted
    lrp = models["pipeline"]
    scorer = sklrp.make_aopc_scorer(perturbation="mean", n_steps=4)
    got = scorer(lrp, da.from_array(X, chunks=(100, -1)))
    assert type(got) is float
    np.testing.assert_allclose(got, scorer(lrp, X), rtol=1e-12)


@pytest.mark.parametrize("perturbation", ["mean", "flip"])
def test_aopc_of_deterministic_perturbations_equals_in_memory(client, fitted, perturbation):
    X, y, models = fitted
    lrp = models["pipeline"]
    R = lrp.explain(X).relevance
    Xd = da.from_array(X, chunks=(100, -1))
    Rd = lrp.explain(Xd).relevance
    kwargs = dict(perturbation=perturbation, n_steps=4)
    want = sklrp.aopc_score(lrp, X, R, **kwargs)
    got = sklrp.aopc_score(lrp, Xd, Rd, **kwargs)
    assert isinstance(got, da.Array) and got.shape == ()
    # the mean curve from block sums, then Eq. (3.7): the same number up to the order of the sums
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    curves = sklrp.perturbation_curve(lrp, Xd, Rd, **kwargs)
    assert isinstance(curves, da.Array) and curves.chunks[0] == Xd.chunks[0]
    np.testing.assert_allclose(curves.compute(), sklrp.perturbation_curve(lrp, X, R, **kwargs), rtol=1e-12,
                               atol=1e-12)
    cumulative = sklrp.aopc_score(lrp, Xd, R, cumulative=True, **kwargs)  # in-memory relevance is cut to match
    np.testing.assert_allclose(cumulative.compute(), sklrp.aopc_score(lrp, X, R, cumulative=True, **kwargs),
                               rtol=1e-12)


def test_image_curves_and_prediction_changes_equal_in_memory(client):
    # (n, H, W) images, 2 x 2 regions, flipping within the global value range of all images; a callable model
    rng = np.random.RandomState(3)
    X = rng.rand(60, 6, 6)
    W = rng.randn(36, 3)

    def model(x):
        return x.reshape(len(x), -1) @ W

    R = X * W[:, 0].reshape(6, 6)
    Xd, Rd = da.from_array(X, chunks=(25, -1, -1)), da.from_array(R, chunks=(20, 3, -1))
    kwargs = dict(region_size=2, perturbation="flip", value_range="global", target=0)
    curves, changes = sklrp.perturbation_curve(model, Xd, Rd, return_prediction_changes=True, **kwargs)
    want_curves, want_changes = sklrp.perturbation_curve(model, X, R, return_prediction_changes=True, **kwargs)
    np.testing.assert_allclose(curves.compute(), want_curves, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(changes.compute(), want_changes)
    np.testing.assert_allclose(float(sklrp.aopc_score(model, Xd, Rd, **kwargs)),
                               sklrp.aopc_score(model, X, R, **kwargs), rtol=1e-12)


def test_random_perturbations_draw_one_seeded_stream_per_block(client, fitted):
    X, y, models = fitted
    lrp = models["linear"]
    R = lrp.explain(X).relevance
    chunks = (100, 90, 50)
    Xd = da.from_array(X, chunks=(chunks, -1))
    kwargs = dict(perturbation="uniform", n_repeats=3, n_steps=3, relative_to="random")
    got = float(sklrp.aopc_score(lrp, Xd, R, random_state=7, **kwargs))
    assert got == float(sklrp.aopc_score(lrp, Xd, R, random_state=7, **kwargs))  # reproducible
    # the reference: the in-memory function on each block with that block's documented seed, and the
    # per-feature value range of all of X (which the block-wise run takes from all blocks too)
    seeds = sklrp.dask.block_seeds(7, len(chunks))
    cuts = np.cumsum((0,) + chunks)
    main, base = [], []
    for (a, b), seed in zip(zip(cuts[:-1], cuts[1:]), seeds):
        rng = np.random.RandomState(seed)
        g = _GlobalRange(X)
        main.append(sklrp.perturbation_curve(lrp, X[a:b], R[a:b], perturbation=g, n_repeats=3, n_steps=3,
                                             random_state=rng))
        base.append(sklrp.perturbation_curve(lrp, X[a:b], R[a:b], perturbation=g, n_repeats=3, n_steps=3,
                                             order="random", random_state=rng))
    want = aopc_from_curves(np.concatenate(main)) - aopc_from_curves(np.concatenate(base))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the curves themselves
    curves = sklrp.perturbation_curve(lrp, Xd, R, perturbation="uniform", n_repeats=3, n_steps=3, random_state=7)
    np.testing.assert_allclose(curves.compute(), np.concatenate(main), rtol=1e-12, atol=1e-12)


class _GlobalRange(sklrp.evaluation.UniformPerturbation):
    """Uniform noise over the per-feature range of a fixed data set (not of the block it is bound to)."""

    def __init__(self, X):
        self.lo, self.hi = X.min(axis=0), X.max(axis=0)

    def bind(self, X, grid, value_range):
        return super().bind(X, grid, (self.lo, self.hi))


# -- Dask DataFrames ------------------------------------------------------------------------------
def test_dask_dataframe_through_a_scaler_pipeline(client):
    dd = pytest.importorskip("dask.dataframe", reason="dask[dataframe] not installed")
    import pandas as pd

    X, y = _data(n=200)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    lrp = sklrp.LRPTransformer(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), device="cpu",
                               batch_size=40).fit(frame, y)
    ddf = dd.from_pandas(frame, npartitions=3)
    E = lrp.explain(ddf)
    np.testing.assert_array_equal(E.feature_names, frame.columns)
    assert np.isnan(E.relevance.shape[0])  # partition lengths are not known to Dask
    _assert_explanations(sklrp.dask.compute(E), lrp.explain(frame), exact=False)
    labels = dd.from_pandas(pd.Series(y), npartitions=3)
    got = sklrp.dask.compute(lrp.explain(ddf, target="true", y=labels))
    _assert_explanations(got, lrp.explain(frame, target="true", y=y), exact=False)
    assert sklrp.dask.compute(E).to_frame().columns.tolist() == frame.columns.tolist()
    # AOPC of the frame with the explanation's relevance (blocks line up partition by partition)
    want = sklrp.aopc_score(lrp, frame, lrp.explain(frame).relevance, n_steps=3)
    np.testing.assert_allclose(float(sklrp.aopc_score(lrp, ddf, E.relevance, n_steps=3)), want, rtol=1e-12)
    # a frame with other columns than the model's: the in-memory message, at once
    with pytest.raises(ValueError, match="feature names"):
        lrp.explain(ddf.rename(columns={"f0": "other"}))
    with pytest.raises(ValueError, match="Dask Series or array partitioned like X"):
        lrp.explain(ddf, target="true", y=y)
    with pytest.raises(ValueError, match="Dask Series"):
        lrp.explain(ddf["f0"])


def test_mixed_type_dask_dataframe_through_a_column_transformer(client):
    # missing numbers and strings, one-hot categories: each partition is explained as the pandas frame it is
    dd = pytest.importorskip("dask.dataframe", reason="dask[dataframe] not installed")
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.RandomState(0)
    n = 240
    frame = pd.DataFrame({"age": rng.normal(40, 12, n).round(), "income": rng.lognormal(10, 0.5, n),
                          "city": rng.choice(["Berlin", "Paris", "Rome"], n),
                          "plan": rng.choice(["basic", "plus", "pro"], n)})
    frame.loc[rng.rand(n) < 0.15, "age"] = np.nan
    frame.loc[rng.rand(n) < 0.10, "plan"] = np.nan
    churn = ((frame["age"].fillna(40) > 45) ^ (frame["city"] == "Rome") | (frame["plan"] == "pro")).astype(int)
    preprocess = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), ["age", "income"]),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["city", "plan"]),
    ])
    lrp = sklrp.LRPTransformer(make_pipeline(preprocess, LogisticRegression()), rule="z", device="cpu",
                               batch_size=40).fit(frame, churn)
    # Dask stores the string columns with pd.NA for missing values (not what the imputer was fitted on)
    ddf = dd.from_pandas(frame, npartitions=3)
    E = lrp.explain(ddf)
    np.testing.assert_array_equal(E.feature_names, ["age", "income", "city", "plan"])
    _assert_explanations(sklrp.dask.compute(E), lrp.explain(frame), exact=False)


# -- what is refused ------------------------------------------------------------------------------
def test_features_chunked_are_rechunked_with_a_warning(fitted):
    X, y, models = fitted
    lrp = models["linear"]
    with pytest.warns(PerformanceWarning, match="chunked along its feature axes"):
        E = lrp.explain(da.from_array(X, chunks=(60, 2)))
    assert E.relevance.chunks == ((60,) * 4, (5,))
    np.testing.assert_array_equal(E.relevance.compute(scheduler="sync"), lrp.explain(X).relevance)
    with dask.config.set({"array.chunk-size": "16B"}):  # one sample (5 x 8 bytes) exceeds the limit
        with pytest.raises(ValueError, match="one sample alone .* larger than Dask's array.chunk-size"):
            lrp.explain(da.from_array(X, chunks=(60, 2)))


def test_unsupported_dask_input_is_refused_clearly(fitted):
    X, y, models = fitted
    lrp = models["linear"]
    Xd = da.from_array(X, chunks=(60, -1))
    with pytest.raises(ValueError, match=r"unknown shape .*compute_chunk_sizes\(\)"):
        lrp.explain(Xd[Xd[:, 0] > 0])
    with pytest.raises(ValueError, match="must have shape \\(n_samples, n_features"):
        lrp.explain(Xd[:, 0])
    with pytest.raises(ValueError, match="numeric Dask array"):
        lrp.explain(Xd.astype(str))
    with pytest.raises(TypeError, match="Dask collection of type Delayed"):
        lrp.explain(dask.delayed(X))
    with pytest.raises(ValueError, match="X has 4 features, but LRPTransformer is expecting 5"):
        lrp.explain(Xd[:, :4])
    with pytest.raises(ValueError, match=r"target has shape \(10,\) but X has 240 samples"):
        lrp.explain(Xd, target=np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="contains NaN"):  # found in the first block, at once
        lrp.explain(da.from_array(np.full_like(X, np.nan), chunks=(60, -1)))
    with pytest.raises(NotFittedError):
        sklrp.LRPTransformer(LogisticRegression()).explain(Xd)
    with pytest.raises(ValueError, match="relevance has shape"):
        sklrp.aopc_score(lrp, Xd, da.zeros((10, 5), chunks=5))
    with pytest.raises(ValueError, match="relative_to must be None or 'random'"):
        sklrp.aopc_score(lrp, Xd, Xd, relative_to="lerf")
    with pytest.raises(ValueError, match="region_size"):  # the in-memory checks, on the first sample, at once
        sklrp.aopc_score(lrp, Xd, Xd, region_size=2)
    # a non-finite value in a later block: the in-memory error when that block is computed
    bad = X.copy()
    bad[200, 1] = np.inf
    with pytest.raises(ValueError, match="contains infinity"):
        lrp.explain(da.from_array(bad, chunks=(60, -1))).relevance.compute(scheduler="sync")


def test_warnings_point_at_the_caller(fitted):
    X, y, models = fitted
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        models["linear"].explain(da.from_array(X, chunks=(60, 2)))
    assert seen and seen[0].filename == __file__


def test_explainer_imported_directly_hands_dask_input_over():
    # the block-wise twins are registered on first use, however the explainer was imported
    import subprocess
    import sys

    code = (
        "import numpy as np, dask, dask.array as da\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklrp.explain import LRPTransformer\n"
        "X = np.random.RandomState(0).randn(20, 3)\n"
        "lrp = LRPTransformer(LogisticRegression(), device='cpu').fit(X, X[:, 0] > 0)\n"
        "R = lrp.transform(da.from_array(X, chunks=(10, 3)))\n"
        "assert np.allclose(R.compute(scheduler='sync'), lrp.transform(X))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- SpRAy ---------------------------------------------------------------------------------------
def _planted_maps(n=240, seed=0):
    """Two strategies: a hot corner in half of the maps (64 channels-last 12x12x2 maps)."""
    rng = np.random.RandomState(seed)
    maps = rng.rand(n, 12, 12, 2)
    maps[: n // 2, :3, :3] += 4.0
    return maps


@pytest.mark.parametrize("params", [
    {"pool_shape": (6, 6)},                                          # channel sum + pooling
    {"pool_shape": (4, 4), "smoothing_sigma": 1.0, "normalize": "l1"},  # + low-pass, per-map norm
    {"pool_shape": None, "normalize": "max"},
])
def test_spray_pools_dask_maps_on_the_workers_like_in_memory(client, params):
    """Algorithm 3, lines 6-8 run on each block; the graph, spectrum and labels equal the in-memory fit."""
    maps = _planted_maps()
    common = dict(embedding=None, random_state=0, **params)
    want = sklrp.SpRAy(**common).fit(maps)
    got = sklrp.SpRAy(**common).fit(da.from_array(maps, chunks=(70, 12, 12, 2)))  # uneven last block
    np.testing.assert_array_equal(got.preprocessed_, want.preprocessed_)
    np.testing.assert_array_equal(got.labels_, want.labels_)
    np.testing.assert_allclose(got.eigenvalues_, want.eigenvalues_, rtol=0, atol=1e-12)
    assert got.n_features_in_ == want.n_features_in_ == 12
    assert got.n_clusters_ == 2


def test_spray_on_dask_maps_keeps_float32_and_flat_maps(client):
    maps = _planted_maps().sum(-1).reshape(240, -1).astype(np.float32)
    params = dict(map_shape=(12, 12), pool_shape=(6, 6), embedding=None, random_state=0)
    got = sklrp.SpRAy(**params).fit(da.from_array(maps, chunks=(60, 144)))
    assert got.preprocessed_.dtype == np.float32
    np.testing.assert_array_equal(got.labels_, sklrp.SpRAy(**params).fit(maps).labels_)


def test_spray_refuses_bad_dask_maps_clearly():
    bad = _planted_maps()
    bad[5, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sklrp.SpRAy(embedding=None).fit(da.from_array(bad, chunks=(120, 12, 12, 2)))
    with pytest.raises(ValueError, match="map_shape=.*does not match"):
        sklrp.SpRAy(map_shape=(5, 5), embedding=None).fit(da.from_array(_planted_maps()[..., 0], chunks=(120, 12, 12)))
    with pytest.raises(ValueError, match="minimum of 2"):
        sklrp.SpRAy(embedding=None).fit(da.from_array(_planted_maps()[:1], chunks=(1, 12, 12, 2)))
    import dask.dataframe as dd
    import pandas as pd

    frame = dd.from_pandas(pd.DataFrame(_planted_maps().reshape(240, -1)[:, :4]), npartitions=2)
    with pytest.raises(TypeError, match="to_dask_array"):
        sklrp.SpRAy(embedding=None).fit(frame)

"""Tabular plots of sklrp.plotting: the drawn bar widths, dot positions and colours, waterfall positions."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import sklrp  # noqa: E402
from sklrp import plotting  # noqa: E402
from sklrp.plotting import plot_feature_importance, plot_relevance_summary, plot_waterfall  # noqa: E402


class Expl:
    """Any object with the public attributes of an explanation (duck-typed, as the plots read them)."""

    def __init__(self, relevance, bias_relevance, output, residual, feature_names=None):
        self.relevance, self.bias_relevance, self.output, self.residual = relevance, bias_relevance, output, residual
        if feature_names is not None:
            self.feature_names = feature_names


def relevance(seed=0, n=30, d=6):
    rng = np.random.RandomState(seed)
    return rng.randn(n, d) * np.array([0.1, 3.0, 1.0, 0.5, 2.0, 0.02])[:d]


# ----------------------------------------------------------------------------- importance
def test_importance_bars_are_mean_abs_relevance_sorted_with_names_on_top():
    R = relevance()
    names = list("abcdef")
    ax = plot_feature_importance(R, names)
    assert isinstance(ax, Axes)
    mean_abs = [np.mean([abs(v) for v in R[:, j]]) for j in range(R.shape[1])]
    expected = sorted(zip(names, mean_abs), key=lambda t: -t[1])
    bars = sorted(ax.patches, key=lambda p: -p.get_y())  # top to bottom
    labels = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
    got = [(labels[round(p.get_y() + p.get_height() / 2)], p.get_width()) for p in bars]
    assert [g[0] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g[1] for g in got], [e[1] for e in expected], rtol=1e-12)


def test_importance_collapses_the_rest_and_reads_explanations():
    R = relevance()
    E = Expl(R, np.zeros(30), R.sum(1), np.zeros(30), feature_names=np.array([f"f{i}" for i in range(6)]))
    ax = plot_feature_importance(E, max_features=3)
    mean_abs = np.abs(R).mean(0)
    order = np.argsort(-mean_abs)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"f{i}" for i in order[:3]] + ["3 other features"]
    np.testing.assert_allclose([p.get_width() for p in ax.patches], [*mean_abs[order[:3]], mean_abs[order[3:]].sum()])
    # default names
    ax = plot_feature_importance(R[:, :2])
    assert {t.get_text() for t in ax.get_yticklabels()} == {"x0", "x1"}


# ----------------------------------------------------------------------------- summary
def test_summary_dots_sit_at_their_relevance_within_their_row_coloured_by_value():
    R = relevance(1)
    X = np.random.RandomState(2).rand(30, 6) * 10
    X[3, 1] = np.nan
    ax = plot_relevance_summary(R, X, max_features=4, row_height=0.4)
    order = np.argsort(-np.abs(R).mean(0), kind="stable")[:4]
    assert len(ax.collections) == 4
    cmap = matplotlib.colormaps["coolwarm"]
    for k, (coll, j) in enumerate(zip(ax.collections, order)):
        xy = coll.get_offsets()
        np.testing.assert_array_equal(xy[:, 0], R[:, j])  # x = relevance, untouched
        row = 3 - k  # the most important row on top
        assert np.all(np.abs(xy[:, 1] - row) <= 0.4 + 1e-12)
        lo, hi = np.percentile(X[np.isfinite(X[:, j]), j], [5, 95])
        for n in range(30):
            if np.isnan(X[n, j]):
                np.testing.assert_allclose(coll.get_facecolors()[n], [0.6, 0.6, 0.6, 1.0])
            else:
                np.testing.assert_allclose(coll.get_facecolors()[n], cmap(np.clip((X[n, j] - lo) / (hi - lo), 0, 1)))
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"x{j}" for j in order]


def test_summary_swarm_separates_equal_values_and_handles_strings():
    R = np.zeros((7, 2))
    R[:, 0] = 1.0  # seven equal relevances: stacked up and down, symmetric, distinct
    R[:, 1] = np.arange(7) * 0.1
    df = pd.DataFrame({"city": list("abcabca"), "age": [1, 2, 3, 4, 5, 6, 7]})
    ax = plot_relevance_summary(R, df)
    ys = ax.collections[0].get_offsets()[:, 1]  # "city" (mean |R| = 1) is on top, row 1
    assert len(set(np.round(ys, 12))) == 7
    np.testing.assert_allclose(np.sort(ys - 1), np.linspace(-0.4, 0.4, 7))
    np.testing.assert_allclose(ax.collections[0].get_facecolors(), np.tile([0.6, 0.6, 0.6, 1.0], (7, 1)))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["city", "age"]


# ----------------------------------------------------------------------------- waterfall
def test_waterfall_from_bias_through_features_and_residual_to_output():
    r = np.array([0.5, -2.0, 0.1, 1.5])
    ax = plot_waterfall(r, bias=3.0, output=3.0 + r.sum() - 0.25, feature_names=["a", "b", "c", "d"], max_features=3)
    bars = ax.patches
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["bias", "b", "d", "a", "1 other features", "residual", "f(x)"]
    widths = [p.get_width() for p in bars]
    np.testing.assert_allclose(widths, [3.0, -2.0, 1.5, 0.5, 0.1, -0.25, 3.0 + r.sum() - 0.25])
    # each bar starts where the previous one ended; the last cumulative position is f(x)
    lefts = [p.get_x() for p in bars]
    np.testing.assert_allclose(lefts[:-1], np.concatenate([[0.0], np.cumsum(widths[:-2])]))
    assert lefts[-1] == 0.0
    np.testing.assert_allclose(lefts[-2] + widths[-2], widths[-1])
    # bars from top to bottom
    ys = [p.get_y() for p in bars]
    assert ys == sorted(ys, reverse=True)


def test_waterfall_of_a_real_explanation_ends_at_its_output():
    X = np.random.RandomState(3).randn(40, 3) * [1, 10, 0.1] + [0, 50, 1]
    y = (X[:, 0] + X[:, 2] > 1).astype(int)
    lrp = sklrp.LRPTransformer(make_pipeline(StandardScaler(), LogisticRegression()), rule="epsilon",
                               epsilon=0.5).fit(X, y)
    E = lrp.explain(X[:5])
    ax = plot_waterfall(E, sample=2, X=X[:5])
    bars = ax.patches
    assert bars[0].get_width() == pytest.approx(E.bias_relevance[2])
    assert bars[-2].get_width() == pytest.approx(E.residual[2])  # the epsilon rule absorbed something
    assert abs(E.residual[2]) > 1e-6
    assert bars[-2].get_x() + bars[-2].get_width() == pytest.approx(E.output[2])
    assert bars[-1].get_width() == pytest.approx(E.output[2])
    assert ax.get_yticklabels()[1].get_text().startswith("x")
    assert "=" in ax.get_yticklabels()[1].get_text()  # the feature value is shown


def test_waterfall_infers_missing_parts():
    r = np.array([[1.0, 2.0], [0.5, 0.5]])
    ax = plot_waterfall(r, sample=1)  # no bias, no output: output = sum, residual 0
    np.testing.assert_allclose([p.get_width() for p in ax.patches], [0.0, 0.5, 0.5, 0.0, 1.0])
    ax = plot_waterfall(r, sample=0, bias=np.array([1.0, 2.0]), residual=[0.5, 0.0])
    assert ax.patches[-1].get_width() == pytest.approx(4.5)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="n_samples, n_features"):
        plot_feature_importance(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        plot_relevance_summary(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="feature_names has 1 names"):
        plot_feature_importance(np.zeros((2, 3)), ["a"])
    with pytest.raises(ValueError, match="max_features"):
        plot_feature_importance(np.zeros((2, 3)), max_features=0)
    with pytest.raises(ValueError, match="X has shape"):
        plot_relevance_summary(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="out of range"):
        plot_waterfall(np.zeros((2, 3)), sample=5)
    with pytest.raises(ValueError, match="not finite"):
        plot_waterfall(np.zeros((2, 3)), bias=[np.inf, 0.0])


def test_public_names_kept_after_the_package_split():
    for name in ("heatmap", "heatmap_grid", "render_heatmap", "normalize_relevance", "plot_perturbation_curves",
                 "plot_spectrum", "plot_embedding", "plot_class_spectra", "highlight_text", "COLDHOT",
                 "plot_feature_importance", "plot_relevance_summary", "plot_waterfall"):
        assert name in plotting.__all__ and hasattr(plotting, name)

"""Tests of sklrp.plotting: Eq. (2.62) normalisation, colour centring, returned objects."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sklrp import plotting
from sklrp.plotting import (
    COLDHOT,
    heatmap,
    heatmap_grid,
    highlight_text,
    normalize_relevance,
    plot_class_spectra,
    plot_embedding,
    plot_perturbation_curves,
    plot_spectrum,
    render_heatmap,
)


def _loop_normalize(maps, joint):
    """Eq. (2.62) straight from the thesis: R_i <- R_i / max_i' |R_i'|."""
    maps = np.asarray(maps, dtype=float)
    out = np.zeros_like(maps)
    S_all = max(abs(v) for v in maps.ravel())
    for m in range(maps.shape[0]):
        flat = maps[m].ravel()
        S = S_all if joint else max(abs(v) for v in flat)
        res = [0.0 if S == 0 else v / S for v in flat]
        out[m] = np.reshape(res, maps[m].shape)
    return out


@pytest.mark.parametrize("joint", [False, True])
def test_normalize_matches_loop_reference(joint):
    maps = np.random.RandomState(0).randn(4, 3, 5) * np.array([1, 10, 0.1, 0])[:, None, None]
    got = normalize_relevance(maps, joint=joint)
    np.testing.assert_allclose(got, _loop_normalize(maps, joint))
    # sign and zeros preserved, range [-1, 1]
    assert np.all(np.sign(got) == np.sign(maps))
    assert np.abs(got).max() == pytest.approx(1.0)


def test_normalize_all_zero_is_zero_not_nan():
    assert np.all(normalize_relevance(np.zeros((2, 3))) == 0)
    assert np.all(normalize_relevance(np.zeros((2, 3)), joint=True) == 0)


def test_normalize_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        normalize_relevance(np.array([[1.0, np.nan]]))


@pytest.mark.parametrize("cmap", ["seismic", "coldhot"])
def test_render_heatmap_is_centred_at_zero(cmap):
    r = np.array([[0.0, 2.0], [-2.0, 1.0]])
    rgb = render_heatmap(r, cmap=cmap)
    cm = plotting._cmap(cmap)
    np.testing.assert_allclose(rgb[0, 0], cm(0.5)[:3])  # R = 0 -> centre colour
    np.testing.assert_allclose(rgb[0, 1], cm(1.0)[:3])  # +max -> top
    np.testing.assert_allclose(rgb[1, 0], cm(0.0)[:3])  # -max -> bottom
    np.testing.assert_allclose(rgb[1, 1], cm(0.75)[:3])


def test_coldhot_is_black_at_zero():
    np.testing.assert_allclose(COLDHOT(0.5)[:3], (0, 0, 0), atol=0.01)


def test_render_heatmap_sums_channels_and_reshapes():
    r = np.random.RandomState(1).randn(4, 4, 3)
    np.testing.assert_allclose(render_heatmap(r), render_heatmap(r.sum(-1)))
    np.testing.assert_allclose(render_heatmap(r.sum(-1).ravel(), shape=(4, 4)), render_heatmap(r.sum(-1)))
    # channels first
    np.testing.assert_allclose(render_heatmap(np.moveaxis(r, -1, 0), channel_axis=0), render_heatmap(r))


def test_render_heatmap_joint_scale():
    r = np.array([[0.5, -0.5]])
    rgb = render_heatmap(r, scale=1.0, cmap="seismic")
    np.testing.assert_allclose(rgb[0, 0], plotting._cmap("seismic")(0.75)[:3])


def test_heatmap_returns_axes_and_overlays_image():
    r = np.random.RandomState(0).randn(8, 8)
    ax = heatmap(r, image=np.abs(r), title="t", colorbar=True)
    assert isinstance(ax, Axes) and ax.get_title() == "t"
    assert len(ax.images) == 2  # grey input + relevance overlay
    data = ax.images[1].get_array()
    assert np.abs(data).max() == pytest.approx(1.0)


def test_heatmap_bad_input_messages():
    with pytest.raises(ValueError, match="NaN"):
        heatmap(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="not a square"):
        heatmap(np.ones(5))
    with pytest.raises(ValueError, match="reshaped"):
        heatmap(np.ones(5), shape=(2, 2))
    with pytest.raises(ValueError, match="image has shape"):
        heatmap(np.ones((4, 4)), image=np.ones((3, 3)))
    with pytest.raises(ValueError, match="unknown colour map"):
        heatmap(np.ones((2, 2)), cmap="no-such-map")


def test_heatmap_grid_joint_versus_per_map():
    maps = np.stack([np.ones((3, 3)), 0.1 * np.ones((3, 3))])
    fig = heatmap_grid(maps, normalize="joint", titles=["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[1].images[0].get_array().max() == pytest.approx(0.1)
    fig = heatmap_grid(maps, normalize="map")
    assert fig.axes[1].images[0].get_array().max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalize"):
        heatmap_grid(maps, normalize="bogus")
    with pytest.raises(ValueError, match="titles"):
        heatmap_grid(maps, titles=["a"])


def test_perturbation_curves_aopc_in_legend_matches_eq_3_7():
    rng = np.random.RandomState(0)
    curves = rng.rand(5, 11)  # per-sample f(x^(k))
    # Eq. (3.7) by loops: 1/(L+1) < sum_k f(x^0) - f(x^k) >
    L = curves.shape[1] - 1
    mean = curves.mean(0)
    ref = sum(mean[0] - mean[k] for k in range(L + 1)) / (L + 1)
    ax = plot_perturbation_curves({"LRP MoRF": curves, "random": mean[::-1]}, title="t")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == f"LRP MoRF (AOPC {ref:.3f})"
    ax = plot_perturbation_curves({"x": mean}, aopc={"x": 0.123}, relative=True)
    assert "0.123" in ax.get_legend().get_texts()[0].get_text()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), mean[0] - mean)
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_perturbation_curves({})
    with pytest.raises(ValueError, match="shape"):
        plot_perturbation_curves({"x": np.ones((2, 2, 2))})


def test_plot_spectrum_marks_eigengap():
    ev = np.r_[0.0, 0.0, 0.0, np.linspace(0.5, 0.9, 30)]
    ax = plot_spectrum(ev[::-1])  # unsorted input is sorted
    assert len(ax.lines[0].get_xdata()) == 20
    assert "k = 3" in ax.get_legend().get_texts()[1].get_text()
    ax = plot_spectrum(ev, n_clusters=2)
    assert "k = 2" in ax.get_legend().get_texts()[1].get_text()

    class Fitted:  # the attributes a fitted SpRAy exposes
        eigenvalues_ = ev
        n_clusters_ = 4

    assert "k = 4" in plot_spectrum(Fitted()).get_legend().get_texts()[1].get_text()
    with pytest.raises(ValueError, match="1-D"):
        plot_spectrum(np.ones((2, 2)))


def test_plot_embedding_with_thumbnails():
    rng = np.random.RandomState(0)
    maps = rng.randn(24, 6, 6)
    labels = np.repeat([0, 1, 2], 8)
    ax = plot_embedding(maps.reshape(24, -1), labels, thumbnails=maps, n_thumbnails=6, method="tsne")
    assert len(ax.collections) == 3
    assert len(ax.artists) == 6
    # thumbnails come from every cluster (round robin)
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(maps.reshape(24, -1), labels[:5])
    with pytest.raises(ValueError, match="method"):
        plot_embedding(maps.reshape(24, -1), method="umap")


def test_plot_class_spectra_orders_by_lambda2_and_highlights():
    spectra = {"cat": [0, 0.5, 0.6, 0.7, 0.8], "horse": [0, 0.01, 0.02, 0.7, 0.8], "dog": [0, 0.3, 0.6, 0.7, 0.8]}
    fig = plot_class_spectra(spectra, highlight=["horse"])
    ax = fig.axes[0]
    ticks = ax.get_xticklabels()
    assert [t.get_text() for t in ticks] == ["horse", "dog", "cat"]
    assert ticks[0].get_color() == "tab:red"
    assert len(ax.patches) == 15
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_class_spectra([])


def test_highlight_text_html():
    s = highlight_text(["a", "<script>", "c"], [2.0, -1.0, 0.0], title="doc & co")
    assert s.count("<span") == 3
    assert "<script>" not in s and "&lt;script&gt;" in s and "doc &amp; co" in s
    assert 'title="R = 2"' in s
    with pytest.raises(ValueError, match="3 tokens"):
        highlight_text(["a", "b", "c"], [1.0])
    with pytest.raises(ValueError, match="scale"):
        highlight_text(["a"], [1.0], scale=-1)


def test_no_pyplot_figures_are_left_open():
    import matplotlib.pyplot as plt

    plt.close("all")
    heatmap(np.ones((2, 2)))
    plot_spectrum([0, 1, 2])
    assert plt.get_fignums() == []


def test_docstring_examples():
    import doctest

    result = doctest.testmod(plotting, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0

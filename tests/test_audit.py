"""The audit's flagging rule, its reliance probe, AOPC margins and the report's details."""

import json
import os
import stat

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from sklrp.audit import audit, reliance_probe, shortcut_scan  # noqa: E402
from sklrp.audit.quality import paired_difference, perturbation_quality  # noqa: E402
from sklrp.audit.figures import legend_outside  # noqa: E402
from sklrp.audit.verdict import candidate_regions  # noqa: E402
from sklrp.datasets import plant_shortcut  # noqa: E402
from sklrp.kernels import intersection_kernel  # noqa: E402


def _maps(seed, n_classes=4, n=40, shape=(10, 10)):
    """Noisy relevance maps: each class has its own blob (its object) and per-map noise."""
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(n_classes), n)
    R = rng.gamma(1.0, 0.3, size=(len(y),) + shape)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    for c in range(n_classes):
        cy, cx = 3 + (c % 2) * 3, 3 + (c // 2) * 3
        R[y == c] += 3.0 * np.exp(-((rr - cy) ** 2 + (cc - cx) ** 2) / 4.0) * rng.uniform(0.5, 1.5, (n, 1, 1))
    return R, y


def test_scan_finds_a_planted_subgroup_and_its_members():
    R, y = _maps(0)
    carriers = np.flatnonzero(y == 2)[::2]  # half of class 2 puts extra relevance on a corner tag
    R[carriers, 0:2, 8:10] += 2.0
    findings = shortcut_scan(R, y)
    top = findings[0]
    assert top.label == 2 and top.rank == 1 and top.flagged and top.p_value < 0.02
    assert [f.label for f in findings if f.flagged] == [2]
    in_c = np.flatnonzero(y == 2)
    assert np.array_equal(in_c[top.carriers], carriers)
    r = top.region
    assert r.rows[0] <= 1 and r.cols[1] >= 8 and r.mask[0:2, 8:10].any()
    assert "top-right" in r.text
    assert top.carrier_share[0] > top.rest_share_90 and top.carrier_share[0] > top.others_share_90
    assert 0 < top.score <= 1


def test_scan_false_flags_stay_near_alpha():
    """Clean classes are flagged at about the nominal rate (p is calibrated against the other classes)."""
    flags, n = 0, 0
    for seed in range(12):
        R, y = _maps(100 + seed)
        findings = shortcut_scan(R, y, alpha=0.05)
        assert len(findings) == 4 and sorted(f.rank for f in findings) == [1, 2, 3, 4]
        assert all(np.isfinite(f.p_value) for f in findings)
        flags += sum(f.flagged for f in findings)
        n += len(findings)
    assert flags / n <= 0.1


def test_predictive_t_is_calibrated_when_the_prior_spread_is_right():
    """p <= 0.05 for about 5 % of classes drawn like the others (conservative with one or two others)."""
    from sklrp.audit.verdict import _predictive_t

    rng = np.random.default_rng(0)
    for n, lo, hi in ((9, 0.03, 0.06), (2, 0.0, 0.05), (1, 0.0, 0.05)):
        draws = rng.normal(0.4, 0.08, (4000, n + 1))
        rate = np.mean([_predictive_t(d[0], d[1:], 0.08, 4.0)[1] <= 0.05 for d in draws])
        assert lo <= rate <= hi, (n, rate)
    # the statistic is the predictive t: (score - mean) / (sd * sqrt(1 + 1/n)), sd pooled with the prior
    others = np.array([0.3, 0.5])
    sd = np.sqrt((4 * 0.08 ** 2 + np.sum((others - 0.4) ** 2)) / 5)
    assert _predictive_t(0.7, others, 0.08, 4.0)[0] == pytest.approx(0.3 / (sd * np.sqrt(1.5)))


def test_scan_frames_strips_and_small_classes():
    R, y = _maps(7)
    carriers = np.flatnonzero(y == 1)[:16]
    R[carriers, 0, :] += 1.0  # a bright border frame in 40 % of class 1
    R[carriers, -1, :] += 1.0
    R[carriers, :, 0] += 1.0
    R[carriers, :, -1] += 1.0
    top = shortcut_scan(R, y)[0]
    assert top.label == 1 and top.flagged and top.region.kind in ("frame", "strip")
    # classes too small for a subgroup of 20 % and at least 5 maps are left out; a single class gets no p-value
    few = shortcut_scan(R[:45], y[:45])
    assert [f.label for f in few] == [0]
    assert np.isnan(few[0].p_value) and not few[0].flagged


def _spread_reference(R, top=0.1):
    """Share of positive relevance outside each map's top tenth of pixels, one map and pixel at a time."""
    out = []
    for m in R:
        pos = [max(float(v), 0.0) for v in m.ravel()]
        total = sum(pos)
        k = int(np.ceil(top * len(pos)))
        out.append(1.0 - sum(sorted(pos, reverse=True)[:k]) / total)
    return np.array(out)


def test_spread_share_matches_a_loop_reference():
    from sklrp.audit.verdict import _spread

    R = np.random.RandomState(3).normal(size=(7, 5, 6))
    P = np.clip(R, 0, None)
    P = P / P.reshape(7, -1).sum(1)[:, None, None]
    np.testing.assert_allclose(_spread(P), _spread_reference(R), atol=1e-12)
    one_pixel = np.zeros((1, 5, 6))
    one_pixel[0, 2, 3] = 1.0
    assert _spread(one_pixel)[0] == pytest.approx(0.0)  # all relevance on one pixel: nothing spread


def test_scan_finds_relevance_spread_over_the_background():
    """Half of class 1 spreads its relevance over the background (a background-level cue), not on one place."""
    R, y = _maps(11, shape=(24, 24))  # windows of at most 4x4 pixels cover under 3 % of the image
    carriers = np.flatnonzero(y == 1)[::2]
    blob = R[y == 1].mean(0) > np.quantile(R[y == 1].mean(0), 0.85)
    R[carriers] += 0.5 * ~blob  # every background pixel, not one region
    top = shortcut_scan(R, y)[0]
    assert top.label == 1 and top.flagged and top.region.kind == "spread"
    assert np.array_equal(np.flatnonzero(y == 1)[top.carriers], carriers)
    assert top.region.mask.all() and "spread" in top.region.text
    expected = _spread_reference(R[carriers])
    if top.region.unit.endswith("median map"):  # the amount: in units of the median map's positive relevance
        totals = np.clip(R, 0, None).sum(axis=(1, 2))
        expected = expected * totals[carriers] / np.median(totals)
    np.testing.assert_allclose(top.carrier_share[0], np.quantile(expected, 0.1), atol=1e-12)
    # without the spread region the same cue is not this clear
    assert shortcut_scan(R, y, spread=False)[0].region.kind != "spread"


def test_scan_bad_input_and_regions():
    with pytest.raises(ValueError, match="NaN"):
        shortcut_scan(np.full((20, 4, 4), np.nan), np.zeros(20))
    with pytest.raises(ValueError, match="groups must have shape"):
        shortcut_scan(np.zeros((20, 4, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="relevance must have shape"):
        shortcut_scan(np.zeros((20, 16)), np.zeros(20))
    regions, cells, factor = candidate_regions((64, 48))
    assert factor == 2 and cells.shape[1:] == (32, 24)
    assert all(r.mask.shape == (64, 48) for r in regions)
    texts = [r.text for r in regions]
    assert "a frame along the image border (2 px wide)" in texts and "the left border strip (4 px wide)" in texts


def test_reliance_probe_counts_flips_against_a_control():
    X = np.zeros((30, 4, 4))
    y = np.repeat([0, 1, 2], 10)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    predict = lambda Z: np.where(Z[:, 0, 0] > 0.5, 2, 0)  # noqa: E731  "class 2" when the corner is bright
    res = reliance_probe(predict, X, y, 2, mask, np.ones((4, 4)), control_patch=np.zeros((4, 4)))
    assert res == {"n_images": 20, "before": 0.0, "stamped": 1.0, "control": 0.0, "flips": 1.0}
    assert reliance_probe(predict, X, y, 0, mask, np.ones((4, 4)))["flips"] == -1.0  # the cue moves them away
    assert reliance_probe(predict, X[:10], y[:10], 0, mask, np.ones((4, 4)))["n_images"] == 0


def test_reliance_probe_adds_a_spread_cue():
    """mode="add" adds the carriers-minus-rest difference; other images keep their content."""
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 0.4, (30, 4, 4))
    y = np.repeat([0, 1, 2], 10)
    everywhere = np.ones((4, 4), bool)
    predict = lambda Z: np.where(Z.mean(axis=(1, 2)) > 0.5, 2, 0)  # noqa: E731  "class 2" on a bright background
    res = reliance_probe(predict, X, y, 2, everywhere, np.full((4, 4), 0.7), control_patch=np.full((4, 4), 0.3),
                         mode="add")
    assert res == {"n_images": 20, "before": 0.0, "stamped": 1.0, "control": None, "flips": 1.0}
    with pytest.raises(ValueError, match="pass control_patch"):
        reliance_probe(predict, X, y, 2, everywhere, np.ones((4, 4)), mode="add")
    with pytest.raises(ValueError, match="mode must be"):
        reliance_probe(predict, X, y, 2, everywhere, np.ones((4, 4)), mode="stamp")


def test_paired_difference_interval():
    rng = np.random.RandomState(0)
    a = rng.normal(1.0, 1.0, 200)
    d, (lo, hi) = paired_difference(a, a - 1.0)
    assert d == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    b = rng.normal(1.0, 1.0, 200)
    d, (lo, hi) = paired_difference(a, b, n_boot=4000)
    # the bootstrap interval agrees with the normal-theory one, mean +- 1.96 sd / sqrt(n)
    half = 1.96 * np.std(a - b) / np.sqrt(200)
    assert d == pytest.approx(np.mean(a - b))
    assert lo == pytest.approx(d - half, abs=0.15 * half) and hi == pytest.approx(d + half, abs=0.15 * half)


def test_aopc_claims_need_a_margin():
    """'LRP orders better' only when the 95 % interval excludes 0; uninformative maps are 'not distinguishable'."""
    rng = np.random.RandomState(0)
    w = rng.normal(size=16)
    X = rng.rand(40, 16)
    f = lambda Z: Z.reshape(len(Z), -1) @ w  # noqa: E731
    good = perturbation_quality(f, X, X * w, np.zeros(40, int), region_size=1, n_steps=16, perturbation="mean",
                                random_state=0)
    (cmp,) = good["comparisons"]
    assert cmp["better"] and cmp["interval"][0] > 0 and cmp["text"].startswith("LRP orders the regions better")
    assert good["scores"]["LRP"] > good["scores"]["random"]
    noise = perturbation_quality(f, X, rng.normal(size=X.shape), np.zeros(40, int), region_size=1, n_steps=16,
                                 perturbation="mean", random_state=0)
    (cmp,) = noise["comparisons"]
    assert not cmp["better"] and "not distinguishable" in cmp["text"]
    lo, hi = cmp["interval"]
    assert lo < 0 < hi


def test_legend_outside_covers_no_data():
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="a")
    ax.legend()
    legend_outside(ax)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


# --------------------------------------------------------------------------- a real audit
@pytest.fixture(scope="module")
def planted_audit(tmp_path_factory):
    """Digits, a bright 2x2 tag in half of class 3, an intersection-kernel SVM; audited with the probe."""
    X, y = load_digits(return_X_y=True)
    X, tagged = plant_shortcut(X / 16.0, y, target_class=3, fraction=0.5, size=2, position="top-right",
                               value=1.0, random_state=0)
    Xtr, Xte, ytr, yte, _, tte = train_test_split(X, y, tagged, train_size=0.7, random_state=1, stratify=y)
    model = SVC(kernel=intersection_kernel).fit(Xtr, ytr)
    out = tmp_path_factory.mktemp("planted") / "rep"
    summary = audit({"hik": model}, Xte, yte, out=str(out), aopc_samples=24, probe=True, ground_truth=tte)
    return out, summary, (out / "report.html").read_text(encoding="utf-8")


def test_planted_tag_is_flagged_with_evidence(planted_audit):
    out, summary, page = planted_audit
    st = summary["models"][0]["strategies"]
    assert st["flagged"] == [3]
    top = st["classes"][0]
    assert top["class"] == 3 and top["flagged"] and top["p_value"] < 0.05
    assert top["planted"]["carriers"] >= 0.9 * top["planted"]["n_carriers"]  # the subgroup is the tagged images
    assert top["region"]["rows"][0] == 0 and top["region"]["cols"][1] == 7
    assert top["probe"]["n_images"] > 400 and top["probe"]["stamped"] >= top["probe"]["before"]
    for key in ("fig_groups", "fig_members", "fig_embedding"):
        assert (out / top[key]).is_file()
    assert "Flagged: class(es) 3." in page and "Reliance probe:" in page
    assert "carriers" in page and top["region"]["text"] in page


def test_report_details(planted_audit, tmp_path):
    out, summary, page = planted_audit
    m = summary["models"][0]
    # no placeholder eigengap column; the class table has the rule's own numbers
    assert "eigengap" not in page and "<th>separation</th>" in page and "<th>p</th>" in page
    # the overview's flagged cell is never blank
    assert "<td class=text><span class='flag'>3</span></td>" in page
    # regions and steps from the image size; the AOPC claim carries an interval
    assert (m["aopc"]["region_size"], m["aopc"]["n_steps"]) == (1, 64)
    for c in m["aopc"]["comparisons"]:
        assert "95 % interval" in c["text"] and len(c["interval"]) == 2
    # residual labelled as unexplained, split into Taylor remainder and stabiliser absorption
    cons = m["conservation"]
    assert set(cons) >= {"max_abs_residual", "max_abs_taylor_remainder", "max_abs_absorbed"}
    assert "Unexplained (residual)" in page and "Taylor remainder max" in page
    # readable report: folders 0755, files 0644
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert all(stat.S_IMODE(os.stat(out / f).st_mode) == 0o644 for f in os.listdir(out))
    assert json.loads((out / "summary.json").read_text())["models"][0]["name"] == "hik"
    # self-contained: every image embedded, nothing loaded from elsewhere
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == sum(f.endswith(".png") for f in os.listdir(out))


def test_nothing_found_is_said_honestly(tmp_path):
    """Clean data: 'no separate strategy found' in neutral words, never a green all-clear; masks -> context ratio."""
    y = np.repeat(np.arange(4), 40)
    rng = np.random.RandomState(0)
    X = rng.rand(len(y), 10, 10)
    X[:, 3:7, 3:7] += 2.0
    masks = np.zeros(X.shape, bool)
    masks[:, 3:7, 3:7] = True

    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(X.reshape(len(X), -1), y)
    s = audit({"lin": model}, X, y, masks=masks, out=str(tmp_path / "rep"), aopc_samples=8)
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    st = s["models"][0]["strategies"]
    assert st["flagged"] == [] and st["n_classes"] == 4
    assert "No separate strategy found" in page and "none (p &gt; 0.05)" in page
    assert "not an all-clear" in page
    assert "class='ok'" not in page and "No class flagged" not in page
    ctx = s["models"][0]["context_ratio"]
    assert all(r["ratio"] is None or r["ratio"] >= 0 for r in ctx["classes"])  # positive relevance: no sign flips
    assert "mean <em>positive</em> relevance per pixel outside the object mask" in page


def test_background_cue_is_found_spread_out_and_probed_by_adding(tmp_path):
    """A brighter background in half of one class: found as spread relevance, probed by adding the difference."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sklrp.datasets import make_clever_hans

    X, y, _ = make_clever_hans(900, watermark_fraction=0.0, image_shape=(24, 24), random_state=7)
    X = np.clip(X, 0, None)
    X, cued = plant_shortcut(X, y, kind="background", target_class=1, fraction=0.5, value=0.25 * X.max(),
                             random_state=3)
    Xtr, Xte, ytr, yte, _, tte = train_test_split(X.reshape(len(X), -1), y, cued, train_size=0.6, random_state=1,
                                                  stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(Xtr, ytr)
    out = tmp_path / "rep"
    summary = audit({"lin": model}, Xte.reshape(-1, 24, 24), yte, out=str(out), aopc_samples=12, probe=True,
                    ground_truth=tte)
    st = summary["models"][0]["strategies"]
    top = st["classes"][0]
    assert st["flagged"] == [1] and top["region"]["kind"] == "spread"
    assert top["planted"]["carriers"] == top["planted"]["n_carriers"] and top["planted"]["rest"] == 0
    probe = top["probe"]
    assert probe["control"] is None and probe["flips"] == pytest.approx(probe["stamped"] - probe["before"])
    assert probe["flips"] > 0.5  # the model predicts class 1 for most images that get the brighter background
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "the difference between the carriers' and the rest's mean images added to" in page
    assert "relevance spread out" in page


def test_feature_scan_finds_a_leaked_column_and_checks_its_input():
    from sklrp.audit import feature_scan

    rng = np.random.RandomState(0)
    y = np.repeat([0, 1, 2], 40)
    R = rng.gamma(1.0, 0.3, (120, 8))
    leaked = np.flatnonzero(y == 2)[::2]
    R[leaked, 7] += 3.0
    findings = feature_scan(R, y)
    top = findings[0]
    assert top.label == 2 and top.flagged and top.region.cols == (7, 7)
    assert np.array_equal(np.flatnonzero(y == 2)[top.carriers], leaked)
    # the same verdict as the image scan on one-row "images" with single-pixel windows and no spread region
    same = shortcut_scan(R.reshape(120, 1, 8), y, max_grid=8, window_sizes=(1,), spread=False)
    assert [(f.label, f.score, f.p_value) for f in findings] == [(f.label, f.score, f.p_value) for f in same]
    with pytest.raises(ValueError, match=r"\(n_samples, n_features\)"):
        feature_scan(R.reshape(120, 2, 4), y)


def test_tabular_audit_flags_a_leaked_identifier_and_states_the_tabular_rates(tmp_path):
    """A table with a column that is 1 on half of one class: flagged on that column; the report quotes
    the rates measured on tables, not those measured on images."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sklrp.audit.report import MEASURED_TABULAR_FIGURES

    X, y = make_classification(600, 20, n_informative=8, n_classes=4, n_clusters_per_class=2, random_state=3)
    rng = np.random.RandomState(3)
    leak = np.zeros(len(y))
    leak[rng.choice(np.flatnonzero(y == 1), 75, replace=False)] = 1.0
    X = np.column_stack([X, leak])
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=0.6, random_state=3, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(Xtr, ytr)
    names = [f"f{j}" for j in range(20)] + ["leak"]
    s = audit({"lin": model}, Xte, yte, out=str(tmp_path / "rep"), aopc_samples=12, feature_names=names)
    st = s["models"][0]["strategies"]
    top = st["classes"][0]
    assert st["flagged"] == [1] and top["region"]["cols"] == [20, 20]
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "feature leak" in page and "pixel at row" not in page  # the class table names the column
    assert "leaked-column benchmark" in page and f"flagged {MEASURED_TABULAR_FIGURES['ffr']}" in page
    assert "planted-shortcut benchmark" not in page

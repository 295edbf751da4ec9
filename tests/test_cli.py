"""Tests of ``sklrp audit``: the demo report's content, bad input, atomic output, joblib/Dask."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import joblib
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from sklrp.cli import AuditError, explain_parallel, load_data, main, make_explainer, spray_per_class  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The report of ``sklrp audit --demo`` (what ``make demo`` writes), computed once."""
    out = tmp_path_factory.mktemp("demo") / "audit-report"
    assert main(["audit", "--demo", "--out", str(out), "-q"]) == 0
    with open(out / "summary.json") as fh:
        summary = json.load(fh)
    with open(out / "report.html", encoding="utf-8") as fh:
        page = fh.read()
    return out, summary, page


def test_demo_report_sections_and_images(demo_report):
    out, summary, page = demo_report
    for anchor in ("overview", "model-svm-hik", "relevance-svm-hik", "aopc-svm-hik", "context-svm-hik",
                   "spray-svm-hik"):
        assert f"id='{anchor}'" in page, anchor
    # self-contained: every image is embedded, nothing is loaded from elsewhere
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 8
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in page and "https://" not in page
    # the PNG files next to the report are real PNGs
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert "svm-hik_heatmaps.png" in pngs and "svm-hik_aopc.png" in pngs and "svm-hik_class_spectra.png" in pngs
    for p in pngs:
        with open(out / p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # nothing but the report was left behind (temp dir moved into place)
    assert not [p for p in os.listdir(out.parent) if p.startswith(".sklrp-audit-")]


def test_demo_report_numbers(demo_report):
    _, summary, page = demo_report
    svm = next(m for m in summary["models"] if m["name"] == "svm-hik")
    assert svm["n_samples"] == 400 and 0.5 < svm["accuracy"] <= 1.0
    # exact decomposition of a sum-decomposable kernel: conservation to rounding
    assert svm["conservation_max_abs_residual"] < 1e-8
    scores = svm["aopc"]["scores"]
    assert set(scores) == {"LRP", "sensitivity", "random", "LRP (LeRF)"}
    assert scores["LRP"] > scores["random"] and scores["LRP"] > scores["sensitivity"]
    assert f"{scores['LRP']:.4g}" in page  # the table shows the numbers of summary.json
    assert svm["context_ratio"] is not None and set(svm["context_ratio"]["per_class"]) == {"0", "1", "2"}


def test_demo_spray_flags_the_watermarked_class(demo_report):
    _, summary, page = demo_report
    svm = next(m for m in summary["models"] if m["name"] == "svm-hik")
    spray = svm["spray"]
    assert 0 in spray["flagged"]
    ranked = spray["classes"]
    assert ranked[0]["class"] == 0  # smallest lambda_2 first (Fig. 6.5)
    # the split found by SpRAy is the planted watermark: one cluster holds all tagged images
    planted = ranked[0]["planted_per_cluster"]
    total = sum(p["planted"] for p in planted)
    assert total > 0 and max(p["planted"] for p in planted) == total
    tagged = next(p for p in planted if p["planted"] == total)
    assert tagged["size"] <= total + 2
    assert "Flagged: class(es) 0" in page
    # SpRAy on the raw images of class 0 does not split them: the tag is the model's strategy
    assert ranked[0]["n_clusters_inputs"] == 1
    assert "SpRAy on the <em>input images</em> of this class finds 1 cluster(s)" in page


def test_demo_has_cnn_when_nn_is_available(demo_report):
    _, summary, _ = demo_report
    pytest.importorskip("skorch")
    cnn = next(m for m in summary["models"] if m["name"] == "cnn")
    assert cnn["accuracy"] > 0.8
    assert cnn["aopc"]["scores"]["LRP"] > cnn["aopc"]["scores"]["random"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="headless check needs /usr/bin/chromium "
                    "(apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(demo_report, tmp_path):
    out, _, _ = demo_report
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1100,2400", (out / "report.html").as_uri()],
                   check=True, timeout=120, capture_output=True)
    img = matplotlib.image.imread(shot)[..., :3]
    assert img.shape[0] == 2400
    # non-blank: a white page with dark text and coloured figures
    assert img.std() > 0.05
    assert (img.max(axis=2) - img.min(axis=2) > 0.3).mean() > 0.01  # saturated (heatmap) pixels


# --------------------------------------------------------------------------- user files
@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    X, y = load_digits(n_class=3, return_X_y=True)
    X, y = X[:150], y[:150]
    joblib.dump(LogisticRegression(max_iter=300).fit(X, y), d / "logreg.joblib")
    joblib.dump(KNeighborsClassifier().fit(X, y), d / "knn.joblib")
    np.savez(d / "digits.npz", X=X, y=y, image_shape=np.array([8, 8]))
    np.savez(d / "wrong.npz", X=X[:, :10], y=y)
    np.savez(d / "noX.npz", Z=X)
    np.savez(d / "nan.npz", X=np.where(X == 0, np.nan, X))
    (d / "garbage.npz").write_bytes(b"not a zip file")
    return d


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_audit_user_model_and_data(digits_files, tmp_path, capsys):
    out = tmp_path / "rep"
    code, err = _run(["audit", str(digits_files / "logreg.joblib"), str(digits_files / "digits.npz"),
                      "--out", str(out), "-q", "--aopc-samples", "20", "--n-steps", "8", "--region-size", "2"],
                     capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    (m,) = summary["models"]
    assert m["name"] == "logreg" and m["model"] == "LogisticRegression" and m["n_samples"] == 150
    assert m["conservation_max_abs_residual"] < 1e-8
    assert m["context_ratio"] is None  # no masks given
    assert len(m["spray"]["classes"]) == 3
    # re-running replaces the old report atomically
    code, err = _run(["audit", str(digits_files / "logreg.joblib"), str(digits_files / "digits.npz"),
                      "--out", str(out), "-q", "--max-samples", "60", "--aopc-samples", "10", "--n-steps", "4"],
                     capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["models"][0]["n_samples"] == 60
    assert sorted(os.listdir(tmp_path)) == ["rep"]


@pytest.mark.parametrize("model, data, message", [
    ("missing.joblib", "digits.npz", "model file not found"),
    ("logreg.joblib", "missing.npz", "data file not found"),
    ("knn.joblib", "digits.npz", "cannot explain KNeighborsClassifier"),
    ("logreg.joblib", "wrong.npz", "the model expects 64 features"),
    ("logreg.joblib", "noX.npz", "has no array 'X'"),
    ("logreg.joblib", "nan.npz", "NaN"),
    ("logreg.joblib", "garbage.npz", "cannot read"),
    ("digits.npz", "digits.npz", "cannot load model"),
])
def test_bad_input_one_line_exit_2_no_output(digits_files, tmp_path, capsys, model, data, message):
    out = tmp_path / "rep"
    code, err = _run(["audit", str(digits_files / model), str(digits_files / data), "--out", str(out), "-q"], capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("sklrp audit: error: ")
    assert os.listdir(tmp_path) == []  # neither the report nor a temp dir


def test_cli_usage_errors(tmp_path, capsys):
    assert _run(["audit", "--out", str(tmp_path / "r")], capsys)[0] == 2
    assert _run(["audit", "a", "b", "--demo"], capsys)[0] == 2
    assert _run([], capsys)[0] == 2
    with pytest.raises(SystemExit) as exc:  # argparse's own usage errors also exit with 2
        main(["audit", "--n-jobs", "many"])
    assert exc.value.code == 2
    code, err = _run(["audit", "--demo", "--n-jobs", "0", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--n-jobs" in err
    code, err = _run(["audit", "--demo", "--rule", "bogus", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--rule" in err
    code, err = _run(["audit", "--demo", "--device", "tpu", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--device" in err
    import torch

    if not torch.cuda.is_available():
        code, err = _run(["audit", "--demo", "--device", "cuda", "--out", str(tmp_path / "r")], capsys)
        assert code == 2 and "CUDA is not available" in err
    # a directory that is not a report is never overwritten
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "thesis.tex").write_text("precious")
    code, err = _run(["audit", "--demo", "--out", str(tmp_path / "keep")], capsys)
    assert code == 2 and "not an sklrp report" in err
    assert (tmp_path / "keep" / "thesis.tex").read_text() == "precious"


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sklrp", "audit", str(tmp_path / "none.joblib"),
                           str(tmp_path / "none.npz")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sklrp audit: error: model file not found: {tmp_path / 'none.joblib'}"
    assert shutil.which("sklrp") is None or os.access(shutil.which("sklrp"), os.X_OK)


def test_load_data_checks_masks_and_image_shape(tmp_path):
    X = np.zeros((4, 9))
    np.savez(tmp_path / "a.npz", X=X, masks=np.ones((3, 3, 3)))
    with pytest.raises(AuditError, match="masks has 3 entries"):
        load_data(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", X=X, image_shape=np.array([2, 2]))
    with pytest.raises(AuditError, match="image_shape"):
        load_data(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", X=X, y=np.zeros(5))
    with pytest.raises(AuditError, match="y must have shape"):
        load_data(tmp_path / "c.npz")


# --------------------------------------------------------------------------- parallel / Dask
@pytest.fixture(scope="module")
def digits_lrp():
    X, y = load_digits(return_X_y=True)
    X, y = X[:200], y[:200]
    return make_explainer(LogisticRegression(max_iter=300).fit(X, y), X, y), X, y


def test_explain_parallel_matches_serial(digits_lrp):
    lrp, X, y = digits_lrp
    E = lrp.explain(X, target=y)
    with joblib.parallel_config(backend="threading"):  # process start-up would dominate the test
        R, Rb, out, t, res = explain_parallel(lrp, X, y, n_jobs=2, chunk_size=64)
    np.testing.assert_allclose(R, E.relevance)
    np.testing.assert_allclose(out, E.output)
    np.testing.assert_array_equal(t, y)


def test_explain_and_spray_under_dask_local_cluster(digits_lrp):
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] not installed "
                                      "(pip install 'sklrp[dask]')")
    lrp, X, y = digits_lrp
    serial = explain_parallel(lrp, X, y, chunk_size=50)
    spray_serial, _ = spray_per_class(serial[0], y, (8, 8), n_jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        with joblib.parallel_config(backend="dask"):
            dask_res = explain_parallel(lrp, X, y, n_jobs=-1, chunk_size=50)
            spray_dask, _ = spray_per_class(dask_res[0], y, (8, 8), n_jobs=-1)
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(dask_res[0], serial[0])
    for a, b in zip(spray_dask, spray_serial):
        assert a["class"] == b["class"]
        np.testing.assert_allclose(a["eigenvalues"], b["eigenvalues"], atol=1e-10)


def test_audit_tabular_regressor(tmp_path):
    """Tabular data and a regressor: feature bar chart, output 0 explained, one SpRAy group."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sklrp.cli import audit

    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    s = audit({"ridge": model}, X[:60], y[:60], out=str(tmp_path / "rep"), rule="z", n_steps=5, aopc_samples=20)
    (m,) = s["models"]
    assert m["explained"] == "output 0" and m["accuracy"] is None
    assert m["fig_heatmaps"] == "ridge_features.png"
    assert m["conservation_max_abs_residual"] < 1e-8
    assert [r["class"] for r in m["spray"]["classes"]] == [0]
    assert m["aopc"]["scores"]["LRP"] > m["aopc"]["scores"]["random"]
    # the numbers do not depend on the number of workers
    with joblib.parallel_config(backend="threading"):
        s2 = audit({"ridge": model}, X[:60], y[:60], out=str(tmp_path / "rep"), rule="z", n_steps=5,
                   aopc_samples=20, n_jobs=2, perturbation="uniform")
        s1 = audit({"ridge": model}, X[:60], y[:60], out=str(tmp_path / "rep"), rule="z", n_steps=5,
                   aopc_samples=20, n_jobs=1, perturbation="uniform")
    assert s1["models"][0]["aopc"]["scores"] == s2["models"][0]["aopc"]["scores"]


def test_audit_bow_pipeline_on_images_with_masks(tmp_path, capsys):
    """An image pipeline (dense SIFT -> BoW -> SVM) takes (n, H, W) as given; empty masks are skipped."""
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from sklrp.bow import BoWEncoder, DenseSIFT
    from sklrp.datasets import make_shapes

    X, y, masks = make_shapes(50, image_size=40, radius=(5.0, 8.0), random_state=0)
    pipe = make_pipeline(DenseSIFT(backend="numpy"), BoWEncoder(n_words=8, random_state=0), LinearSVC())
    joblib.dump(pipe.fit(X[:30], y[:30]), tmp_path / "bow.joblib")
    np.savez(tmp_path / "shapes.npz", X=X[30:], y=y[30:], masks=masks[30:] == 1)
    out = tmp_path / "rep"
    code, err = _run(["audit", str(tmp_path / "bow.joblib"), str(tmp_path / "shapes.npz"), "--out", str(out), "-q",
                      "--aopc-samples", "6", "--n-steps", "4", "--region-size", "10"], capsys)
    assert code == 0, err
    (m,) = json.loads((out / "summary.json").read_text())["models"]
    assert m["model"] == "Pipeline(DenseSIFT -> BoWEncoder -> LinearSVC)"
    n_objects = int((masks[30:] == 1).reshape(20, -1).any(1).sum())
    assert m["context_ratio"]["n_images"] == n_objects < 20
    assert any("images without an object" in note for note in m["notes"])
    assert any("Sensitivity baseline skipped" in note for note in m["notes"])  # finite differences: too costly
    assert set(m["aopc"]["scores"]) >= {"LRP", "random"}

"""``sklrp audit`` on the command line: every bad argument or file is one line, exit 2, nothing written."""

import json
import logging
import os
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

from sklrp.audit import AuditError, explain_parallel, make_explainer  # noqa: E402
from sklrp.audit.inputs import load_data  # noqa: E402
from sklrp.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    X, y = load_digits(n_class=3, return_X_y=True)
    X, y = X[:150], y[:150]
    joblib.dump(LogisticRegression(max_iter=300).fit(X, y), d / "logreg.joblib")
    joblib.dump(KNeighborsClassifier().fit(X, y), d / "knn.joblib")
    np.savez(d / "digits.npz", X=X, y=y, image_shape=np.array([8, 8]))
    np.savez(d / "wrong.npz", X=X[:, :10], y=y)
    np.savez(d / "noX.npz", Z=X)
    np.savez(d / "nan.npz", X=np.where(X == 0, np.nan, X))
    np.savez(d / "badmask.npz", X=X, y=y, masks=np.full((150, 8, 8), 2))
    np.savez(d / "maskshape.npz", X=X, y=y, masks=np.ones((150, 5, 5), bool))
    np.savez(d / "objects.npz", X=X, y=y.astype(object))
    np.save(d / "single.npy", X)
    np.savetxt(d / "digits.csv", X[:5], delimiter=",")
    (d / "garbage.npz").write_bytes(b"\x00\xffnot a zip file")
    Xs, ys = load_digits(return_X_y=True)
    big = np.kron(Xs[:40].reshape(40, 8, 8), np.ones((2, 2)))  # 16x16 images
    joblib.dump(LogisticRegression(max_iter=200).fit(big.reshape(40, -1), ys[:40]), d / "big.joblib")
    np.savez(d / "big.npz", X=big, y=ys[:40])
    return d


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("model, data, extra, message", [
    ("missing.joblib", "digits.npz", [], "model file not found"),
    ("logreg.joblib", "missing.npz", [], "data file not found"),
    ("knn.joblib", "digits.npz", [], "cannot explain KNeighborsClassifier"),
    ("logreg.joblib", "wrong.npz", [], "the model expects 64 features"),
    ("logreg.joblib", "noX.npz", [], "has no array 'X'"),
    ("logreg.joblib", "nan.npz", [], "NaN"),
    ("logreg.joblib", "garbage.npz", [], "is not an .npz file"),
    ("logreg.joblib", "digits.csv", [], "CSV?"),
    ("logreg.joblib", "single.npy", [], "single .npy array"),
    ("logreg.joblib", "objects.npz", [], "Python objects"),
    ("digits.npz", "logreg.joblib", [], "did you swap them?"),  # data file checked first
    ("digits.npz", "digits.npz", [], "not a model; the order is MODEL DATA"),
    ("digits.csv", "digits.npz", [], "text file, not a model"),
    ("logreg.joblib", "badmask.npz", [], "masks must be boolean"),
    ("logreg.joblib", "maskshape.npz", [], "masks must have one value per pixel"),
    ("logreg.joblib", "digits.npz", ["--region-size", "16"], "larger than the images (8x8)"),
    ("big.joblib", "big.npz", ["--region-size", "50"], "larger than the images (16x16)"),
    ("logreg.joblib", "digits.npz", ["--max-samples", "0"], "--max-samples must be >= 1"),
    ("logreg.joblib", "digits.npz", ["--n-steps", "0"], "--n-steps must be >= 1"),
    ("logreg.joblib", "digits.npz", ["--n-jobs", "0"], "--n-jobs"),
    ("logreg.joblib", "digits.npz", ["--alpha", "1.5"], "--alpha"),
    ("logreg.joblib", "digits.npz", ["--device", "tpu"], "--device"),
    ("logreg.joblib", "digits.npz", ["--rule", "bogus"], "--rule"),
    ("logreg.joblib", "digits.npz", ["--epsilon", "-1"], "--epsilon"),
])
def test_bad_input_one_line_exit_2_nothing_written(files, tmp_path, capsys, model, data, extra, message):
    out = tmp_path / "rep"
    code, err = _run(["audit", str(files / model), str(files / data), "--out", str(out), "-q", *extra], capsys)
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("sklrp audit: error: ")
    assert os.listdir(tmp_path) == []  # neither the report nor a temporary folder


def test_output_folder_errors(files, tmp_path, capsys):
    data = [str(files / "logreg.joblib"), str(files / "digits.npz")]
    # a parent that cannot be written to (read-only for everyone, root included)
    code, err = _run(["audit", *data, "--out", "/sys/sklrp-report", "-q"], capsys)
    assert code == 2 and "cannot write to the parent directory of --out" in err and err.count("\n") == 1
    code, err = _run(["audit", *data, "--out", str(tmp_path / "no" / "such" / "rep"), "-q"], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "file").write_text("x")
    code, err = _run(["audit", *data, "--out", str(tmp_path / "file"), "-q"], capsys)
    assert code == 2 and "not a directory" in err
    # a folder that is not a report is never overwritten
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "thesis.tex").write_text("precious")
    code, err = _run(["audit", *data, "--out", str(tmp_path / "keep"), "-q"], capsys)
    assert code == 2 and "not an sklrp report" in err
    assert (tmp_path / "keep" / "thesis.tex").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["file", "keep"]


def test_usage_errors_are_one_line(tmp_path, capsys):
    assert _run(["audit", "--out", str(tmp_path / "r")], capsys) == (2, "sklrp audit: error: give MODEL and DATA "
                                                                       "files, or --demo\n")
    code, err = _run(["audit", "a", "b", "--demo"], capsys)
    assert code == 2 and "--demo takes no MODEL or DATA" in err
    assert _run([], capsys)[0] == 2
    for argv in (["audit", "--n-jobs", "many"], ["audit", "--perturbation", "wobble"], ["audit", "--bogus"]):
        with pytest.raises(SystemExit) as exc:  # argparse's own errors: also one line, exit 2
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ": error: " in err
    assert os.listdir(tmp_path) == []


def test_errors_come_before_torch_is_imported(files, tmp_path):
    """Argument and file checks run before torch is imported (a bad call answers in well under a second)."""
    code = ("import sys; from sklrp.cli import main; "
            f"r = main(['audit', {str(files / 'logreg.joblib')!r}, {str(files / 'digits.csv')!r}, '--out', "
            f"{str(tmp_path / 'r')!r}]); print(r, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sklrp", "audit", str(tmp_path / "none.joblib"),
                           str(tmp_path / "none.npz")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sklrp audit: error: data file not found: {tmp_path / 'none.npz'}"


def test_audit_user_model_and_data(files, tmp_path, capsys):
    out = tmp_path / "rep"
    code, err = _run(["audit", str(files / "logreg.joblib"), str(files / "digits.npz"), "--out", str(out), "-q",
                      "--aopc-samples", "12"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    (m,) = summary["models"]
    assert m["name"] == "logreg" and m["model"] == "LogisticRegression" and m["n_samples"] == 150
    assert m["conservation"]["max_abs_residual"] < 1e-8
    assert m["context_ratio"] is None  # no masks given
    # regions and steps from the image size: 8x8 digits -> single pixels, the whole curve
    assert (m["aopc"]["region_size"], m["aopc"]["n_steps"], m["aopc"]["n_regions"]) == (1, 64, 64)
    assert len(m["strategies"]["classes"]) == 3
    # re-running replaces the old report atomically; a choice that cuts the curve is a warning
    code, err = _run(["audit", str(files / "logreg.joblib"), str(files / "digits.npz"), "--out", str(out), "-q",
                      "--max-samples", "60", "--aopc-samples", "10", "--region-size", "4", "--n-steps", "20"], capsys)
    assert code == 0, err
    assert "sklrp audit: warning: --n-steps 20 with regions of 4x4 pixels on 8x8 images: there are only 4 " \
           "regions" in err
    m = json.loads((out / "summary.json").read_text())["models"][0]
    assert m["n_samples"] == 60 and m["aopc"]["n_steps"] == 4
    assert any("only 4 regions" in note for note in m["notes"])
    assert sorted(os.listdir(tmp_path)) == ["rep"]


def test_load_data_checks(tmp_path):
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
    np.savez(tmp_path / "d.npz", X=X, masks=np.ones((4, 9), dtype=np.uint8))
    assert load_data(tmp_path / "d.npz")[2].dtype == bool  # 0/1 masks are fine


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
        P = explain_parallel(lrp, X, y, n_jobs=2, chunk_size=64)
    np.testing.assert_allclose(P.relevance, E.relevance)
    np.testing.assert_allclose(P.output, E.output)
    np.testing.assert_array_equal(P.target, y)
    np.testing.assert_allclose(P.absorbed, E.absorbed)


def test_explain_under_dask_local_cluster(digits_lrp):
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] not installed "
                                      "(pip install 'sklrp[dask]')")
    lrp, X, y = digits_lrp
    serial = explain_parallel(lrp, X, y, chunk_size=50)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        with joblib.parallel_config(backend="dask"):
            dask_res = explain_parallel(lrp, X, y, n_jobs=-1, chunk_size=50)
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(dask_res.relevance, serial.relevance)


def test_audit_tabular_regressor(tmp_path):
    """Tabular data and a regressor: feature bars, output 0 explained, one group (no verdict)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sklrp.audit import audit

    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    s = audit({"ridge": model}, X[:60], y[:60], out=str(tmp_path / "rep"), rule="z", aopc_samples=20)
    (m,) = s["models"]
    assert m["explained"] == "output 0" and m["accuracy"] is None
    assert m["fig_heatmaps"] == "ridge_features.png"
    assert m["conservation"]["max_abs_residual"] < 1e-8
    assert m["strategies"]["n_classes"] == 1 and m["strategies"]["flagged"] == []
    assert (m["aopc"]["region_size"], m["aopc"]["n_steps"]) == (1, 10)
    assert m["aopc"]["scores"]["LRP"] > m["aopc"]["scores"]["random"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "n/a (one group: nothing to compare)" in page
    # the numbers do not depend on the number of workers
    with joblib.parallel_config(backend="threading"):
        s2 = audit({"ridge": model}, X[:60], y[:60], out=str(tmp_path / "rep"), rule="z", aopc_samples=20, n_jobs=2,
                   perturbation="uniform")
    s1 = audit({"ridge": model}, X[:60], y[:60], out=str(tmp_path / "rep"), rule="z", aopc_samples=20, n_jobs=1,
               perturbation="uniform")
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
                      "--aopc-samples", "6", "--n-steps", "4"], capsys)
    assert code == 0, err
    (m,) = json.loads((out / "summary.json").read_text())["models"]
    assert m["model"] == "Pipeline(DenseSIFT -> BoWEncoder -> LinearSVC)"
    n_objects = int((masks[30:] == 1).reshape(20, -1).any(1).sum())
    assert m["context_ratio"]["n_images"] == n_objects < 20
    assert any("images without an object" in note for note in m["notes"])
    assert any("Sensitivity baseline skipped" in note for note in m["notes"])  # finite differences: too costly
    assert m["aopc"]["region_size"] == 5  # 40 // 8
    assert set(m["aopc"]["scores"]) >= {"LRP", "random"}

"""Every script in examples/ runs (small sizes via SKLRP_EXAMPLES_SMALL=1) and writes its figures."""

import glob
import os
import runpy

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

EXAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), os.pardir, "examples", "*.py")))


def test_examples_exist():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"plot_linear_digits.py", "plot_svm_kernels_shapes.py", "plot_fisher_vector.py",
            "plot_cnn_composites.py", "plot_aopc_rules.py", "plot_spray_clever_hans.py",
            "plot_text_svm.py"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path, tmp_path, monkeypatch, capsys):
    if "cnn" in path:
        pytest.importorskip("skorch", reason="skorch not installed (pip install -e '.[dev]' installs it)")
    monkeypatch.setenv("SKLRP_EXAMPLES_SMALL", "1")
    monkeypatch.setenv("SKLRP_EXAMPLES_OUT", str(tmp_path))
    # in-process: the examples share this process' imports (torch, sklearn), which keeps the test cheap
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        plt.close("all")
    written = os.listdir(tmp_path)
    assert any(f.endswith(".png") for f in written), written
    for f in written:
        assert os.path.getsize(tmp_path / f) > 1000
    out = capsys.readouterr().out
    assert out.strip()  # each example reports what it found


def test_example_findings(tmp_path, monkeypatch, capsys):
    """The stories the examples tell hold on their small settings."""
    monkeypatch.setenv("SKLRP_EXAMPLES_SMALL", "1")
    monkeypatch.setenv("SKLRP_EXAMPLES_OUT", str(tmp_path))
    root = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
    try:
        ns = runpy.run_path(os.path.join(root, "plot_text_svm.py"), run_name="__main__")
    finally:
        plt.close("all")
    top_word = ns["words"][ns["order"][-1]]
    assert top_word == "via-site"
    html = (tmp_path / "text_svm_tokens.html").read_text()
    assert html.count("<span") > 20

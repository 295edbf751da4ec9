"""``sklrp audit --demo``: both models' watermarked class is flagged, and the report renders in a browser."""

import json
import os
import shutil
import subprocess

import matplotlib
import pytest

matplotlib.use("Agg")

from sklrp.cli import main  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """``sklrp audit --demo`` (what ``make demo`` writes, with fewer AOPC samples), computed once."""
    pytest.importorskip("skorch", reason="skorch not installed (pip install -e '.[dev]' installs it)")
    out = tmp_path_factory.mktemp("demo") / "audit-report"
    assert main(["audit", "--demo", "--demo-samples", "800", "--aopc-samples", "12", "--n-steps", "24", "--probe",
                 "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return out, summary, (out / "report.html").read_text(encoding="utf-8")


def test_demo_flags_the_watermarked_class_of_both_models(demo_report):
    out, summary, page = demo_report
    assert [m["name"] for m in summary["models"]] == ["svm-hik", "cnn"]
    for m in summary["models"]:
        st = m["strategies"]
        assert st["flagged"] == [0], m["name"]
        top = st["classes"][0]
        assert top["class"] == 0 and top["rank"] == 1
        # the subgroup is the watermarked images, and its region is the tag's corner
        assert top["planted"]["carriers"] >= 0.8 * top["planted"]["n_carriers"]
        assert top["planted"]["rest"] <= 0.2 * top["planted"]["n_rest"]
        assert "bottom-left" in top["region"]["text"]
        assert top["probe"]["stamped"] > top["probe"]["before"]
        assert m["accuracy"] > 0.5
    cnn = summary["models"][1]
    assert cnn["aopc"]["comparisons"][0]["better"]  # LRP beats a random order by a measured margin
    assert cnn["conservation"]["max_abs_taylor_remainder"] == 0.0
    # the report says why: the flag, the subgroup, the region and the probe in words
    assert page.count("Flagged: class(es) 0.") == 2
    assert "put" in page and "of their positive relevance on" in page and "Reliance probe:" in page
    # nothing but the report was left behind
    assert not [p for p in os.listdir(out.parent) if p.startswith(".sklrp-audit-")]


@pytest.mark.skipif(CHROMIUM is None, reason="headless check needs chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(demo_report, tmp_path):
    out, _, _ = demo_report
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1100,2400", (out / "report.html").as_uri()],
                   check=True, timeout=120, capture_output=True)
    img = matplotlib.image.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1100)
    assert img.std() > 0.05  # not blank
    assert (img.max(axis=2) - img.min(axis=2) > 0.3).mean() > 0.005  # coloured figures (heatmaps) rendered
    # the flag box of the first model is drawn: its red left border (#b40426) in the upper part of the page
    red = (abs(img[..., 0] - 0xb4 / 255) < 0.06) & (abs(img[..., 1] - 0x04 / 255) < 0.06) \
        & (abs(img[..., 2] - 0x26 / 255) < 0.06)
    assert red[:1200].sum() > 100
    # and the images are laid out: some embedded figure rows are wider than 300 px of non-white pixels
    nonwhite = (img < 0.95).any(axis=2)
    assert (nonwhite.sum(axis=1) > 300).sum() > 100

"""The code blocks of doc/user_guide/spray.rst run as written, in order, in one namespace."""

import os
import re
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

GUIDE = os.path.join(os.path.dirname(__file__), os.pardir, "doc", "user_guide", "spray.rst")


def code_blocks(path):
    text = open(path, encoding="utf-8").read()
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", text, flags=re.M)
    return [textwrap.dedent(b) for b in blocks]


def test_spray_user_guide_code_runs(tmp_path, monkeypatch):
    blocks = code_blocks(GUIDE)
    assert len(blocks) >= 4
    pytest.importorskip("faiss", reason='the scale example needs pip install "sklrp[scale]"')
    pytest.importorskip("pyamg", reason='the scale example needs pip install "sklrp[scale]"')
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc__"}
    try:
        for block in blocks:
            exec(compile(block, GUIDE, "exec"), namespace)
    finally:
        plt.close("all")
    assert namespace["spray"].n_clusters_ == 2

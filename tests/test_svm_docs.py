"""The code blocks of doc/user_guide/svm.rst run as written, in order, in one namespace."""

import re
import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

GUIDE = Path(__file__).resolve().parents[1] / "doc" / "user_guide" / "svm.rst"


def _code_blocks(text):
    blocks = []
    for match in re.finditer(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", text):
        blocks.append(textwrap.dedent(match.group(1)))
    return blocks


def test_svm_user_guide_code_blocks_run(capsys):
    blocks = _code_blocks(GUIDE.read_text())
    assert len(blocks) == 3
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guide's code must not warn unless it says so
        for block in blocks:
            exec(compile(block, str(GUIDE), "exec"), namespace)
    out = capsys.readouterr().out
    assert "exact: median |residual|/|f(x)| = " in out and "TaylorRemainderWarning" not in out
    assert "use taylor='exact'" in out

"""The code blocks of doc/user_guide/tabular.rst run as written, in order, as one script."""

import pathlib
import re
import warnings

import matplotlib

matplotlib.use("Agg")

DOC = pathlib.Path(__file__).parent.parent / "doc" / "user_guide" / "tabular.rst"


def code_blocks(text):
    blocks = []
    for match in re.finditer(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", text, flags=re.M):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[3:] for line in lines))
    return blocks


def test_tabular_user_guide_runs(tmp_path, monkeypatch, capsys):
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. ConvergenceWarning of the small MLPs
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    assert (tmp_path / "waterfall.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "-20.53" in out and "32.06" in out and "31.84" in out  # the figures the text quotes

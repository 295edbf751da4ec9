"""Every Python code block in README.md and doc/**/*.rst runs as written.

The blocks of one file run in order in one namespace, in a temporary working directory, with
matplotlib's Agg backend, as a reader would paste them into one session. Python blocks are:

* Markdown: fences marked ``python`` / ``py`` (``pycon`` or a ``>>>`` prompt: doctest);
* reStructuredText: ``.. code-block:: python`` (also ``code`` / ``sourcecode``, and without a
  language), ``::`` literal blocks (Python unless a ``.. highlight::`` directive says otherwise,
  as in Sphinx), and ``>>>`` doctest blocks, whose printed output is checked.

Text that is not Python (shell commands, output, formulas) must say so: ``.. code-block:: bash``,
``console`` or ``text``; a Markdown fence must always name its language.
"""

import contextlib
import doctest
import io
import os
import re
import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_SKIP_DIRS = {"_build", "auto_examples", "generated"}
_PYTHON = {"python", "python3", "py", "py3", "ipython", "ipython3", "default"}
_DOCTEST = {"pycon", "doscon"}


@dataclass
class Block:
    path: str  # relative to the repository root
    line: int  # 1-based line of the block's first code line
    language: str  # "python", "doctest" or the language it is marked with
    code: str


def _classify(language, code):
    language = (language or "").strip().lower()
    if language in _PYTHON:
        return "doctest" if code.lstrip().startswith(">>>") else "python"
    if language in _DOCTEST:
        return "doctest"
    return language


def _indent(line):
    return len(line) - len(line.lstrip())


def _indented_body(lines, start, indent):
    """The lines from ``start`` on (after blank lines) indented deeper than ``indent``.

    Returns (index of the first body line, dedented code, index after the body).
    """
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    first = i
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
        i += 1
    end = i
    while end > first and not lines[end - 1].strip():
        end -= 1
    return first, textwrap.dedent("\n".join(lines[first:end])), i


_CODE_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(code-block|code|sourcecode)::\s*(\S*)\s*$")
_HIGHLIGHT = re.compile(r"^\s*\.\.\s+highlight::\s*(\S+)\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s")
_OPTION = re.compile(r"^\s*:[\w-]+:")


def rst_blocks(text, path="<rst>"):
    """Code blocks of a reStructuredText document, in order."""
    lines = text.splitlines()
    blocks = []
    default = "python"
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _HIGHLIGHT.match(line)
        if m:
            default = m.group(1)
            i += 1
            continue
        m = _CODE_DIRECTIVE.match(line)
        if m:
            indent = len(m.group(1))
            j = i + 1
            while j < len(lines) and lines[j].strip() and _OPTION.match(lines[j]) and _indent(lines[j]) > indent:
                j += 1
            first, code, i = _indented_body(lines, j, indent)
            language = m.group(3) or default
            blocks.append(Block(path, first + 1, _classify(language, code), code))
            continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not _DIRECTIVE.match(line):
            first, code, i = _indented_body(lines, i + 1, _indent(line))
            if code.strip():
                blocks.append(Block(path, first + 1, _classify(default, code), code))
            continue
        if line.lstrip().startswith(">>>"):
            # a doctest block: the paragraph that starts with a prompt
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            blocks.append(Block(path, i + 1, "doctest", textwrap.dedent("\n".join(lines[i:j]))))
            i = j
            continue
        i += 1
    return blocks


_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")


def markdown_blocks(text, path="<md>"):
    """Fenced code blocks of a Markdown document, in order; a fence without language is an error."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group(2)
        language = m.group(3)
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        code = textwrap.dedent("\n".join(lines[i + 1:j]))
        if not language:
            raise ValueError(f"{path}:{i + 1}: code fence without a language; mark it (```python, ```bash, ```text)")
        blocks.append(Block(path, i + 2, _classify(language, code), code))
        i = j + 1
    return blocks


def document_blocks(path):
    text = Path(path).read_text(encoding="utf-8")
    rel = os.path.relpath(path, ROOT)
    return markdown_blocks(text, rel) if str(path).endswith(".md") else rst_blocks(text, rel)


def _documents():
    docs = [ROOT / "README.md"]
    for p in sorted((ROOT / "doc").rglob("*.rst")):
        if not _SKIP_DIRS.intersection(p.relative_to(ROOT / "doc").parts):
            docs.append(p)
    return docs


DOCUMENTS = _documents()

_LOCAL_HOSTS = {None, "", "localhost", "::1", "0.0.0.0"}


def _offline(getaddrinfo):
    """``socket.getaddrinfo`` that refuses every host but this one: documentation code runs offline."""

    def resolve(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in _LOCAL_HOSTS and not str(name).startswith("127."):
            raise OSError(f"documentation code must run offline; it tried to reach {name!r}")
        return getaddrinfo(host, *args, **kwargs)

    return resolve


def _fail_connections_fast():
    """Dask retries a refused connection for its connect timeout (30 s by default); offline, a
    block that names a remote scheduler fails after 10 s instead (long enough for a local
    cluster on a loaded machine to answer)."""
    try:
        import dask.config
        # distributed adds its defaults to dask's config when first imported; importing it
        # inside the `set` below would let the exit remove them all (the key did not exist)
        import distributed  # noqa: F401
    except ImportError:
        return contextlib.nullcontext()
    return dask.config.set({"distributed.comm.timeouts.connect": "10s"})


def run_block(block, namespace):
    """Run one block in ``namespace``; errors and tracebacks name the document and its line."""
    if block.language == "python":
        # pad so that line numbers in tracebacks are the document's
        source = "\n" * (block.line - 1) + block.code + "\n"
        exec(compile(source, block.path, "exec"), namespace)
    elif block.language == "doctest":
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.code, namespace, block.path, block.path, block.line - 1)
        out = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, out=out.write, clear_globs=False)
        if runner.failures:
            raise AssertionError(f"doctest block at {block.path}:{block.line} failed:\n{out.getvalue()}")


def test_documents_found():
    names = {os.path.relpath(p, ROOT) for p in DOCUMENTS}
    assert {"README.md", os.path.join("doc", "quickstart.rst"), os.path.join("doc", "user_guide", "nn.rst")} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_document_code_runs(path, tmp_path, monkeypatch):
    blocks = [b for b in document_blocks(path) if b.language in ("python", "doctest")]
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(socket, "getaddrinfo", _offline(socket.getaddrinfo))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    try:
        with _fail_connections_fast():
            for block in blocks:
                try:
                    run_block(block, namespace)
                except Exception as exc:
                    raise AssertionError(
                        f"code block at {block.path}:{block.line} failed: {type(exc).__name__}: {exc}"
                    ) from exc
    finally:
        plt.close("all")


# ------------------------------------------------------------------ the block reader itself

_RST = """\
Title
=====

Text with a literal block::

    a = 1

.. code-block:: bash

    make test

.. code-block:: python
   :caption: an option

   b = a + 1

* a list item::

      c = b + 1

.. math::

   x = 1

>>> print(c)
3

.. highlight:: text

Output::

    not python

.. code-block:: python

   >>> c * 2
   6
"""


def test_rst_blocks_found_and_marked():
    blocks = rst_blocks(_RST)
    assert [(b.language, b.code) for b in blocks] == [
        ("python", "a = 1"),
        ("bash", "make test"),
        ("python", "b = a + 1"),
        ("python", "c = b + 1"),
        ("doctest", ">>> print(c)\n3"),
        ("text", "not python"),
        ("doctest", ">>> c * 2\n6"),
    ]
    assert [b.line for b in blocks] == [6, 10, 15, 19, 25, 32, 36]


def test_blocks_run_in_one_namespace_and_doctests_are_checked():
    namespace = {}
    for block in rst_blocks(_RST):
        run_block(block, namespace)
    assert namespace["c"] == 3
    wrong = Block("x.rst", 1, "doctest", ">>> 1 + 1\n3")
    with pytest.raises(AssertionError, match="x.rst:1"):
        run_block(wrong, {})


def test_python_errors_name_the_document_line():
    block = Block("doc/x.rst", 7, "python", "a = 1\nraise ValueError('boom')")
    with pytest.raises(ValueError) as info:
        run_block(block, {})
    frame = info.traceback[-1]
    assert str(frame.path).endswith("x.rst") and frame.lineno + 1 == 8


def test_markdown_fences():
    md = "# T\n\n```python\nx = 1\n```\n\n```bash\nmake demo\n```\n\n```pycon\n>>> x\n1\n```\n"
    assert [(b.language, b.code, b.line) for b in markdown_blocks(md)] == [
        ("python", "x = 1", 4),
        ("bash", "make demo", 8),
        ("doctest", ">>> x\n1", 12),
    ]
    with pytest.raises(ValueError, match="without a language"):
        markdown_blocks("```\nmake test\n```\n")

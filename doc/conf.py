"""Sphinx configuration of the sklrp documentation (``make docs`` builds it with -W)."""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("MPLBACKEND", "Agg")

import sklrp  # noqa: E402

project = "sklrp"
author = "the sklrp developers"
copyright = "2026, the sklrp developers"
release = sklrp.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# The thesis' equation numbers appear in docstrings as text, e.g. "Eq. (2.62)".
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # The gallery shows the code and text; tests/test_examples.py runs the scripts, so the
    # documentation build stays fast and needs no data or GPU.
    "plot_gallery": "False",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
}

templates_path = []
exclude_patterns = ["_build", "generated/*.examples"]
html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "LRP, SpRAy and AOPC for scikit-learn", "fixed_sidebar": True}
master_doc = "index"


# Shapes in docstrings name fitted attributes, e.g. "of shape (n, n_regions_ * n_words)"; in
# reStructuredText a trailing underscore makes a link target. Escape it in such shape lines.
_SHAPE_ATTR = re.compile(r"\b([A-Za-z]\w*?[A-Za-z0-9])_(?=[\s*,)\]+-])")


def _escape_shape_attributes(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        if "of shape (" in line and "``" not in line:
            lines[i] = _SHAPE_ATTR.sub(r"\1\\_", line)


def setup(app):
    app.connect("autodoc-process-docstring", _escape_shape_attributes, priority=400)

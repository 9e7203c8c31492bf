"""Sphinx configuration of the linrec documentation.

Build from the repository root (warnings are errors in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Document the source tree next to this folder, installed or not.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import linrec  # noqa: E402

project = "linrec"
author = "the linrec developers"
copyright = "the linrec developers"
release = linrec.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, ::: fences, {eq} references, GitHub-style heading anchors.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# benchmarks.md includes benchmarks/RESULTS.md, which is written for reading on its own: its
# sections may skip heading levels.
suppress_warnings = ["myst.header"]

# API reference: autosummary writes one page per public object; numpydoc renders the docstrings.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

nitpicky = False

# MathJax: the CDN by default; LINREC_DOCS_MATHJAX points the build at a local copy
# (used to check the pages in a browser on a machine without internet access).
if os.environ.get("LINREC_DOCS_MATHJAX"):
    mathjax_path = os.environ["LINREC_DOCS_MATHJAX"]

html_theme = "furo"
html_title = f"linrec {release}"
html_static_path = ["_static"]
html_show_sourcelink = False


def _skip_metadata_routing(app, what, name, obj, skip, options):
    # scikit-learn's metadata-routing methods (get_metadata_routing, set_<method>_request) are
    # on every estimator class; they are not linrec's API and their docstrings link into
    # scikit-learn's own documentation.
    if name == "get_metadata_routing" or (name.startswith("set_") and name.endswith("_request")):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_routing)

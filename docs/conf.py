"""Sphinx configuration of the tiltlab documentation.

    pip install ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The build imports the installed tiltlab (autodoc), runs ``tiltlab.reproduce`` at the quick
sizes for the gallery and renders the stored benchmark tables (``docs/_ext/tiltlab_docs.py``
writes those pages, and the pages of the SPEC, into ``docs/_generated/``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import tiltlab

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "tiltlab"
author = "tiltlab developers"
copyright = "tiltlab developers"
version = release = tiltlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "tiltlab_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
# SPEC.md is rendered split into pages (docs/_generated/spec/); kl_estimators_study.py is a
# script, not a page
exclude_patterns = ["_build", "SPEC.md", "_generated/gallery", "Thumbs.db", ".DS_Store"]

# -- MyST: the markdown pages (SPEC, porting guide, KL study, changelog) ----------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference ----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"          # the numpydoc Parameters sections say the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # class pages list their members themselves (template)
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# MathJax 3 from its CDN (Sphinx's default), unless TILTLAB_DOCS_MATHJAX names another copy of
# MathJax 3's tex-chtml.js (e.g. a local one, for reading the site offline)
if os.environ.get("TILTLAB_DOCS_MATHJAX"):
    mathjax_path = os.environ["TILTLAB_DOCS_MATHJAX"]

intersphinx_mapping = {}            # no network at build time: plain names, no cross-links

# -- HTML -------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"tiltlab {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
html_show_sourcelink = False


def _public_bases(app, name, obj, options, bases):
    """Class pages name public bases only: a private base (the lattice-law machinery of the
    sequence models, ``tiltlab.sequences._tilted.LatticeModel``) is an implementation detail."""
    bases[:] = [b for b in bases
                if not any(p.startswith("_") for p in getattr(b, "__module__", "").split("."))
                and not getattr(b, "__name__", "").startswith("_")] or [object]


def setup(app):
    app.connect("autodoc-process-bases", _public_bases)

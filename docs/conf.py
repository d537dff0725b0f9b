"""Sphinx configuration of the jaxsaver documentation (Sphinx + MyST; see decisions.md)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # document the checkout, not an installed copy

project = "jaxsaver"
author = "the jaxsaver authors"
copyright = "2026, the jaxsaver authors"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "jaxsaver"

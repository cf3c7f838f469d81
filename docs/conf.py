"""Sphinx configuration of the safefcgi documentation (built by bin/docs)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

from safefcgi import __version__  # noqa: E402

project = "safefcgi"
author = "The safefcgi authors"
copyright = "the safefcgi authors"  # noqa: A001 - the name Sphinx reads
version = release = __version__

extensions = ["safefcgi_docs"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["safefcgi.css"]
html_theme_options = {"description": "A fork-safe FastCGI server for Django",
                      "page_width": "1100px", "sidebar_width": "230px"}
html_title = f"safefcgi {release}"
# Every cross-reference must resolve: a wrong :option: is a build error under -W.
nitpicky = True
# "--port" stays two dashes in option help, never an en dash.
smartquotes = False

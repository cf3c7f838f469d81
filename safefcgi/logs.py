"""Logging set-up: one format for parent and children, with the pid in every line."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(debug: bool = False) -> None:
    """Send safefcgi's log to standard error (which --errlog may point at a file)."""
    root = logging.getLogger("safefcgi")
    if any(getattr(handler, "_safefcgi", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._safefcgi = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False

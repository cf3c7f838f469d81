"""Logging set-up: one format for parent and children, with pid and role in every line.

The role says which process of the pool wrote the line: ``master`` (the
parent), ``child`` (a forked worker) or ``probe`` (the process that checks a
reload's new code). It is a module global, set once where a process takes up
its role, and added to each record by a filter on our handler.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LOG_FORMAT = "%(asctime)s [%(process)d] [%(role)s] [%(levelname)s] %(name)s: %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}

_role = "master"


def set_role(role: str) -> None:
    """Name this process's part in the pool in every later log line."""
    global _role
    _role = role


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log collectors that parse fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d}" + time.strftime("%z", time.localtime(record.created)),
            "pid": record.process,
            "role": getattr(record, "role", _role),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(log_format: str = "text") -> logging.Formatter:
    return JSONFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(debug: bool = False, *, level: str | None = None,
                      log_format: str = "text") -> None:
    """Send safefcgi's log to standard error (which --errlog may point at a file)."""
    root = logging.getLogger("safefcgi")
    handler = next((h for h in root.handlers if getattr(h, "_safefcgi", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(_RoleFilter())
        handler._safefcgi = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(make_formatter(log_format))
    root.setLevel(LEVELS[level] if level else (logging.DEBUG if debug else logging.INFO))
    root.propagate = False

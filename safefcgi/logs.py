"""Logging set-up: one format for parent and children, with pid and role in every line.

The role says which process of the pool wrote the line: ``master`` (the
parent), ``child`` (a forked worker) or ``probe`` (the process that checks a
reload's new code). It is a module global, set once where a process takes up
its role, and added to each record by a filter on our handler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from safefcgi.errors import SafeFCGIError

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


_ours: tuple[logging.Handler, int] | None = None  # our handler and level, for reclaim()


def configure_logging(debug: bool = False, *, level: str | None = None,
                      log_format: str = "text") -> None:
    """Send safefcgi's log to standard error (which --errlog may point at a file)."""
    global _ours
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
    _ours = (handler, root.level)


def reclaim() -> None:
    """Undo what the project's LOGGING did to safefcgi's loggers when it was imported.

    dictConfig disables every logger that exists and is not named in it
    (``disable_existing_loggers`` defaults to True), and a configuration that
    names ``safefcgi`` replaces its handlers and level. Our lines belong to
    the operator's stream (standard error or --errlog) whatever the project
    does with its own; its handlers on our loggers may stay and get copies.
    """
    if _ours is None:
        return
    handler, level = _ours
    root = logging.getLogger("safefcgi")
    if handler not in root.handlers:
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    root.disabled = False
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("safefcgi.") and isinstance(logger, logging.Logger):
            logger.disabled = False
            logger.propagate = True
            logger.setLevel(logging.NOTSET)


# -- log files shared by the master and its children ------------------------------------
#
# A ``LogFile`` is opened once by the master, before any child is forked and before
# privileges are dropped, so children write to the inherited fd at the same fd number.
# On SIGUSR1 the master reopens the path onto that very fd number and passes the new fd
# to every child, which puts it at the same number too: after logrotate moved the file,
# every process writes to the new one. Each entry is one ``os.write`` on an O_APPEND fd,
# so lines of different children never interleave.


class LogFile:
    """An append-only file at a fixed fd number, reopened in place on SIGUSR1."""

    def __init__(self, path: str | None, fallback_fd: int = 2):
        self.path = os.path.abspath(path) if path is not None else None
        self.fd = fallback_fd  # without a path: the error log, reopened with it

    @property
    def own_file(self) -> bool:
        return self.path is not None

    def open(self) -> None:
        if self.path is not None:
            self.fd = _open_append(self.path)

    def reopen(self) -> None:
        """Open the path again onto our fd number (after a log rotation)."""
        if self.path is None:
            return
        fd = _open_append(self.path)
        os.dup2(fd, self.fd, inheritable=False)
        os.close(fd)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError as exc:  # a full disk must not fail the request that is logged
            logging.getLogger("safefcgi.logs").warning(
                "cannot write to %s: %s", self.path or f"fd {self.fd}", exc.strerror)

    def close(self) -> None:
        if self.path is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass


def _open_append(path: str) -> int:
    try:
        # Not inheritable across exec; a fork keeps it (reload re-opens it).
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise SafeFCGIError(f"cannot open log file {path}: {exc.strerror}") from None

"""The access log, and the append-only log files children share with the master.

A ``LogFile`` is opened once by the master, before any child is forked and
before privileges are dropped, so children write to the inherited fd at the
same fd number. On SIGUSR1 the master reopens the path onto that very fd
number and passes the new fd to every child, which puts it at the same
number too: after logrotate moved the file, every process writes to the new
one. Each entry is one ``os.write`` on an O_APPEND fd, so lines of different
children never interleave.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import SafeFCGIError
from .wsgi import WSGIApp, is_buffered

log = logging.getLogger("safefcgi.accesslog")


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
            log.warning("cannot write to %s: %s", self.path or f"fd {self.fd}", exc.strerror)

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


# -- the access log -----------------------------------------------------------------------


def common_log_line(environ: dict[str, Any], status: str | None, size: int, started: float,
                    micros: int) -> bytes:
    """``host ident user [time] "request" status bytes`` and the time taken in µs."""
    request = " ".join((environ.get("REQUEST_METHOD", "-"),
                        environ.get("REQUEST_URI") or _rebuilt_uri(environ),
                        environ.get("SERVER_PROTOCOL", "-")))
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(started))
    code = status.split(" ", 1)[0] if status else "-"
    line = (f'{environ.get("REMOTE_ADDR") or "-"} - {environ.get("REMOTE_USER") or "-"} '
            f'[{stamp}] "{_escape(request)}" {code} {size or "-"} {micros}\n')
    return line.encode("utf-8", "backslashreplace")


def _rebuilt_uri(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path or "-"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class AccessLog:
    """WSGI middleware writing one line per request once its response is closed."""

    def __init__(self, application: WSGIApp, logfile: LogFile):
        self.application = application
        self.logfile = logfile

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        entry = _Entry(environ, self.logfile)

        def logging_start_response(status: str, headers: list, exc_info: Any = None):
            entry.status = status
            write = start_response(status, headers, exc_info)

            def counting_write(data: bytes) -> None:
                entry.size += len(data)
                write(data)

            return counting_write

        try:
            result = self.application(environ, logging_start_response)
        except BaseException:
            entry.status = entry.status or "500"
            entry.finish()
            raise
        return _Counted(result, entry)


class _Entry:
    def __init__(self, environ: dict[str, Any], logfile: LogFile):
        self.environ = environ
        self.logfile = logfile
        self.status: str | None = None
        self.size = 0
        self.started = time.time()
        self._started_ns = time.perf_counter_ns()

    def finish(self) -> None:
        micros = (time.perf_counter_ns() - self._started_ns) // 1000
        self.logfile.write(common_log_line(self.environ, self.status, self.size,
                                           self.started, micros))


class _Counted:
    """The response, counting its bytes; the line is written when it is closed."""

    def __init__(self, result: Iterable[bytes], entry: _Entry):
        self._result = result
        self._entry = entry
        # Keep the server's view of the response: a buffered one may be sent
        # together with the end of the request.
        self.streaming = not is_buffered(result)

    def __iter__(self) -> Iterator[bytes]:
        for block in self._result:
            self._entry.size += len(block)
            yield block

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._entry.finish()

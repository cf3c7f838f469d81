"""The access log: one common-log-format line per request, written by the child that served it.

Lines go to a ``LogFile`` (see logs.py) the master opened before the first fork.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from safefcgi.fastcgi.wsgi import WSGIApp, is_buffered
from safefcgi.logs import LogFile

log = logging.getLogger("safefcgi.accesslog")


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

"""Operator's tools wired into the request path: status and ping pages, access log, slow log.

``Operability`` holds what the operability options asked for and the log
files they need (opened by the master before the first fork). A child
wraps its application once with ``wrap()``: the access log outermost, then
the status and ping pages, answered before the application (and Django)
ever sees the request. Nothing here runs per request unless an option asked
for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from safefcgi.fastcgi.wsgi import WSGIApp
from safefcgi.logs import LogFile
from safefcgi.ops.accesslog import AccessLog
from safefcgi.ops.slowlog import SlowLog
from safefcgi.ops.status import RENDERERS, STATUS_HEADER, StatusQuery

log = logging.getLogger("safefcgi.ops")

NO_CACHE = ("Cache-Control", "no-store")


class PoolView(Protocol):
    """What the pages need from the process serving them (a prefork child)."""

    @property
    def stopping(self) -> bool:
        """True once the server drains or stops: ping must stop saying all is well."""

    def pool_status(self, full: bool) -> dict[str, Any] | None:
        """The master's numbers, or None if it did not answer in time."""


class NoPool:
    """The threaded server: no master to ask, never draining."""

    stopping = False

    def pool_status(self, full: bool) -> dict[str, Any] | None:
        return None


@dataclass
class Operability:
    """The operability options of one server, and the files they write to."""

    # The options' values; their defaults live with the options (safefcgi.config).
    status_path: str | None
    ping_path: str | None
    ping_response: str
    ping_drain: float
    slowlog_timeout: float
    access_log: LogFile | None = None
    slowlog_file: LogFile | None = None
    status_socket: Any = None  # --status-listen's bound socket, answered by the master

    @classmethod
    def from_config(cls, config: Any) -> Operability:
        return cls(
            status_path=config.status_path, ping_path=config.ping_path,
            ping_response=config.ping_response, ping_drain=config.ping_drain,
            slowlog_timeout=config.slowlog_timeout,
            access_log=LogFile(config.access_log) if config.access_log else None,
            slowlog_file=LogFile(config.slowlog) if config.slowlog_timeout else None,
        )

    def open(self) -> None:
        """Open the log files (in the master, before forking and dropping privileges)."""
        for logfile in self.files():
            logfile.open()

    def files(self) -> list[LogFile]:
        """Our own files (not the error log), for SIGUSR1 to reopen."""
        return [f for f in (self.access_log, self.slowlog_file) if f is not None and f.own_file]

    def close(self) -> None:
        for logfile in self.files():
            logfile.close()

    def slow_log(self) -> SlowLog | None:
        if not self.slowlog_timeout or self.slowlog_file is None:
            return None
        return SlowLog(self.slowlog_file, self.slowlog_timeout)

    @property
    def page_paths(self) -> frozenset[str]:
        """The status and ping paths, which the server answers itself (maybe none)."""
        return frozenset(p for p in (self.status_path, self.ping_path) if p)

    def wrap(self, application: WSGIApp, pool: PoolView) -> WSGIApp:
        """The application as a child serves it: pages first, everything logged."""
        if self.status_path or self.ping_path:
            application = OperatorPages(application, self, pool)
        if self.access_log is not None:
            application = AccessLog(application, self.access_log)
        return application


class OperatorPages:
    """WSGI middleware answering the status and ping paths before the application."""

    def __init__(self, application: WSGIApp, ops: Operability, pool: PoolView):
        self.application = application
        self.ops = ops
        self.pool = pool

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = request_path(environ)
        if path == self.ops.ping_path:
            return self.ping(start_response)
        if path == self.ops.status_path:
            return self.status(environ.get("QUERY_STRING", ""), environ.get("HTTP_ACCEPT", ""),
                               start_response)
        return self.application(environ, start_response)

    def ping(self, start_response: Callable) -> list[bytes]:
        if self.pool.stopping:
            return _answer(start_response, "503 Service Unavailable", "text/plain",
                           "stopping\n", "ping")
        return _answer(start_response, "200 OK", "text/plain", self.ops.ping_response, "ping")

    def status(self, query: str, accept: str, start_response: Callable) -> list[bytes]:
        wanted = StatusQuery.parse(query, accept)
        data = self.pool.pool_status(wanted.full)
        if data is None:
            log.warning("status page: the master did not answer")
            return _answer(start_response, "503 Service Unavailable", "text/plain",
                           "status unavailable: the master did not answer in time\n",
                           "status")
        render, content_type = RENDERERS[wanted.format]
        return _answer(start_response, "200 OK", content_type, render(data), "status")


def request_path(environ: dict[str, Any]) -> str:
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")


def _answer(start_response: Callable, status: str, content_type: str, text: str,
            what: str) -> list[bytes]:
    body = text.encode("utf-8")
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            NO_CACHE, (STATUS_HEADER, what)])
    return [body]

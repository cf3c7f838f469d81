"""``safefcgi check``: import a project as the parent would, and report what a fork
would hand to every child (open database connections, cache clients, sockets),
with the file and line that opened each, plus settings that make prefork unsafe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safefcgi.forksafety.threads import StartRecorder, alive_threads

log = logging.getLogger("safefcgi.doctor")

# Frames from these trees are plumbing; the origin we report is the user's code.
_LIBRARY_ROOTS = tuple(
    str(Path(p).resolve()) + os.sep for p in {
        sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"], os.path.dirname(os.path.abspath(__file__)),
    }
)
_LIBRARY_MARKERS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs",
                                 "9p", "glusterfs", "ceph", "afs"})
PGBOUNCER_DEFAULT_PORT = "6432"


@dataclass
class Finding:
    """One thing worth telling the operator."""

    severity: str  # "inherited" (children would share it) or "warning"
    what: str
    message: str
    origin: str | None = None
    origin_verb: str = "opened"  # "started" for a thread

    def line(self) -> str:
        where = f" ({self.origin_verb} at {self.origin})" if self.origin else ""
        return f"{self.severity.upper()}: {self.what}: {self.message}{where}"


@dataclass
class Report:
    settings_module: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def inherited(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "inherited"]

    def as_dict(self) -> dict[str, Any]:
        return {"settings_module": self.settings_module, "ok": not self.inherited,
                "findings": [asdict(f) for f in self.findings]}


def user_origin(stack: list[traceback.FrameSummary]) -> str | None:
    """The innermost frame of the project's own code, as ``file:line in function``."""
    for frame in reversed(stack):
        path = str(Path(frame.filename).resolve())
        if frame.filename.startswith("<") or path.startswith(_LIBRARY_ROOTS) \
                or any(marker in path for marker in _LIBRARY_MARKERS):
            continue
        return f"{_short(path)}:{frame.lineno} in {frame.name}"
    return None


def _short(path: str) -> str:
    cwd = os.getcwd() + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


class OpeningRecorder:
    """Remembers where each database connection and each Python socket was opened."""

    def __init__(self) -> None:
        self.database_origins: dict[str, str | None] = {}
        self.socket_origins: dict[int, str | None] = {}
        self._original_connect = socket.socket.connect
        self._original_connect_ex = socket.socket.connect_ex

    @contextlib.contextmanager
    def recording(self) -> Iterator[OpeningRecorder]:
        from django.db.backends.signals import connection_created

        connection_created.connect(self._on_connection, weak=False)
        recorder = self

        def connect(sock, address):
            recorder.socket_origins[sock.fileno()] = user_origin(traceback.extract_stack()[:-1])
            return recorder._original_connect(sock, address)

        def connect_ex(sock, address):
            recorder.socket_origins[sock.fileno()] = user_origin(traceback.extract_stack()[:-1])
            return recorder._original_connect_ex(sock, address)

        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
        try:
            yield self
        finally:
            socket.socket.connect = self._original_connect
            socket.socket.connect_ex = self._original_connect_ex
            connection_created.disconnect(self._on_connection)

    def _on_connection(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self.database_origins[connection.alias] = user_origin(traceback.extract_stack())


def socket_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.add(int(name))
    return fds


def describe_socket(fd: int) -> str:
    probe = socket.socket(fileno=os.dup(fd))
    try:
        peer = probe.getpeername()
    except OSError:
        peer = None
    finally:
        probe.close()
    if not peer:
        return f"socket fd {fd}"
    if isinstance(peer, tuple):
        return f"socket to {peer[0]}:{peer[1]}"
    return f"unix socket to {peer}"


def check_project(settings_module: str, wsgi_app: str | None = None) -> Report:
    """Load the project like ``safefcgi run`` does before forking, then look around."""
    from safefcgi.forksafety.lifecycle import load_application

    report = Report(settings_module)
    recorder = OpeningRecorder()
    starts = StartRecorder()
    before = socket_fds()
    with recorder.recording(), starts.recording(
            lambda: user_origin(traceback.extract_stack()[:-2])):
        load_application(settings_module, wsgi_app)
    database_fds = _database_findings(report, recorder)
    for fd in sorted(socket_fds() - before - database_fds):
        report.findings.append(Finding(
            "inherited", describe_socket(fd),
            "opened while the project was imported; every child would share it "
            "(a cache or API client created at import time?)",
            recorder.socket_origins.get(fd)))
    for thread in alive_threads():
        report.findings.append(Finding(
            "inherited", thread.describe(),
            "running while the project was imported; children get a copy of the locks it "
            "holds but not the thread (a lock held at fork time stays locked in every "
            "child): start it in an after-fork hook, or run with --lazy",
            starts.origin_of(thread), origin_verb="started"))
    report.findings.extend(settings_warnings())
    return report


def _database_findings(report: Report, recorder: OpeningRecorder) -> set[int]:
    from django.db import connections

    fds = set()
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        with contextlib.suppress(Exception):  # drivers without fileno(): nothing to add
            fds.add(conn.connection.fileno())
        report.findings.append(Finding(
            "inherited", f"database connection '{conn.alias}' ({conn.vendor})",
            "a query ran while the project was imported; safefcgi closes it before each "
            "fork, but move the query out of import time (each child start pays a reconnect)",
            recorder.database_origins.get(conn.alias)))
    return fds


def settings_warnings() -> list[Finding]:
    """Settings that make a prefork deployment unsafe or slow."""
    from django.conf import settings

    warnings = []
    if settings.DEBUG:
        warnings.append(Finding("warning", "DEBUG", "DEBUG is on: every query is kept in "
                                "memory and error pages show settings to visitors"))
    for alias, db in settings.DATABASES.items():
        warnings.extend(_database_warnings(alias, db))
    warnings.extend(_session_warnings(settings))
    return warnings


def _database_warnings(alias: str, db: dict) -> list[Finding]:
    found = []
    engine = db.get("ENGINE", "")
    port, host = str(db.get("PORT", "")), str(db.get("HOST", ""))
    behind_pgbouncer = "postgresql" in engine and (
        port == PGBOUNCER_DEFAULT_PORT or "pgbouncer" in host)
    if behind_pgbouncer and db.get("CONN_MAX_AGE", 0) and not db.get("CONN_HEALTH_CHECKS"):
        found.append(Finding("warning", f"database '{alias}'",
                             "CONN_MAX_AGE with pgbouncer but no CONN_HEALTH_CHECKS: a "
                             "connection pgbouncer dropped is only noticed when a query fails"))
    if behind_pgbouncer and not db.get("DISABLE_SERVER_SIDE_CURSORS"):
        found.append(Finding("warning", f"database '{alias}'",
                             "pgbouncer in transaction mode needs DISABLE_SERVER_SIDE_CURSORS"))
    if "sqlite3" in engine:
        fstype = filesystem_type(str(db.get("NAME", "")))
        if fstype in NETWORK_FILESYSTEMS:
            found.append(Finding("warning", f"database '{alias}'",
                                 f"SQLite file on a {fstype} network filesystem: its locking "
                                 "is unreliable with several processes writing"))
    return found


def _session_warnings(settings: Any) -> list[Finding]:
    engine = settings.SESSION_ENGINE
    if not engine.endswith((".cache", ".cached_db")):
        return []
    backend = settings.CACHES.get(settings.SESSION_CACHE_ALIAS, {}).get("BACKEND", "")
    if backend.endswith(("locmem.LocMemCache", "dummy.DummyCache")):
        kind = "in-memory" if "locmem" in backend else "dummy"
        return [Finding("warning", "sessions",
                        f"sessions live in a {kind} cache: each child has its own copy, so "
                        "users are logged out whenever another child answers")]
    return []


def filesystem_type(path: str) -> str | None:
    """The filesystem type of the mount holding ``path`` (from /proc/mounts)."""
    if not path or path == ":memory:":
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 3 and (target == parts[1] or target.startswith(
                    parts[1].rstrip("/") + "/")) and len(parts[1]) > len(best):
                best, best_type = parts[1], parts[2]
    return best_type


def print_report(report: Report, stream=sys.stdout) -> None:
    for finding in report.findings:
        print(finding.line(), file=stream)
    if report.inherited:
        print(f"{len(report.inherited)} thing(s) open at fork time would be inherited by "
              "every child.", file=stream)
    else:
        print(f"OK: nothing is open at fork time in {report.settings_module}.", file=stream)

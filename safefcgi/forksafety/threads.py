"""Threads alive in the parent at fork time: name each one, and where it came from.

fork() copies the memory of every thread but runs only the one that called
it. A lock another thread held at that moment (the logging module's, an
allocator's, a client library's queue) stays locked in the child forever, and
the child deadlocks the first time it needs it. Projects start threads at
import without knowing: error reporters, metrics exporters, gRPC and
OpenTelemetry clients. So the parent names every thread besides its own
before it first forks, and ``safefcgi check`` does the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("safefcgi.threads")

FOREIGN_TARGET = "unknown: not started through Python's threading module (a C library's own)"


@dataclass(frozen=True)
class AliveThread:
    """A thread running beside the main one."""

    name: str
    target: str  # module.function it runs
    ident: int | None  # its Python ident, to look up where it was started

    def describe(self) -> str:
        return f"thread '{self.name}' (target {self.target})"


def callable_name(func: Any) -> str:
    """``module.qualname`` of a function or bound method; its repr for anything else."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return repr(func)


def thread_target(thread: threading.Thread) -> str:
    """What a thread runs: its target, or its class's own run() method."""
    # Thread keeps the callable it was given as _target until run() returns.
    target = getattr(thread, "_target", None)
    if target is not None:
        return callable_name(target)
    run = type(thread).run
    if run is not threading.Thread.run:
        return callable_name(run)
    # A thread started outside threading that called into Python: its class says so.
    if isinstance(thread, threading._DummyThread):
        return FOREIGN_TARGET
    return "unknown"


def alive_threads() -> list[AliveThread]:
    """Every thread of this process but the calling one, Python's and the others."""
    current = threading.current_thread()
    found, native_ids = [], {threading.get_native_id()}
    for thread in threading.enumerate():
        native_ids.add(thread.native_id)
        if thread is not current:
            found.append(AliveThread(thread.name, thread_target(thread), thread.ident))
    for tid in _task_ids():  # threads a C extension started: only the kernel knows them
        if tid not in native_ids:
            found.append(AliveThread(_task_name(tid), FOREIGN_TARGET, None))
    return found


def _task_ids() -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/task"))
    except OSError:  # no /proc: Python's own threads are all we can name
        return []


def _task_name(tid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/comm") as comm:
        return comm.read().strip()
    return f"tid {tid}"


def warn_about_threads(settings_module: str) -> list[AliveThread]:
    """Before the first fork: one warning per thread running beside the master's own."""
    threads = alive_threads()
    for thread in threads:
        log.warning("%s is running in the parent before the first fork: children get a "
                    "copy of the locks it holds but not the thread, and a lock held at fork "
                    "time stays locked in every child. Start it in an after-fork hook, or "
                    "run with --lazy; 'safefcgi check %s' shows where it was started",
                    thread.describe(), settings_module)
    return threads


class StartRecorder:
    """Remembers where each thread was started (for ``safefcgi check``)."""

    def __init__(self) -> None:
        self.origins: dict[int, list[Any]] = {}  # id(thread) -> the stack at start()

    @contextlib.contextmanager
    def recording(self, capture: Any):
        """While active, ``capture()`` (a stack summary) is called in every Thread.start."""
        original = threading.Thread.start
        recorder = self

        def start(thread: threading.Thread) -> None:
            recorder.origins[id(thread)] = capture()
            return original(thread)

        threading.Thread.start = start
        try:
            yield self
        finally:
            threading.Thread.start = original

    def origin_of(self, thread: AliveThread) -> Any:
        for candidate in threading.enumerate():
            if candidate.ident == thread.ident and thread.ident is not None:
                return self.origins.get(id(candidate))
        return None

"""The slow log: the Python stack of a child whose request runs past --slowlog-timeout.

The master already knows when each child's request started (it names the
request when it kills one for --timeout), so it is the master that watches
the clock: once a request passes the limit it sends the child SIGUSR2, once
per request. The child's handler writes the stack of the frame it
interrupted, with pid, method, URI and elapsed time, and returns: the request
goes on. A child pays nothing per request for this.

Python runs a signal handler in the main thread between two bytecodes, so a
child blocked inside one C call that does not return to the interpreter (a
long query inside a database driver) writes its stack when that call
returns; the entry then shows the true elapsed time at that moment. Handler
and request share nothing but the file: the entry is built first and leaves
in one write() on an O_APPEND fd, never through the logging module, whose
locks the interrupted code may hold.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from types import FrameType

from safefcgi.logs import LogFile

SIGNAL = signal.SIGUSR2
# The handler checks the request it interrupts has itself run this share of
# the limit: the signal may land just after the slow request ended.
MIN_SHARE = 0.9

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

CurrentRequest = Callable[[], "tuple[str, str, float] | None"]


def format_entry(pid: int, method: str, uri: str, elapsed: float, timeout: float,
                 frame: FrameType | None) -> str:
    """The text written for one slow request (one block, ending in a blank line)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    head = (f"{stamp} pid {pid} slow request: {method} {uri} running for {elapsed:.3f} s "
            f"(--slowlog-timeout {timeout:g} s)\n")
    stack = "".join(traceback.format_list(application_frames(frame))) if frame is not None \
        else "  (no Python frame: the child was outside Python code)\n"
    return head + "Traceback (most recent call last):\n" + stack + "\n"


def application_frames(frame: FrameType) -> traceback.StackSummary:
    """The stack below safefcgi's own frames: what the application was doing.

    The frames of the server (the accept loop, the record reader, the WSGI
    glue) are the same in every entry; without them the stack starts at the
    application. All frames are kept if the child was in safefcgi's own code.
    """
    stack = traceback.extract_stack(frame)
    ours = [i for i, entry in enumerate(stack)
            if os.path.dirname(os.path.abspath(entry.filename)) == PACKAGE_DIR]
    if ours and ours[-1] + 1 < len(stack):
        return traceback.StackSummary.from_list(stack[ours[-1] + 1:])
    return stack


class SlowLog:
    """Child side: on SIGUSR2, write the stack of the running request."""

    def __init__(self, logfile: LogFile, timeout: float):
        self.logfile = logfile
        self.timeout = timeout
        self._current: CurrentRequest = lambda: None

    def install(self, current_request: CurrentRequest) -> None:
        """Handle SIGUSR2 in this (child) process; ``current_request()`` names the request."""
        self._current = current_request
        signal.signal(SIGNAL, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        request = self._current()
        if request is None:
            return
        method, uri, since = request
        elapsed = time.monotonic() - since
        if elapsed < self.timeout * MIN_SHARE:
            return  # a younger request: the slow one has already finished
        entry = format_entry(os.getpid(), method, uri, elapsed, self.timeout, frame)
        self.logfile.write(entry.encode("utf-8", "backslashreplace"))


def is_due(request_since: float, noted_since: float, timeout: float, now: float) -> bool:
    """Master side: has this request passed the limit without having been signalled yet?"""
    return noted_since != request_since and now - request_since > timeout

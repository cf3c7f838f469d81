"""Small file-descriptor chores shared by the master, its children and the reloader."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def drain(fd: int) -> None:
    """Read a non-blocking wake-up pipe empty (its bytes only said "wake up")."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def close_fds(fds: Iterable[int]) -> None:
    """Close fds that may already be closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def flush_std_streams() -> None:
    """Flush stdout/stderr before a fork or exec, so nothing buffered is written twice."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass

"""Bounded waits that say what they waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.05


class WaitTimeout(AssertionError):
    """Something a test waited for did not happen in time (a failure, not an error)."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *,
               detail: Callable[[], object] | None = None) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    After ``timeout`` seconds fail naming ``what``, followed by ``detail()``
    (a log, the last value seen) when given.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if detail is not None:
                message += f":\n{detail()}"
            raise WaitTimeout(message)
        time.sleep(INTERVAL)


def stays_false(predicate: Callable[[], object], seconds: float) -> bool:
    """True when ``predicate`` never returned something true for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(INTERVAL)
    return not predicate()

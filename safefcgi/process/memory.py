"""Memory limits per child: --max-child-rss (replace gently) and --max-child-rss-kill.

Django processes grow: caches filled per process, leaks in third-party code.
The master, not the child, watches: it reads each child's resident size from
/proc a couple of times a second, off the request path, so a limit costs
children nothing. A child over the soft limit is retired (it finishes the
request in hand, then exits, and the pool starts a fresh one: no request
fails). A child over the hard limit is killed at once, because it is growing
faster than a request ends and would otherwise take the machine with it.

Resident size counts the pages a child still shares with the master
(copy-on-write): a fresh child starts at roughly the master's size, which
the status page shows per child (``?full``), so limits go above that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from safefcgi.ops.status import rss_bytes

MB = 1024 * 1024
CHECK_SECONDS = 0.5  # how often the children's sizes are read
REPLACE, KILL = "memory", "memory_kill"  # also their restart reasons on the status page


@dataclass(frozen=True)
class MemoryLimits:
    """The limits in bytes; 0 turns one off."""

    replace_above: int = 0
    kill_above: int = 0

    @classmethod
    def from_megabytes(cls, soft: int, hard: int) -> MemoryLimits:
        return cls(soft * MB, hard * MB)

    def __bool__(self) -> bool:
        return bool(self.replace_above or self.kill_above)

    def verdict(self, rss: int | None, ready: bool) -> str | None:
        """KILL, REPLACE or None for a child this big (None: size unknown).

        A child still starting is only held to the hard limit: it cannot be
        asked to finish a request it has not begun, and retiring it would
        start another just like it.
        """
        if rss is None:
            return None
        if self.kill_above and rss > self.kill_above:
            return KILL
        if self.replace_above and rss > self.replace_above and ready:
            return REPLACE
        return None


@dataclass(frozen=True)
class OverLimit:
    child: Any  # the master's Child
    action: str  # REPLACE or KILL
    rss: int


class MemoryWatchdog:
    """Tells the master which children are over a limit, at most every CHECK_SECONDS."""

    def __init__(self, limits: MemoryLimits,
                 read_rss: Callable[[int], int | None] = rss_bytes,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._read_rss = read_rss
        self._clock = clock
        self._next_check = 0.0

    def over_limit(self, children: Iterable[Any]) -> list[OverLimit]:
        """Children to act on now; each is named once per action (see ``memory_action``)."""
        if not self.limits or self._clock() < self._next_check:
            return []
        self._next_check = self._clock() + CHECK_SECONDS
        found = []
        for child in children:
            if child.memory_action == KILL:
                continue  # already killed; waiting to be reaped
            rss = self._read_rss(child.pid)
            action = self.limits.verdict(rss, child.ready)
            if action is None or action == child.memory_action:
                continue
            if action == REPLACE and child.retiring:
                continue  # leaving anyway (pool shrink, reload): no replacement to count
            found.append(OverLimit(child, action, rss))
        return found

"""The pool's rules: which children to start or retire, why one ended, when to look again.

Policy, not mechanism. The master (master.py) forks, signals, reads channels
and scoreboards; this module decides, from the children's state and the
clock, what it should do next. Nothing here forks, kills or touches a socket,
so unit tests reach every rule directly.
"""

from __future__ import annotations

import dataclasses
import random
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safefcgi.ops import slowlog

if TYPE_CHECKING:  # the master's view of a child; only its state is read here
    from safefcgi.process.master import Child

BOARD_POLL_SECONDS = 0.2  # how often the children's scoreboards are read
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
BOOT_FAILURES_BEFORE_SHOUTING = 5


@dataclass(frozen=True)
class PoolLimits:
    """The pool's size limits; TTIN/TTOU move them at run time."""

    minspare: int
    maxspare: int
    maxchildren: int

    def grown(self) -> PoolLimits:
        """One more child: both spare limits up by one, within maxchildren."""
        return dataclasses.replace(self, minspare=min(self.minspare + 1, self.maxchildren),
                                   maxspare=min(self.maxspare + 1, self.maxchildren))

    def shrunk(self) -> PoolLimits:
        """One fewer child: both spare limits down by one; one idle child stays."""
        return dataclasses.replace(self, minspare=max(self.minspare - 1, 0),
                                   maxspare=max(self.maxspare - 1, 1))


def request_limit(maxrequests: int, jitter: int, rng: random.Random) -> int:
    """A child's request budget: maxrequests + random(0..jitter); 0 stays unlimited."""
    if not maxrequests:
        return 0
    return maxrequests + (rng.randint(0, jitter) if jitter else 0)


class PoolPolicy:
    """Decides the pool's size, its back-off after failed starts, and its watchdogs."""

    def __init__(self, limits: PoolLimits, *, timeout: float = 0.0,
                 slowlog_timeout: float = 0.0, maxrequests: int = 0, jitter: int = 0,
                 rng: random.Random | None = None):
        self.limits = limits
        self.timeout = timeout  # --timeout: a request running longer is killed
        self.slowlog_timeout = slowlog_timeout  # --slowlog-timeout: its stack is logged
        self.maxrequests = maxrequests
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.boot_failures = 0  # children that failed to start, in a row
        self.next_spawn_at = 0.0  # no fork before this (monotonic seconds)

    # -- size ------------------------------------------------------------------------

    def initial_children(self) -> int:
        limits = self.limits
        return max(limits.minspare, min(limits.maxspare, limits.maxchildren), 1)

    @staticmethod
    def live(children: Iterable[Child]) -> list[Child]:
        """Children of the current code that are not on their way out."""
        return [c for c in children if not c.retiring and not c.stale]

    def to_start(self, children: Iterable[Child]) -> int:
        """How many children to fork now to have enough spare ones (a starting one counts).

        At least one spare even with --minspare 0: only an idle child accepts,
        so with none, connections would wait although the pool may still grow.
        """
        live = self.live(children)
        spare = sum(1 for c in live if c.idle or not c.ready)
        wanted = max(self.limits.minspare, 1)
        return max(0, min(wanted - spare, self.limits.maxchildren - len(live)))

    def to_retire(self, children: Iterable[Child]) -> list[Child]:
        """Idle children beyond maxspare, the oldest first."""
        return self._idle(children)[self.limits.maxspare:]

    def to_retire_on_shrink(self, children: Iterable[Child]) -> Child | None:
        """TTOU: the oldest idle child, unless it is the last one."""
        idle = self._idle(children)
        return idle[0] if idle and len(self.live(children)) > 1 else None

    def at_maxchildren(self, children: Iterable[Child]) -> bool:
        return len(self.live(children)) >= self.limits.maxchildren

    def _idle(self, children: Iterable[Child]) -> list[Child]:
        return sorted((c for c in self.live(children) if c.ready and c.idle),
                      key=lambda c: c.started_at)

    @staticmethod
    def old_generation_to_retire(children: Iterable[Child]) -> list[Child]:
        """After a reload: the old children, once every fresh one is ready (else none)."""
        children = list(children)
        fresh = PoolPolicy.live(children)
        if not fresh or not all(c.ready for c in fresh):
            return []
        return [c for c in children if c.stale and not c.retiring]

    def request_budget(self) -> int:
        return request_limit(self.maxrequests, self.jitter, self._rng)

    # -- failed starts ---------------------------------------------------------------

    def may_start(self, now: float) -> bool:
        return now >= self.next_spawn_at

    def child_ready(self) -> None:
        """A child got through its start: the back-off starts over."""
        self.boot_failures = 0

    def start_failed(self, now: float) -> float:
        """A child failed during start-up: wait longer each time in a row; the delay."""
        self.boot_failures += 1
        delay = min(BACKOFF_FIRST_SECONDS * 2 ** (self.boot_failures - 1), BACKOFF_MAX_SECONDS)
        self.next_spawn_at = now + delay
        return delay

    def fork_failed(self, now: float, *, hook: bool) -> None:
        """fork() or a before-fork hook failed: try again later (a hook: much later)."""
        if hook:
            self.boot_failures += 1
        self.next_spawn_at = now + (BACKOFF_MAX_SECONDS if hook else BACKOFF_FIRST_SECONDS)

    def should_shout(self) -> bool:
        """True once, when children have failed to start often enough to say so loudly."""
        return self.boot_failures == BOOT_FAILURES_BEFORE_SHOUTING

    @staticmethod
    def restart_reason(child: Child, code: int, stopping: bool) -> str | None:
        """Why a child ended, for the status page; None when we asked it to (pool, stop)."""
        if not child.ready:
            return "startup_failure" if not stopping else None
        if child.timed_out:
            return "timeout"
        if child.memory_action is not None:  # "memory" or "memory_kill" (see memory.py)
            return child.memory_action
        if code != 0 and not (stopping and code == -signal.SIGKILL):
            return "crash"
        if code == 0 and child.budget and child.served >= child.budget:
            return "maxrequests"
        return None

    # -- watchdogs and the next wake-up ------------------------------------------------

    def overdue(self, children: Iterable[Child], now: float) -> list[Child]:
        """--timeout: children whose request has run too long and are not yet killed."""
        if not self.timeout:
            return []
        return [c for c in children if c.request is not None and not c.timed_out
                and now - c.request_since > self.timeout]

    def slow(self, children: Iterable[Child], now: float) -> list[Child]:
        """--slowlog-timeout: children running a slow request not yet reported."""
        if not self.slowlog_timeout:
            return []
        return [c for c in children if c.request is not None and slowlog.is_due(
            c.request_since, c.slow_noted, self.slowlog_timeout, now)]

    def next_wakeup(self, children: Iterable[Child], now: float,
                    drain_until: float | None = None) -> float:
        """Seconds until the loop must look again: the next deadline, or the board poll."""
        children = list(children)
        deadlines = [c.request_since + self.timeout for c in children
                     if self.timeout and c.request is not None and not c.timed_out]
        deadlines += [c.request_since + self.slowlog_timeout for c in children
                      if self.slowlog_timeout and c.request is not None
                      and c.slow_noted != c.request_since]
        if drain_until is not None:
            deadlines.append(drain_until)
        if not deadlines:
            return BOARD_POLL_SECONDS
        return min(BOARD_POLL_SECONDS, max(min(deadlines) - now, 0.0) + 0.01)

"""The prefork master: keeps a pool of children, and is the one place that forks.

Signal handlers only queue the signal and write to a wake-up fd; the main loop
does the work. That is what lets an idle master stop at once on TERM: flup's
master select()ed with no timeout, and since PEP 475 that call simply resumes
after a signal, so ``systemctl stop`` waited for the next request.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .child import MSG_BUSY, MSG_IDLE, ChildWorker
from .config import ServerConfig
from .errors import CHILD_EXIT_BOOT_FAILED, EXIT_OK, HookError
from .hooks import ForkHooks
from .protocol import FastCGIApplication

log = logging.getLogger("safefcgi.master")

TICK_SECONDS = 1.0  # the loop wakes at least this often, signals or not
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
BOOT_FAILURES_BEFORE_SHOUTING = 5
HANDLED_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGCHLD")


@dataclass
class Child:
    """The master's view of one child process."""

    pid: int
    channel: socket.socket
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False  # passed its after-fork hooks and waits for requests
    idle: bool = False
    retiring: bool = False  # told to exit (its channel is closed)

    def retire(self) -> None:
        if not self.retiring:
            self.retiring = True
            self.channel.close()


class PreforkMaster:
    """Keeps between minspare and maxspare idle children, at most maxchildren."""

    def __init__(self, config: ServerConfig, listener: socket.socket,
                 app: FastCGIApplication, hooks: ForkHooks):
        self.config = config
        self.listener = listener
        self.app = app
        self.hooks = hooks
        self.children: dict[int, Child] = {}
        self.worker: ChildWorker | None = None  # set in a child, for after-fork hooks
        self._signals: deque[int] = deque()
        self._selector: selectors.BaseSelector | None = None
        self._wake_read = self._wake_write = -1
        self._stopping = False
        self._fast_stop = False
        self._any_child_ready = False
        self._boot_failures = 0
        self._next_spawn_at = 0.0
        self._previous_handlers: dict[int, Any] = {}

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> int:
        """Serve until TERM/INT (graceful) or QUIT (fast); return the exit status."""
        self._setup()
        try:
            log.info("prefork master ready: %d-%d spare children, at most %d",
                     self.config.minspare, self.config.maxspare, self.config.maxchildren)
            for _ in range(self._initial_children()):
                self._spawn_if_allowed()
            while not self._stopping:
                self._tick()
        finally:
            self._shutdown()
            self._teardown()
        return EXIT_OK

    def _initial_children(self) -> int:
        return max(self.config.minspare, min(self.config.maxspare, self.config.maxchildren), 1)

    def _setup(self) -> None:
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(self._wake_write)
        for name in HANDLED_SIGNALS:
            signum = getattr(signal, name)
            self._previous_handlers[signum] = signal.signal(signum, self._queue_signal)

    def _teardown(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        if self._selector is not None:
            self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        # No logging, no work: just note it; the main loop handles it.
        self._signals.append(signum)

    # -- the main loop -----------------------------------------------------------------

    def _tick(self) -> None:
        for key, _ in self._selector.select(TICK_SECONDS):
            if key.data is None:
                _drain(self._wake_read)
            else:
                self._read_status(key.data)
        self._handle_signals()
        self._reap()
        if not self._stopping:
            self._maintain_pool()

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("%s: graceful stop", signal.Signals(signum).name)
                self._stopping = True
            elif signum == signal.SIGQUIT:
                log.info("SIGQUIT: fast stop")
                self._stopping = self._fast_stop = True
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: replacing every child gracefully")
                for child in self.children.values():
                    self._retire(child)

    def _read_status(self, child: Child) -> None:
        try:
            data = child.channel.recv(256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._unregister(child)  # the child is exiting; _reap() collects it
            child.idle = False
            return
        last = data[-1:]
        if last == MSG_IDLE:
            if not child.ready:
                child.ready = True
                self._any_child_ready = True
                self._boot_failures = 0
            child.idle = True
        elif last == MSG_BUSY:
            child.idle = False

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)

    def _child_exited(self, child: Child, status: int) -> None:
        self._unregister(child)
        child.channel.close()
        code = os.waitstatus_to_exitcode(status)
        if not child.ready:
            self._boot_failed(child, code)
        elif code < 0:
            log.warning("child %d killed by %s", child.pid, signal.Signals(-code).name)
        elif code != 0:
            log.warning("child %d exited with status %d", child.pid, code)
        else:
            log.debug("child %d exited", child.pid)

    def _boot_failed(self, child: Child, code: int) -> None:
        if self._stopping:
            return
        self._boot_failures += 1
        delay = min(BACKOFF_FIRST_SECONDS * 2 ** (self._boot_failures - 1), BACKOFF_MAX_SECONDS)
        self._next_spawn_at = time.monotonic() + delay
        reason = ("its after-fork hook failed" if code == CHILD_EXIT_BOOT_FAILED
                  else f"exit status {code}")
        log.error("child %d failed during start-up (%s); next try in %.1f s",
                  child.pid, reason, delay)
        if self._boot_failures == BOOT_FAILURES_BEFORE_SHOUTING:
            log.error("children failed to start %d times in a row; check the after-fork "
                      "hooks and the log above. Retrying every %.0f s at most",
                      self._boot_failures, BACKOFF_MAX_SECONDS)

    def _maintain_pool(self) -> None:
        live = [c for c in self.children.values() if not c.retiring]
        spare = sum(1 for c in live if c.idle or not c.ready)
        while spare < self.config.minspare and len(live) < self.config.maxchildren:
            if not self._spawn_if_allowed():
                return
            live.append(None)
            spare += 1
        if not live and self.config.minspare == 0:
            self._spawn_if_allowed()  # never zero children: someone must accept
        idle = sorted((c for c in live if c is not None and c.ready and c.idle),
                      key=lambda c: c.started_at)
        for child in idle[self.config.maxspare:]:
            self._retire(child)

    # -- forking -----------------------------------------------------------------------

    def _spawn_if_allowed(self) -> bool:
        if time.monotonic() < self._next_spawn_at:
            return False
        try:
            self.spawn_child()
        except HookError:
            if not self._any_child_ready:
                raise  # a broken before-fork hook at start-up stops start-up
            self._boot_failures += 1
            self._next_spawn_at = time.monotonic() + BACKOFF_MAX_SECONDS
            return False
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOMEM):
                raise
            log.error("cannot fork: %s", exc.strerror)
            self._next_spawn_at = time.monotonic() + BACKOFF_FIRST_SECONDS
            return False
        return True

    def spawn_child(self) -> Child:
        """Fork one child: before_fork hooks here, after_fork hooks in the child."""
        self.hooks.run_before_fork(self)
        parent_end, child_end = socket.socketpair()
        _flush_std_streams()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            os._exit(self._run_child(child_end))
        child_end.close()
        parent_end.setblocking(False)
        child = Child(pid=pid, channel=parent_end)
        self.children[pid] = child
        self._selector.register(parent_end, selectors.EVENT_READ, child)
        log.debug("spawned child %d", pid)
        return child

    def _run_child(self, channel: socket.socket) -> int:
        """Body of a new child; never returns into the master's code."""
        try:
            self._become_child()
            self.worker = ChildWorker(self.listener, self.app, channel,
                                      self.config.maxrequests)
            try:
                self.hooks.run_after_fork(self)
            except HookError:
                return CHILD_EXIT_BOOT_FAILED
            self.worker.serve()
            return 0
        except KeyboardInterrupt:
            return 0
        except BaseException:  # noqa: BLE001 - a child must exit here, whatever happened
            log.critical("child %d crashed", os.getpid(), exc_info=True)
            return 1
        finally:
            _flush_std_streams()

    def _become_child(self) -> None:
        """Drop the master's state that a child must not keep."""
        signal.set_wakeup_fd(-1)
        for signum in self._previous_handlers:
            signal.signal(signum, signal.SIG_DFL)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        for sibling in self.children.values():
            if not sibling.retiring:
                sibling.channel.close()
        self.children = {}
        self._signals.clear()

    # -- stopping ---------------------------------------------------------------------

    def _retire(self, child: Child) -> None:
        self._unregister(child)
        child.retire()

    def _unregister(self, child: Child) -> None:
        if self._selector is None:
            return
        try:
            self._selector.unregister(child.channel)
        except (KeyError, ValueError):
            pass

    def _shutdown(self) -> None:
        """Let children finish what they hold, up to graceful_timeout; then kill."""
        for child in self.children.values():
            self._retire(child)
        if self._fast_stop:
            self._kill_all(signal.SIGKILL)
        deadline = time.monotonic() + self.config.graceful_timeout
        while self.children and time.monotonic() < deadline:
            self._selector.select(min(TICK_SECONDS, max(deadline - time.monotonic(), 0)))
            _drain(self._wake_read)
            self._signals.clear()
            self._reap()
        if self.children:
            log.warning("%d children still busy after %.0f s, killing them",
                        len(self.children), self.config.graceful_timeout)
            self._kill_all(signal.SIGKILL)
            for pid in list(self.children):
                _wait_quietly(pid)
            self.children.clear()
        log.info("all children have exited")

    def _kill_all(self, signum: int) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _wait_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass

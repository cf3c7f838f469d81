"""The prefork master: keeps a pool of children, and is the one place that forks.

Signal handlers only queue the signal and write to a wake-up fd; the main loop
dispatches to ``handle_<signal>`` methods, so even an idle master reacts to a
signal at once.

Signals: TERM/INT graceful stop, QUIT fast stop, HUP reload with fresh code
(see reload.py), USR1 reopen the log files, TTIN/TTOU one child more/fewer.
A second stop signal during a graceful stop (TERM, INT or QUIT) stops now.

Nothing in the master's own bookkeeping may end its loop: each step of a tick
is guarded, a failure is logged with its traceback and the loop goes on. Only
a step that keeps failing tick after tick stops the server, cleanly.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safefcgi import logs
from safefcgi.errors import (
    CHILD_EXIT_BOOT_FAILED,
    EXIT_FAILURE,
    EXIT_OK,
    HookError,
    SafeFCGIError,
)
from safefcgi.fastcgi.protocol import FastCGIApplication
from safefcgi.forksafety.hooks import ForkHooks
from safefcgi.ops import slowlog
from safefcgi.ops.operability import Operability
from safefcgi.ops.status import PoolStats, listen_queue, snapshot
from safefcgi.ops.statuslisten import StatusListener
from safefcgi.process import channel as ch
from safefcgi.process import signals, statusquery, systemd, titles
from safefcgi.process.child import BLOCKED_UNTIL_HANDLED, ChildWorker
from safefcgi.process.daemon import redirect_output
from safefcgi.process.fds import close_fds, drain, flush_std_streams
from safefcgi.process.kept import KeptConnections
from safefcgi.process.memory import KILL as MEMORY_KILL
from safefcgi.process.memory import MemoryLimits, MemoryWatchdog
from safefcgi.process.peers import PeerFilter
from safefcgi.process.pool import BACKOFF_MAX_SECONDS, PoolLimits, PoolPolicy
from safefcgi.process.privileges import Identity, drop_privileges
from safefcgi.process.reload import Reloader
from safefcgi.process.scoreboard import IDLE as BOARD_IDLE
from safefcgi.process.scoreboard import LEAVING as BOARD_LEAVING
from safefcgi.process.scoreboard import Scoreboard
from safefcgi.process.signals import signal_name

if TYPE_CHECKING:  # the master gets a built config; it never builds one
    from safefcgi.config import ServerConfig

log = logging.getLogger("safefcgi.master")

TICK_SECONDS = 1.0  # the loop wakes at least this often, signals or not
HANDLED_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGCHLD", "SIGUSR1",
                   "SIGTTIN", "SIGTTOU")
# A step of the loop that fails this many ticks in a row is broken for good: stop.
STEP_FAILURES_BEFORE_STOPPING = 50
FAILED_TICK_PAUSE_SECONDS = 0.1  # a tick that failed does not spin
FORK_ERRNOS = (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE)


@dataclass
class Child:
    """The master's view of one child process."""

    pid: int
    channel: socket.socket | None
    board: Scoreboard | None = None  # None for children adopted across a reload
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False  # passed its after-fork hooks and waits for requests
    idle: bool = False
    leaving: bool = False  # said it is done and exits of its own accord (--maxrequests)
    retiring: bool = False  # told to exit (its channel is closed)
    stale: bool = False  # runs the code from before the last reload
    request: tuple[str, str] | None = None  # (method, URI) being served
    request_since: float = 0.0
    served: int = 0
    timed_out: bool = False
    budget: int = 0  # requests it may serve (0: unlimited)
    slow_noted: float = -1.0  # request_since of the request last signalled as slow
    memory_action: str | None = None  # over a memory limit: replaced or killed

    def retire(self) -> bool:
        """Tell the child to finish and exit, with a ``retire`` message.

        Not by closing the channel: what the child still reports (a request
        it accepted just now) is read until it exits, so the status page's
        counts stay true, and a status query it sends is still answered.
        Returns False if the message could not be sent: the caller then closes
        the channel (EOF says the same).
        """
        if self.retiring:
            return True
        self.retiring = True
        return self.channel is None or ch.send(self.channel, ch.RETIRE)

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def close_board(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def read_board(self) -> None:
        """Take over what the child last wrote on its scoreboard."""
        if self.board is None or not self.ready:
            return  # before "ready" the board says nothing yet
        state = self.board.read()
        if state is None:
            return  # it kept changing: a busy child; read it next time
        self.idle = state.state == BOARD_IDLE
        self.leaving = state.state == BOARD_LEAVING
        self.served = state.served
        if state.request is None:
            self.request = None
        elif (state.request, state.request_since) != (self.request, self.request_since):
            self.request, self.request_since = state.request, state.request_since

    def describe_request(self) -> str:
        return "serving " + " ".join(self.request) if self.request else "idle"


@dataclass
class InheritedChild:
    """A child of the image before a reload: its pid and channel fd (None if retiring)."""

    pid: int
    channel_fd: int | None


class PreforkMaster:
    """Keeps between minspare and maxspare idle children, at most maxchildren."""

    def __init__(self, config: ServerConfig, listener: socket.socket,
                 app: FastCGIApplication, hooks: ForkHooks, *,
                 identity: Identity | None = None, peers: PeerFilter | None = None,
                 reloader: Reloader | None = None,
                 inherited: Sequence[InheritedChild] = (),
                 stop_accepting: Callable[[], None] | None = None,
                 ops: Operability | None = None,
                 kept: Sequence[tuple[int, int]] = (),
                 queue: tuple[socket.socket, socket.socket] | None = None):
        self.config = config
        self.listener = listener
        self.app = app
        self.hooks = hooks
        self.identity = identity
        self.peers = peers
        self.reloader = reloader
        self.ops = ops or Operability.from_config(config)
        self.pool = PoolPolicy(PoolLimits(config.minspare, config.maxspare, config.maxchildren),
                               timeout=config.timeout, slowlog_timeout=self.ops.slowlog_timeout,
                               maxrequests=config.maxrequests,
                               jitter=config.maxrequests_jitter)
        self.children: dict[int, Child] = {}
        self.worker: ChildWorker | None = None  # set in a child, for after-fork hooks
        self._inherited = list(inherited)
        self._stop_accepting = stop_accepting
        self._signals: deque[int] = deque()
        self._selector: selectors.BaseSelector | None = None
        self._wake_read = self._wake_write = -1
        self._stopping = False
        self._fast_stop = False
        self._announced_ready = False
        self._any_child_ready = False
        self._probe_pid: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.stats = PoolStats()
        self._status_queries: list[tuple[Child, ch.Message]] = []
        self.status_listener: StatusListener | None = None  # --status-listen
        self._drain_until: float | None = None  # --ping-drain: stop once this is reached
        self.kept: KeptConnections | None = None  # idle kept-open connections (kept.py)
        self._inherited_kept = list(kept)
        self._inherited_queue = queue
        self.memory = MemoryWatchdog(MemoryLimits.from_megabytes(config.max_child_rss,
                                                                 config.max_child_rss_kill))
        self._step_failures: dict[str, int] = {}  # step of the loop -> failures in a row
        self._steps: list[Callable[[], None]] = []  # see _tick
        self._exit_status = EXIT_OK

    @property
    def limits(self) -> PoolLimits:
        return self.pool.limits

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> int:
        """Serve until TERM/INT (graceful) or QUIT (fast); return the exit status."""
        self._setup()
        titles.master(self.config.settings_module)
        try:
            log.info("prefork master ready: %d-%d spare children, at most %d",
                     self.limits.minspare, self.limits.maxspare, self.limits.maxchildren)
            self._adopt_inherited()
            self._handle_signals()  # those that came while we started (a stop, say)
            if not self._stopping:
                for _ in range(self.pool.initial_children()):
                    self._spawn_if_allowed()
            while not self._stopping:
                self._tick()
        finally:
            self._shutdown()
            self._teardown()
        return self._exit_status

    def _setup(self) -> None:
        self._wake_read, self._wake_write = signals.wakeup_pipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self.kept = KeptConnections(self.app.limits.read_timeout, self._inherited_queue)
        self._selector.register(self.kept, selectors.EVENT_READ, self.kept)
        for fd, served in self._inherited_kept:
            self.kept.adopt(fd, served)
        self._inherited_kept = []
        for name in HANDLED_SIGNALS:
            signum = getattr(signal, name)
            self._previous_handlers[signum] = signal.signal(signum, self._queue_signal)
        # Signals noted while we started (see signals.hold) are ours now.
        self._signals.extend(signals.take_held())
        if self.ops.status_socket is not None:
            self.status_listener = StatusListener(self.ops.status_socket, self._status_page)
            self.status_listener.register(self._selector)

    def _teardown(self) -> None:
        signal.set_wakeup_fd(-1)
        if self.status_listener is not None:
            self.status_listener.close()
        # Not the handlers from before: a TERM now, while the socket and the pid file
        # are being removed, must not kill us half way (its default action would).
        signals.hold(escalate=False)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if self._selector is not None:
            self._selector.close()
        if self.kept is not None:
            self.kept.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        # No logging, no work: just note it; the main loop handles it.
        self._signals.append(signum)

    def _adopt_inherited(self) -> None:
        """Take over the children of the image before a reload, as the old generation."""
        for inherited in self._inherited:
            sock = None
            if inherited.channel_fd is not None:
                sock = socket.socket(fileno=inherited.channel_fd)
                sock.set_inheritable(False)
                sock.setblocking(False)
            child = Child(inherited.pid, sock, ready=True, stale=True, retiring=sock is None)
            self.children[child.pid] = child
            if sock is not None:
                self._watch(child)
        if self._inherited:
            log.info("adopted %d children running the previous code; they stop once "
                     "fresh children are ready", len(self._inherited))
        self._inherited = []

    # -- the main loop -----------------------------------------------------------------

    def _loop_steps(self) -> list[Callable[[], None]]:
        """The steps of one pass of the loop, in order; the last two are skipped on stop."""
        return [self._wait_for_events, self._handle_signals, self._reap, self._read_boards,
                self._enforce_timeout, self._enforce_memory_limits, self._watch_slow_requests,
                self._check_drain, self._after_reload, self._maintain_pool]

    def _tick(self) -> None:
        # Built once: with kept connections the loop runs for every request.
        steps = self._steps or self._loop_steps()
        self._steps = steps
        failed = False
        for index, step in enumerate(steps):
            if self._stopping and index >= len(steps) - 2:  # no reload, no new children
                break
            failed |= not self._run_step(step)
        if failed:
            time.sleep(FAILED_TICK_PAUSE_SECONDS)

    def _wait_for_events(self) -> None:
        self._poll(self._select_timeout())

    def _run_step(self, step: Callable[[], None]) -> bool:
        """Run one step of the loop; a failure is logged, and the loop goes on.

        Only a step that failed on every one of the last ticks (the selector
        is broken, say) stops the server: cleanly, with a non-zero status.
        """
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive its own bugs
            name = step.__name__.lstrip("_")
            failures = self._step_failures[name] = self._step_failures.get(name, 0) + 1
            if failures == 1:
                log.exception("internal error in the master's %s; the master carries on",
                              name)
            if failures >= STEP_FAILURES_BEFORE_STOPPING and not self._stopping:
                log.critical("the master's %s failed %d times in a row (%s: %s): stopping",
                             name, failures, type(exc).__name__, exc)
                self._stopping = True
                self._exit_status = EXIT_FAILURE
            return False
        if self._step_failures:
            self._step_failures.pop(step.__name__.lstrip("_"), None)
        return True

    def _check_drain(self) -> None:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            log.info("ping drain over: stopping")
            self._stopping = True

    def _poll(self, timeout: float) -> None:
        for key, events in self._selector.select(timeout):
            if key.data is None:
                drain(self._wake_read)
            elif key.data is self.kept:
                self.kept.hand_on()
            elif isinstance(key.data, Child):
                self._read_status(key.data)
            else:  # the --status-listen socket or one of its connections
                key.data.on_ready(events)
        self.kept.flush()
        self.kept.expire(time.monotonic())
        if self._status_queries:
            self._answer_status_queries()

    def _select_timeout(self) -> float:
        """Wake in time for the next deadline (--timeout, slow log, ping drain) and to
        read the scoreboards."""
        now = time.monotonic()
        wakeup = self.pool.next_wakeup(self.children.values(), now, self._drain_until)
        if (expiry := self.kept.next_expiry()) is not None:  # an idle kept connection's
            wakeup = min(wakeup, max(expiry - now, 0.0) + 0.01)
        return wakeup

    def _read_boards(self) -> None:
        for child in self.children.values():
            child.read_board()
        self.stats.observe(self.children.values(), self.limits.maxchildren)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            handler = getattr(self, f"handle_{signal_name(signum)[3:].lower()}", None)
            if handler is not None:
                handler()

    def handle_term(self) -> None:
        self._graceful_stop("SIGTERM")

    def handle_int(self) -> None:
        self._graceful_stop("SIGINT")

    def _graceful_stop(self, signame: str) -> None:
        """Stop gracefully; with --ping-drain, first tell balancers for that long."""
        if self._stopping:
            return
        if self.ops.ping_drain and self._drain_until is None:
            log.info("%s: ping answers 503 for %g s while requests are still served, then "
                     "graceful stop (%s again to skip)", signame, self.ops.ping_drain, signame)
            self._drain_until = time.monotonic() + self.ops.ping_drain
            for child in self.children.values():
                if child.channel is not None:
                    ch.send(child.channel, ch.DRAIN)
            return
        log.info("%s: graceful stop (at most %.0f s)", signame, self.config.graceful_timeout)
        self._stopping = True

    def handle_quit(self) -> None:
        log.info("SIGQUIT: fast stop")
        self._stopping = self._fast_stop = True

    def handle_hup(self) -> None:
        if self._stopping:
            return
        self.hooks.run_on_reload(self)
        if self.reloader is None:
            log.info("SIGHUP: replacing every child (no reload possible here)")
            for child in self.children.values():
                self._retire(child)
            return
        if self._probe_pid is not None:
            log.info("SIGHUP: a reload is already under way")
            return
        log.info("SIGHUP: reloading; checking that the new code imports")
        systemd.reloading()
        self._probe_pid = self.reloader.start_probe()

    def handle_usr1(self) -> None:
        log.info("SIGUSR1: reopening log files")
        try:
            redirect_output(self.config.outlog, self.config.errlog)
        except SafeFCGIError as exc:
            log.error("cannot reopen log files: %s", exc)
            return
        targets = [fd for fd, path in ((1, self.config.outlog), (2, self.config.errlog))
                   if path is not None]
        for logfile in self.ops.files():
            try:
                logfile.reopen()
            except SafeFCGIError as exc:
                log.error("cannot reopen %s: %s", logfile.path, exc)
                continue
            targets.append(logfile.fd)
        if not targets:
            return
        for child in self.children.values():
            if child.channel is not None and not child.retiring:
                ch.send(child.channel, ch.REOPEN, fds=tuple(targets), targets=targets)
        log.info("log files reopened")

    def handle_ttin(self) -> None:
        if self.pool.at_maxchildren(self.children.values()):
            log.info("SIGTTIN: already at maxchildren (%d)", self.limits.maxchildren)
            return
        self._resize(self.limits.grown(), "SIGTTIN")
        self._spawn_if_allowed()

    def handle_ttou(self) -> None:
        self._resize(self.limits.shrunk(), "SIGTTOU")
        child = self.pool.to_retire_on_shrink(self.children.values())
        if child is not None:
            self._retire(child)

    def _resize(self, limits: PoolLimits, signame: str) -> None:
        self.pool.limits = limits
        log.info("%s: now %d-%d spare children, at most %d", signame, limits.minspare,
                 limits.maxspare, limits.maxchildren)

    def handle_chld(self) -> None:
        pass  # _reap() runs on every tick

    # -- what children tell us ---------------------------------------------------------

    def _read_status(self, child: Child) -> None:
        while child.channel is not None:
            try:
                message = ch.receive(child.channel)
            except (BlockingIOError, InterruptedError):
                return
            except (ch.ChannelClosed, OSError) as exc:
                if not isinstance(exc, ch.ChannelClosed):
                    log.warning("channel of child %d unreadable (%s): closed", child.pid, exc)
                self._close_channel(child)  # the child is exiting; _reap() collects it
                child.idle = False
                return
            if message is not None:
                self._apply(child, message)

    def _apply(self, child: Child, message: ch.Message) -> None:
        if message.kind == ch.KEPT:  # an idle kept-open connection: we watch it now
            for fd in message.fds:
                self.kept.adopt(fd, int(message.get("served", 0)))
            return
        close_fds(message.fds)  # no other message carries fds; do not leak any
        if message.kind == ch.IDLE:  # sent once, when the child is ready
            if not child.ready:
                child.ready = True
                self._any_child_ready = True
                self.pool.child_ready()
            child.idle = True
            child.request = None
        elif message.kind == ch.STATUS:
            # Answered once every channel has been read (see _answer_status_queries).
            self._status_queries.append((child, message))

    # -- the status page ---------------------------------------------------------------

    def _answer_status_queries(self) -> None:
        """Read what every child has reported so far, then answer each status query."""
        for child in list(self.children.values()):
            self._read_status(child)
        self._read_boards()
        queries, self._status_queries = self._status_queries, []
        for child, question in queries:
            if child.channel is None:
                continue
            try:
                statusquery.answer(child.channel, question,
                                   self._snapshot(statusquery.wants_full(question)))
            except OSError as exc:  # out of fds or memory: the page says it got no answer
                log.warning("cannot answer child %d's status query: %s", child.pid, exc)

    def _snapshot(self, full: bool) -> dict[str, Any]:
        return snapshot(self.stats, self.children.values(), pool=self.config.settings_module,
                        method=self.config.method, limits=self.limits,
                        listen_queue=listen_queue(self.listener), full=full)

    def _status_page(self, full: bool) -> dict[str, Any]:
        """The page for --status-listen, after reading what every child reported."""
        for child in list(self.children.values()):
            self._read_status(child)
        self._read_boards()
        return self._snapshot(full)

    def _watch_slow_requests(self) -> None:
        """--slowlog-timeout: ask each child running a slow request for its stack, once."""
        for child in self.pool.slow(self.children.values(), time.monotonic()):
            child.slow_noted = child.request_since
            self.stats.slow_requests += 1
            _kill(child.pid, slowlog.SIGNAL)

    def _enforce_timeout(self) -> None:
        now = time.monotonic()
        for child in self.pool.overdue(self.children.values(), now):
            log.error("child %d busy for %.1f s on %s (over --timeout %g s): killing it",
                      child.pid, now - child.request_since, " ".join(child.request),
                      self.config.timeout)
            child.timed_out = True
            _kill(child.pid, signal.SIGKILL)

    def _enforce_memory_limits(self) -> None:
        """--max-child-rss: retire the child (its request ends well); -kill: kill it now."""
        for over in self.memory.over_limit(self.children.values()):
            child, megabytes = over.child, over.rss / 1024 / 1024
            child.memory_action = over.action
            if over.action == MEMORY_KILL:
                log.error("child %d uses %.0f MB, over --max-child-rss-kill %d MB: killed "
                          "while %s", child.pid, megabytes, self.config.max_child_rss_kill,
                          child.describe_request())
                _kill(child.pid, signal.SIGKILL)
            else:
                log.warning("child %d uses %.0f MB, over --max-child-rss %d MB: replaced "
                            "once it is done with what it serves", child.pid, megabytes,
                            self.config.max_child_rss)
                self._retire(child)

    # -- children that exit --------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._probe_pid:
                self._probe_finished(os.waitstatus_to_exitcode(status))
                continue
            child = self.children.pop(pid, None)
            if child is not None:
                self._child_exited(child, status)

    def _child_exited(self, child: Child, status: int) -> None:
        self._read_status(child)  # what it said before exiting still counts
        self._close_channel(child)
        child.read_board()  # the request it died in, if any
        child.close_board()
        code = os.waitstatus_to_exitcode(status)
        self.stats.child_exited(child.served + (child.request is not None),
                                self.pool.restart_reason(child, code, self._stopping))
        self.hooks.run_child_exit(self, child.pid, code)
        if not child.ready:
            self._boot_failed(child, code)
        elif child.timed_out:
            log.warning("child %d killed after --timeout; a fresh one replaces it", child.pid)
        elif child.memory_action is not None:  # logged when the limit was passed
            log.debug("child %d exited (status %d) over a memory limit", child.pid, code)
        elif code < 0:
            log.warning("child %d killed by %s while %s", child.pid,
                        signal_name(-code), child.describe_request())
        elif code != 0:
            log.warning("child %d exited with status %d while %s", child.pid, code,
                        child.describe_request())
        else:
            log.debug("child %d exited", child.pid)

    def _boot_failed(self, child: Child, code: int) -> None:
        if self._stopping:
            return
        delay = self.pool.start_failed(time.monotonic())
        if code == CHILD_EXIT_BOOT_FAILED:
            reason = "its after-fork hook failed"
        elif code < 0:
            reason = f"killed by {signal_name(-code)}"
        else:
            reason = f"exit status {code}"
        log.error("child %d failed during start-up (%s); next try in %.1f s",
                  child.pid, reason, delay)
        if self.pool.should_shout():
            log.error("children failed to start %d times in a row; check the after-fork "
                      "hooks and the log above. Retrying every %.0f s at most",
                      self.pool.boot_failures, BACKOFF_MAX_SECONDS)

    # -- reload ---------------------------------------------------------------------------

    def _probe_finished(self, code: int) -> None:
        self._probe_pid = None
        if self._stopping:
            return
        if code != 0:
            log.error("reload aborted: the new code failed to load (probe exit status %d, "
                      "see above); the running children keep serving the old code", code)
            systemd.ready("reload failed; serving the previous code")
            return
        # Database and cache sockets are close-on-exec: the new image starts clean.
        self.kept.flush()
        self.reloader.exec_master([(c.pid, c.channel) for c in self.children.values()],
                                  queued=self._signals, kept=self.kept.held(),
                                  queue=[self.kept.send_end, self.kept.receive_end])
        # Still here: exec failed (logged); the old code keeps serving.
        systemd.ready("reload failed; serving the previous code")

    def _after_reload(self) -> None:
        """Once fresh children are all up, retire the old generation and tell systemd."""
        fresh = self.pool.live(self.children.values())
        if not fresh or not all(c.ready for c in fresh):
            return
        stale = self.pool.old_generation_to_retire(self.children.values())
        for child in stale:
            self._retire(child)
        if stale:
            log.info("fresh children ready; %d old children finish and exit", len(stale))
        if not self._announced_ready:
            self._announced_ready = True
            systemd.ready(f"serving with {len(fresh)} children")
            self.hooks.run_when_ready(self)

    # -- the pool -------------------------------------------------------------------------

    def _maintain_pool(self) -> None:
        for _ in range(self.pool.to_start(self.children.values())):
            if not self._spawn_if_allowed():
                return
        for child in self.pool.to_retire(self.children.values()):
            self._retire(child)

    # -- forking -----------------------------------------------------------------------

    def _spawn_if_allowed(self) -> bool:
        if not self.pool.may_start(time.monotonic()):
            return False
        try:
            self.spawn_child()
        except HookError:
            if not self._any_child_ready and not self.children:
                raise  # a broken before-fork hook at start-up stops start-up
            self.pool.fork_failed(time.monotonic(), hook=True)
            return False
        except OSError as exc:
            if exc.errno not in FORK_ERRNOS:
                raise
            log.error("cannot start a child: %s", exc.strerror)
            self.pool.fork_failed(time.monotonic(), hook=False)
            return False
        return True

    def spawn_child(self) -> Child:
        """Fork one child: before_fork hooks here, after_fork hooks in the child."""
        self.hooks.run_before_fork(self)
        parent_end, child_end = ch.channel_pair()
        max_requests = self.pool.request_budget()
        board = Scoreboard()
        flush_std_streams()
        # Frozen objects are never visited by the collector, so a child's
        # collections do not write to (and so copy) the pages it shares with us.
        # Garbage is collected first, so it is not frozen for good; after the
        # first fork this only looks at what the master made since.
        gc.collect()
        gc.freeze()
        # Until the child has handlers of its own, a signal sent to it (our
        # SIGTERM on a stop) would run our handlers in it and be lost: the
        # child unblocks them once its handlers are in.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_UNTIL_HANDLED)
        try:
            pid = os.fork()
            if pid == 0:
                parent_end.close()
                os._exit(self._run_child(child_end, max_requests, board))
        finally:  # only the parent gets here
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_end.close()
        parent_end.setblocking(False)
        child = Child(pid=pid, channel=parent_end, budget=max_requests, board=board)
        self.children[pid] = child
        self._watch(child)
        log.debug("spawned child %d (request budget %s)", pid, max_requests or "unlimited")
        return child

    def _run_child(self, channel: socket.socket, max_requests: int, board: Scoreboard) -> int:
        """Body of a new child; never returns into the master's code."""
        try:
            self._become_child()
            self.worker = ChildWorker(self.listener, self.app, channel, max_requests,
                                      peers=self.peers, ops=self.ops, board=board,
                                      draining=self._drain_until is not None,
                                      queue=self.kept.receive_end)
            # Before the hooks: a TERM while they run is a stop like any other.
            self.worker.install_signal_handlers()
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
            flush_std_streams()

    def _become_child(self) -> None:
        """Drop the master's state (and identity) that a child must not keep."""
        logs.set_role("child")
        signal.set_wakeup_fd(-1)
        for signum in self._previous_handlers:
            signal.signal(signum, signal.SIG_DFL)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self.kept.close_in_child()
        if self.status_listener is not None:
            self.status_listener.close(after_fork=True)
            self.status_listener = None
        for sibling in self.children.values():
            sibling.close_channel()
            sibling.close_board()
        self.children = {}
        self._signals.clear()
        self._status_queries = []
        drop_privileges(self.identity)

    # -- stopping ---------------------------------------------------------------------

    def _retire(self, child: Child) -> None:
        if not child.retire():  # else still watched: we read it until it exits
            self._close_channel(child)

    # -- channels: watched while open, never closed while watched ----------------------

    def _watch(self, child: Child) -> None:
        """Read ``child``'s channel in the loop.

        An entry left for the same fd number would make register() raise; it
        can only be stale (that fd was closed and reused), so it is replaced.
        """
        try:
            self._selector.register(child.channel, selectors.EVENT_READ, child)
        except KeyError:
            stale = self._selector.get_key(child.channel.fileno())
            log.warning("fd %d was still watched for %s; watching it for child %d now",
                        stale.fd, getattr(stale.data, "pid", "the wake-up pipe"), child.pid)
            self._selector.unregister(stale.fd)
            self._selector.register(child.channel, selectors.EVENT_READ, child)

    def _close_channel(self, child: Child) -> None:
        """Stop watching ``child``'s channel, then close it (in that order: fds get reused)."""
        if self._selector is not None:
            for key in list(self._selector.get_map().values()):
                if key.data is child:
                    self._selector.unregister(key.fd)
        child.close_channel()

    def _shutdown(self) -> None:
        """Stop accepting now; children finish, serve the backlog and exit; then kill.

        Whatever fails here, no child outlives us: the last resort is SIGKILL.
        """
        try:
            self._stop_children()
        except Exception:  # noqa: BLE001 - the children must be stopped all the same
            log.exception("internal error while stopping; killing the children")
            self._exit_status = EXIT_FAILURE
            self._kill_all(signal.SIGKILL)
            for pid in list(self.children):
                _wait_quietly(pid)
        for child in self.children.values():
            self._close_channel(child)
            child.close_board()
        self.children.clear()
        log.info("all children have exited")

    def _stop_children(self) -> None:
        systemd.stopping()
        if self._stop_accepting is not None:
            self._stop_accepting()
        if self._probe_pid is not None:
            _kill(self._probe_pid, signal.SIGKILL)
        if self._fast_stop:
            self._kill_all(signal.SIGKILL)
        else:
            # Requests the web server already sent on kept-open connections are
            # served like the listener's backlog; idle ones are closed.
            self.kept.stop()
            # SIGTERM, not a closed channel: a stopping child drains the backlog first.
            self._kill_all(signal.SIGTERM)
        deadline = time.monotonic() + self.config.graceful_timeout
        while self.children and time.monotonic() < deadline:
            self._poll(min(TICK_SECONDS, max(deadline - time.monotonic(), 0)))
            self._escalate_on_stop_signals()
            self._reap()
            self._read_boards()
            self._enforce_timeout()
        if self.children:
            log.warning("%d children still busy after %.0f s, killing them: %s",
                        len(self.children), self.config.graceful_timeout,
                        ", ".join(f"{c.pid} ({c.describe_request()})"
                                  for c in self.children.values()))
            self._kill_all(signal.SIGKILL)
            for pid in list(self.children):
                _wait_quietly(pid)

    def _escalate_on_stop_signals(self) -> None:
        """During a graceful stop, a second TERM or INT, or a QUIT, stops now."""
        while self._signals:
            signum = self._signals.popleft()
            if signum in signals.STOP_SIGNALS and not self._fast_stop:
                log.info("%s during the graceful stop: stopping now", signal_name(signum))
                self._fast_stop = True
                self._kill_all(signal.SIGKILL)

    def _kill_all(self, signum: int) -> None:
        for pid in self.children:
            _kill(pid, signum)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass

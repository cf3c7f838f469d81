"""What runs in a child: take one connection at a time, serve it, report state.

The child keeps its state on its scoreboard (see scoreboard.py): whether it
holds a connection and which request it is running, so the master can grow
the pool, and name the request when it kills a child for --timeout. The
channel (see channel.py) carries what is rare: "ready", "stop", "reopen".

Idle children wait in epoll on the listener and on the ready queue of
kept-open connections (see kept.py), both with EPOLLEXCLUSIVE, so a new
connection wakes one of them, not all (no thundering herd). A child also
watches the one kept-open connection it served last, for as long as it is
idle; before it serves anything else, it hands that connection back to the
master, which watches it from then on.

A ``retire`` message, or EOF on the channel (the master died), means this
child is no longer wanted: it finishes the request in hand, serves what is
queued, hands its idle kept-open connection to the master and exits.
SIGTERM means the whole server stops: the child first serves the connections
already waiting in the listen backlog, so none that the kernel accepted is
dropped, then exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from safefcgi.fastcgi.protocol import FastCGIApplication, serve_until_idle
from safefcgi.ops.operability import request_path
from safefcgi.process import channel as ch
from safefcgi.process import signals, statusquery, titles, worker
from safefcgi.process.fds import close_fds, drain
from safefcgi.process.kept import take_from_queue
from safefcgi.process.peers import PeerFilter
from safefcgi.process.polling import (
    Poller,
    accept,
    pause_after_accept_error,
    take_backlog,
)
from safefcgi.process.scoreboard import Scoreboard

if TYPE_CHECKING:
    from safefcgi.ops.operability import Operability

log = logging.getLogger("safefcgi.child")

STATUS_REPLY_SECONDS = 2.0  # how long the status page waits for the master's numbers
# Blocked from fork() until the child's own handlers are in (install_signal_handlers).
BLOCKED_UNTIL_HANDLED = frozenset(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1",
                                       "SIGUSR2", "SIGTTIN", "SIGTTOU", "SIGCHLD"))


class ChildWorker:
    """The accept loop of one prefork child."""

    def __init__(self, listener: socket.socket, app: FastCGIApplication,
                 channel: socket.socket, max_requests: int = 0,
                 peers: PeerFilter | None = None, ops: Operability | None = None,
                 board: Scoreboard | None = None, draining: bool = False,
                 queue: socket.socket | None = None):
        self.listener = listener
        self.queue = queue  # kept-open connections the web server wrote on (kept.py)
        self._parked: socket.socket | None = None  # our last kept-open connection, idle
        self._parked_since = 0.0
        self._parked_served = 0  # requests it carried (safefcgi.connection_requests)
        self._exclusive: set[int] = set()  # listener and ready queue
        self._ready_next: set[int] | None = None  # what the loop handles next, already polled
        self._server_stopping = False  # SIGTERM: idle kept-open connections are closed
        self.app = app
        self.channel = channel
        self.max_requests = max_requests
        self.peers = peers
        self.board = board or Scoreboard()
        self.pid = os.getpid()
        self._stop_requested = False  # drain the backlog, then exit
        self._wake_fd = -1  # signals write here (see install_signal_handlers)
        self._listener_kind = (0, 0, 0)  # family, type, proto: set in serve()
        self._master_alive = True
        self._retired = False  # the master asked us to finish and exit
        self.ops = ops
        self.draining = draining  # the server stops soon: ping says so (--ping-drain)
        self._operator_request = False  # the request running is a status or ping page
        # Those paths, read once: without pages, requests cost no path check at all.
        self._page_paths = ops.page_paths if ops is not None else frozenset()

    def install_signal_handlers(self) -> int:
        """TERM: finish, serve the backlog, exit. QUIT: die now. INT, HUP...: the master's.

        The master forks with these signals blocked (a signal reaching a new
        child before this point would run the master's handlers and be lost);
        they are unblocked here, so one that arrived meanwhile acts now.
        Returns the read end of the wake-up pipe the handlers write to.
        """
        wake_read, _ = signals.wakeup_pipe()
        signal.signal(signal.SIGTERM, self._on_term)
        # Ctrl-C reaches the whole process group; the master coordinates the stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The master's signals, when sent to the whole group (a terminal hangup,
        # `kill -HUP -PGID`, logrotate), must not kill children mid-request.
        for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        for name in ("SIGQUIT", "SIGCHLD"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        slow_log = self.ops.slow_log() if self.ops is not None else None
        if slow_log is not None:  # SIGUSR2 from the master: write our stack
            slow_log.install(self.current_request)
        self._wake_fd = wake_read
        signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED_UNTIL_HANDLED)
        return wake_read

    def _on_term(self, signum: int, frame: Any) -> None:
        self._stop_requested = self._server_stopping = True

    def serve(self) -> None:
        """Serve until the master says stop, or max_requests is reached."""
        if self._wake_fd < 0:  # the master installs them before the after-fork hooks
            self.install_signal_handlers()
        wake_fd = self._wake_fd
        self._listener_kind = worker.prepare_listener(self.listener)
        worker.add_pages(self.app, self.ops, self)
        self.app.observer = self  # request_started() / request_finished()
        titles.child_idle()
        listener_fd, channel_fd = self.listener.fileno(), self.channel.fileno()
        exclusive = [listener_fd]
        queue_fd = -1
        if self.queue is not None:
            queue_fd = self.queue.fileno()
            exclusive.append(queue_fd)
        self._poller = poller = Poller(exclusive=exclusive, shared=[channel_fd, wake_fd])
        self._exclusive = set(exclusive)
        self.board.idle()
        if not self._report(ch.IDLE):  # once: "ready"; the scoreboard says the rest
            return
        try:
            while True:
                ready = self._ready_next or poller.wait(self._parked_timeout())
                self._ready_next = None
                if wake_fd in ready:
                    drain(wake_fd)
                if channel_fd in ready and not self._read_channel():
                    log.debug("retired, or the master closed our channel: leaving")
                    self._stop_requested = True
                if self._stop_requested:
                    # Out of the listener's and the queue's wake-ups first: what the
                    # kernel woke us for is then in what we take, never left behind
                    # with every sibling asleep.
                    parked = self._take_parked()
                    poller.close()
                    self._serve_backlog(parked)
                    return
                parked = self._parked
                if parked is not None and parked.fileno() in ready:
                    self._pass_on(ready, (queue_fd, listener_fd))
                    self._serve(parked)
                elif queue_fd in ready:
                    self._pass_on(ready, (listener_fd,))
                    self._take_from_queue()
                elif listener_fd in ready:
                    self._accept_and_serve()
                else:
                    self._expire_parked()
                    continue
                if not self._carry_on():
                    return
        finally:
            self._let_go_of_parked()
            poller.close()

    # -- the channel ------------------------------------------------------------------

    def _read_channel(self) -> bool:
        """Act on every waiting message; False once the master retired us or is gone."""
        while True:
            try:
                message = ch.receive(self.channel, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return not self._retired
            except ch.ChannelClosed:
                self._master_alive = False
                return False
            if message is not None:
                self._handle_message(message)

    def _handle_message(self, message: ch.Message) -> None:
        if message.kind == ch.REOPEN:
            extra = [f.fd for f in self.ops.files()] if self.ops is not None else []
            _adopt_output_fds(message, {1, 2, *extra})
        elif message.kind == ch.DRAIN:
            self.draining = True
        elif message.kind == ch.RETIRE:
            self._retired = True
        else:
            close_fds(message.fds)

    # -- what the operator's pages ask (ops.PoolView) ------------------------------------

    @property
    def stopping(self) -> bool:
        return self.draining or self._stop_requested or not self._master_alive

    def pool_status(self, full: bool) -> dict[str, Any] | None:
        """The master's status numbers (it reads every channel before it answers)."""
        if not self._master_alive:
            return None
        try:
            return statusquery.ask(self.channel, full, STATUS_REPLY_SECONDS,
                                   self._handle_message)
        except ch.ChannelClosed:
            self._master_alive = False
            return None

    def _report(self, kind: str, **fields: Any) -> bool:
        if not self._master_alive:
            return False
        self._master_alive = ch.send(self.channel, kind, **fields)
        return self._master_alive

    def current_request(self) -> tuple[str, str, float] | None:
        """(method, URI, since) of the request running now, from our own scoreboard."""
        state = self.board.read()
        if state is None or state.request is None:
            return None
        return (*state.request, state.request_since)

    @property
    def requests_served(self) -> int:
        return self.board.served

    def request_started(self, environ: dict[str, Any]) -> None:
        """Called for each request, so the master can name it if it hangs."""
        if self._page_paths and request_path(environ) in self._page_paths:
            self._operator_request = True
            return  # status and ping are the server's own: not counted as requests
        method = environ.get("REQUEST_METHOD", "")
        uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        titles.child_busy(method, uri)
        self.board.request_started(method, uri)

    def request_finished(self) -> None:
        if self._operator_request:
            self._operator_request = False
            return
        self.board.request_finished()

    # -- serving ----------------------------------------------------------------------

    def _accept_and_serve(self) -> None:
        """Serve one new connection if we win the race for it."""
        try:
            conn, addr = accept(self.listener, self._listener_kind)
        except (BlockingIOError, InterruptedError):
            return  # a sibling took it
        except OSError as exc:
            pause_after_accept_error(exc)
            return
        if worker.admitted(self.peers, conn, addr):
            self._serve(conn)

    def _pass_on(self, ready: set[int], others: tuple[int, int] | tuple[int]) -> None:
        """Hand the master what else woke us, so that an idle sibling serves it now.

        Listener and ready queue wake one idle child per arrival (EPOLLEXCLUSIVE):
        what arrived for us while we take something else would wait for us,
        with a sibling idle. The master puts it back in the ready queue, which
        wakes a sibling.
        """
        family, type_, proto = self._listener_kind
        if self.queue is not None and self.queue.fileno() in others \
                and self.queue.fileno() in ready:
            taken = take_from_queue(self.queue)
            if taken is not None:
                self._hand_over(socket.socket(family, type_, proto, fileno=taken[0]), taken[1])
        if self.listener.fileno() in others and self.listener.fileno() in ready:
            try:
                conn, addr = accept(self.listener, self._listener_kind)
            except OSError:  # a sibling took it, or accept failed: the loop retries
                return
            if worker.admitted(self.peers, conn, addr):
                self._hand_over(conn, 0)

    def _hand_over(self, conn: socket.socket, served: int) -> None:
        """Give a connection to the master, which watches it and queues it once readable."""
        if self._master_alive:
            self._report(ch.KEPT, fds=(conn.fileno(),), served=served)
        conn.close()

    def _take_from_queue(self) -> None:
        """Serve a kept-open connection the web server wrote on, if a sibling did not take it."""
        taken = take_from_queue(self.queue)
        if taken is not None:
            family, type_, proto = self._listener_kind
            self._serve(socket.socket(family, type_, proto, fileno=taken[0]), taken[1])

    def _carry_on(self) -> bool:
        """After a connection: False when this child should exit now."""
        if not self._master_alive or self._retired:
            self.board.leaving()
            return False
        if self.max_requests and self.requests_served >= self.max_requests:
            log.debug("served %d requests, making room for a fresh child",
                      self.requests_served)
            self.board.leaving()  # not idle: the master must not count on us any more
            return False
        titles.child_idle()
        self.board.idle()
        return True

    def _serve(self, conn: socket.socket, served: int = 0) -> None:
        """Serve what the web server sent on ``conn``; keep it while idle if it stays open."""
        if conn is self._parked:
            self._poller.remove(conn.fileno())
            self._parked = None
            served = self._parked_served
        else:  # busy from now on: the master watches our idle connection meanwhile
            self._let_go_of_parked()
        self.board.connected()
        served = serve_until_idle(self.app, conn, served)
        if served is None:
            return
        # More work already waiting: the connection goes to the master at once,
        # without being watched here first (two epoll_ctl calls saved).
        ready = self._poller.wait(0)
        self._ready_next = ready or None
        if ready & self._exclusive:
            self._hand_over(conn, served)
            return
        self._parked, self._parked_since, self._parked_served = conn, time.monotonic(), served
        self._poller.add(conn.fileno())

    def _parked_timeout(self) -> float | None:
        """How long our idle kept-open connection may stay silent (--read-timeout)."""
        limit = self.app.limits.read_timeout
        if self._parked is None or limit <= 0:
            return None
        return max(self._parked_since + limit - time.monotonic(), 0.0)

    def _expire_parked(self) -> None:
        timeout = self._parked_timeout()
        if timeout is not None and timeout <= 0:
            log.debug("kept-open connection idle for %g s, closed", self.app.limits.read_timeout)
            conn, self._parked = self._parked, None
            self._poller.remove(conn.fileno())
            conn.close()

    def _take_parked(self) -> tuple[socket.socket, int] | None:
        """Our idle kept-open connection, out of our poll set, with the requests it carried."""
        conn, self._parked = self._parked, None
        if conn is None:
            return None
        self._poller.remove(conn.fileno())
        return conn, self._parked_served

    def _let_go_of_parked(self) -> None:
        """Hand our idle kept-open connection to the master (closed if the server stops)."""
        parked = self._take_parked()
        if parked is not None:
            self._put_down(*parked)

    def _put_down(self, conn: socket.socket, served: int) -> None:
        """An idle kept-open connection we are done with: the master's, unless all stops."""
        if self._server_stopping:
            conn.close()
        else:
            self._hand_over(conn, served)

    def _serve_backlog(self, parked: tuple[socket.socket, int] | None) -> None:
        """On stop or retirement: take what is queued, let go of the listener, serve it.

        Taking the queue first and closing our copy of the listening socket
        before serving matters on TCP: once every process has closed its
        copy, the kernel refuses new connections, so a web server balancing
        over several hosts moves on at once. Serving while still listening
        would let new connections queue behind a stopping server for as long
        as requests keep arriving. Kept-open connections the web server has
        already written on are served too; idle ones go to the master, or
        are closed when the whole server stops.
        """
        kept = []
        if parked is not None and _has_data(parked[0]):
            kept.append(parked)
        elif parked is not None:
            self._put_down(*parked)
        queued = take_backlog(self.listener, self._listener_kind)
        self.listener.close()
        family, type_, proto = self._listener_kind
        while self.queue is not None and (taken := take_from_queue(self.queue)) is not None:
            kept.append((socket.socket(family, type_, proto, fileno=taken[0]), taken[1]))
        for conn, addr in queued:
            if worker.admitted(self.peers, conn, addr):
                kept.append((conn, 0))
        for conn, served in kept:
            self.board.connected()
            served = serve_until_idle(self.app, conn, served)
            if served is not None:
                self._put_down(conn, served)


def _has_data(conn: socket.socket) -> bool:
    """True if the web server has sent something on ``conn`` (or closed it)."""
    try:
        conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # serving it reports the error
    return True


def _adopt_output_fds(message: ch.Message, allowed: set[int]) -> None:
    """``reopen``: the master's freshly opened log files take the fd numbers of the old."""
    for target, fd in zip(message.get("targets", ()), message.fds, strict=False):
        if target in allowed:
            os.dup2(fd, target, inheritable=target in (1, 2))
    close_fds(message.fds)

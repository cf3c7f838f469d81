"""What runs in a child: accept one connection at a time, serve it, report state.

The child keeps its state on its scoreboard (see scoreboard.py): whether it
holds a connection and which request it is running, so the master can grow
the pool, and name the request when it kills a child for --timeout. The
channel (see channel.py) carries what is rare: "ready", "stop", "reopen".

Idle children wait in epoll on the listener with EPOLLEXCLUSIVE, so a new
connection wakes one of them, not all (no thundering herd).

A ``retire`` message, or EOF on the channel (the master died), means this
child is no longer wanted: it finishes the request in hand and exits.
SIGTERM means the whole server stops: the child first serves the connections
already waiting in the listen backlog, so none that the kernel accepted is
dropped, then exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from safefcgi.fastcgi.protocol import FastCGIApplication, serve_connection
from safefcgi.ops.operability import request_path
from safefcgi.process import channel as ch
from safefcgi.process import signals, statusquery, titles, worker
from safefcgi.process.fds import close_fds, drain
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
                 board: Scoreboard | None = None, draining: bool = False):
        self.listener = listener
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
        self._stop_requested = True

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
        poller = Poller(exclusive=[listener_fd], shared=[channel_fd, wake_fd])
        self.board.idle()
        if not self._report(ch.IDLE):  # once: "ready"; the scoreboard says the rest
            return
        try:
            while True:
                ready = poller.wait()
                if wake_fd in ready:
                    drain(wake_fd)
                if channel_fd in ready and not self._read_channel():
                    log.debug("retired, or the master closed our channel: leaving")
                    self._stop_requested = True
                if self._stop_requested:
                    # Out of the listener's wake-ups first: a connection the kernel
                    # woke us for is then in the queue we take, never left behind
                    # with every sibling asleep.
                    poller.close()
                    self._serve_backlog()
                    return
                if listener_fd in ready and not self._accept_and_serve():
                    return
        finally:
            poller.close()

    def _should_stop(self) -> bool:
        """Stop asked for by SIGTERM, or by the master retiring us or closing our channel."""
        if not self._stop_requested and not self._read_channel():
            self._stop_requested = True
        return self._stop_requested

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

    def _accept_and_serve(self) -> bool:
        """Serve one connection if we win the race for it; False means exit now."""
        try:
            conn, addr = accept(self.listener, self._listener_kind)
        except (BlockingIOError, InterruptedError):
            return True  # a sibling took it
        except OSError as exc:
            pause_after_accept_error(exc)
            return True
        self._serve(conn, addr)
        titles.child_idle()
        self.board.idle()
        if not self._master_alive or self._retired:
            return False
        if self.max_requests and self.requests_served >= self.max_requests:
            log.debug("served %d requests, making room for a fresh child",
                      self.requests_served)
            return False
        return True

    def _serve(self, conn: socket.socket, addr: Any) -> None:
        if not worker.admitted(self.peers, conn, addr):
            return
        self.board.connected()
        # Accepted means served, master or not; a kept-open connection is let go
        # between requests once a stop is asked for.
        serve_connection(self.app, conn, addr, stop_requested=self._should_stop,
                         stop_fds=(self.channel, self._wake_fd))

    def _serve_backlog(self) -> None:
        """On stop: take every connection already queued, let go of the listener, serve them.

        Taking the queue first and closing our copy of the listening socket
        before serving matters on TCP: once every process has closed its
        copy, the kernel refuses new connections, so a web server balancing
        over several hosts moves on at once. Serving while still listening
        would let new connections queue behind a stopping server for as long
        as requests keep arriving.
        """
        queued = take_backlog(self.listener, self._listener_kind)
        self.listener.close()
        for conn, addr in queued:
            self._serve(conn, addr)


def _adopt_output_fds(message: ch.Message, allowed: set[int]) -> None:
    """``reopen``: the master's freshly opened log files take the fd numbers of the old."""
    for target, fd in zip(message.get("targets", ()), message.fds, strict=False):
        if target in allowed:
            os.dup2(fd, target, inheritable=target in (1, 2))
    close_fds(message.fds)

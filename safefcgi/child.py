"""What runs in a child: accept one connection at a time, serve it, report state.

The child talks to the master over its end of a socketpair: one byte when it
becomes busy, one when it is idle again. EOF on that channel means the master
wants it gone (or died): the child finishes the request in hand and exits.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
from typing import Any

from .protocol import FastCGIApplication, serve_connection

log = logging.getLogger("safefcgi.child")

MSG_IDLE = b"I"
MSG_BUSY = b"B"


class ChildWorker:
    """The accept loop of one prefork child."""

    def __init__(self, listener: socket.socket, app: FastCGIApplication,
                 channel: socket.socket, max_requests: int = 0):
        self.listener = listener
        self.app = app
        self.channel = channel
        self.max_requests = max_requests
        self.requests_served = 0
        self.pid = os.getpid()
        self._stop_requested = False

    def install_signal_handlers(self) -> int:
        """TERM: finish the request in hand, then exit. INT: left to the master.

        Returns the read end of the wake-up pipe the handlers write to.
        """
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGTERM, self._on_term)
        # Ctrl-C reaches the whole process group; the master coordinates the stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name in ("SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        return wake_read

    def _on_term(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def serve(self) -> None:
        """Serve until the master says stop, or max_requests is reached."""
        wake_fd = self.install_signal_handlers()
        self.listener.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "listener")
        selector.register(self.channel, selectors.EVENT_READ, "channel")
        selector.register(wake_fd, selectors.EVENT_READ, "wake")
        if not self._report(MSG_IDLE):
            return
        while not self._stop_requested:
            ready = {key.data for key, _ in selector.select()}
            if "wake" in ready:
                _drain(wake_fd)
            if "channel" in ready and not self.channel.recv(64):
                log.debug("master closed our channel, exiting")
                return
            if self._stop_requested:
                return
            if "listener" in ready and not self._accept_and_serve():
                return

    def _accept_and_serve(self) -> bool:
        """Serve one connection if we win the race for it; False means exit now."""
        try:
            conn, addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return True  # a sibling took it
        except OSError as exc:
            log.warning("accept failed: %s", exc)
            return True
        master_alive = self._report(MSG_BUSY)
        serve_connection(self.app, conn, addr)  # accepted means served, master or not
        self.requests_served += 1
        if not master_alive:
            return False
        if self.max_requests and self.requests_served >= self.max_requests:
            log.debug("served %d requests, making room for a fresh child",
                      self.requests_served)
            return False
        return self._report(MSG_IDLE)

    def _report(self, message: bytes) -> bool:
        try:
            self.channel.sendall(message)
            return True
        except OSError:
            return False  # the master is gone


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass

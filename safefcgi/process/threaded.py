"""Threaded mode: one process, a pool of threads, each accepting its own connections.

No thread hands a connection to another. Handing over (one thread accepts, a
pool thread serves) cost a lock, a condition variable and switches of the
GIL per request: for a small application, several times the CPU of serving
the request itself. Here each idle thread waits on the listener like a prefork
child (see polling.py), takes a connection and serves it; a connection no
thread is free for waits in the kernel's listen queue, never accepted and
then closed unserved.

The pool follows --minspare/--maxspare/--maxthreads: a thread that takes a
connection starts another one when fewer than minspare would be left idle
(up to maxthreads in all); a thread that finishes one leaves when more than
maxspare would be idle. At least one thread is kept idle while maxthreads
allows, even with --minspare 0: only an idle thread accepts, so with none a
connection would wait although the pool may grow. The main thread only
waits for TERM or INT (graceful stop) or QUIT (stop now); a second TERM or
INT during the graceful stop stops now too.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from safefcgi.fastcgi.protocol import FastCGIApplication, serve_connection
from safefcgi.ops.operability import NoPool, Operability
from safefcgi.process import signals, worker
from safefcgi.process.fds import close_fds, drain
from safefcgi.process.peers import PeerFilter
from safefcgi.process.polling import (
    Poller,
    accept,
    pause_after_accept_error,
    take_backlog,
)

log = logging.getLogger("safefcgi.threaded")

SIGNAL_POLL_SECONDS = 1.0  # the main thread also looks at the stop flag this often
STOP_POLL_SECONDS = 0.1  # while stopping, how often a second stop signal is looked for


class ThreadedFastCGIServer:
    """Serves a WSGI application from threads that accept their own connections."""

    def __init__(self, app: FastCGIApplication, *, min_spare: int, max_spare: int,
                 max_threads: int, peers: PeerFilter | None = None,
                 ops: Operability | None = None):
        self.app = app
        self.peers = peers
        self.ops = ops
        self.min_spare = max(min_spare, 1)  # someone must be waiting to accept
        self.max_spare = max_spare
        self.max_threads = max_threads
        # Guards the two counts below; notified when a thread leaves.
        self._counts = threading.Condition(threading.Lock())
        self._threads = 0  # worker threads started and not yet leaving
        self._busy = 0  # of which serving a connection
        # Held around each accept, and while the stop takes the backlog: once the
        # stop has it, no thread touches the listener again.
        self._accept_lock = threading.Lock()
        self._stopping = False  # set under _accept_lock, after the backlog is taken
        self._stop_signalled = False  # TERM or INT arrived
        self._stop_now = False  # QUIT, or a second TERM or INT: do not wait for requests
        self._queued: collections.deque[tuple[socket.socket, Any]] = collections.deque()
        self._listener: socket.socket | None = None
        self._listener_kind = (0, 0, 0)
        self._listener_fd = -1
        self._stop_read = self._stop_write = -1  # a pipe written once, on stop

    # -- the main thread ------------------------------------------------------------------

    def serve_forever(self, sock: socket.socket, graceful_timeout: float = 30.0,
                      stop_accepting: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT; requests in flight then get graceful_timeout.

        ``stop_accepting`` is called on stop once the queued connections are
        taken, so new ones are refused while those are served.
        """
        wake_read, wake_write = signals.wakeup_pipe()
        for signum in signals.STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        for signum in signals.take_held():  # a stop that came while we started
            if signum in signals.STOP_SIGNALS:
                self._on_stop(signum, None)
        self._stop_read, self._stop_write = os.pipe()
        self._listener_kind = worker.prepare_listener(sock)
        self._listener, self._listener_fd = sock, sock.fileno()
        worker.add_pages(self.app, self.ops, NoPool())
        try:
            for _ in range(min(self.min_spare, self.max_threads)):
                self._start_thread()
            self._wait_for_stop_signal(wake_read)
            self._stop(stop_accepting)
            self._wait_for_threads(graceful_timeout)
        finally:
            signal.set_wakeup_fd(-1)
            # Not the handlers from before: a TERM now, while the socket and the pid
            # file are being removed, must not kill us half way.
            signals.hold(escalate=False)
            close_fds((wake_read, wake_write))
            if not self._threads:  # threads still serving may yet look at the stop pipe
                close_fds((self._stop_read, self._stop_write))

    def _on_stop(self, signum: int, frame: Any) -> None:
        if self._stop_signalled or signum == signal.SIGQUIT:
            self._stop_now = True
        self._stop_signalled = True

    def _wait_for_stop_signal(self, wake_read: int) -> None:
        while not self._stop_signalled:
            select.select([wake_read], [], [], SIGNAL_POLL_SECONDS)
            drain(wake_read)

    def _stop(self, stop_accepting: Callable[[], None] | None) -> None:
        """Take the connections already queued, stop accepting, wake every idle thread."""
        with self._accept_lock:
            self._queued.extend(take_backlog(self._listener, self._listener_kind))
            self._stopping = True
            if stop_accepting is not None:  # may close the listener: no thread is using it
                stop_accepting()
        if self._queued:
            log.info("stopping: serving %d connections that were already queued",
                     len(self._queued))
        os.write(self._stop_write, b"\0")  # never read: stays readable for every thread

    def _wait_for_threads(self, timeout: float) -> None:
        """Wait until every thread has finished its request and the queued connections."""
        deadline = time.monotonic() + timeout
        with self._counts:
            while not self._stop_now and (left := deadline - time.monotonic()) > 0:
                if self._counts.wait_for(lambda: self._threads == 0,
                                         min(left, STOP_POLL_SECONDS)):
                    return
            running = self._busy
        unserved = len(self._queued)
        why = "a second stop signal" if self._stop_now else f"{timeout:g} s"
        log.warning("%d requests still running after %s; stopping anyway%s", running,
                    why, f" ({unserved} queued connections not served)" if unserved else "")

    # -- the pool -----------------------------------------------------------------------

    def _start_thread(self) -> None:
        """Start one more worker thread (the caller checked the limits)."""
        with self._counts:
            self._threads += 1
        self._launch()

    def _launch(self) -> None:
        """Start a worker thread already counted in _threads."""
        thread = threading.Thread(target=self._work, name="fcgi-worker", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # the system is out of threads: serve with fewer
            log.error("could not start a worker thread: %s", exc)
            self._leave()

    def _became_busy(self) -> None:
        """Count this thread busy; start another if too few would be left idle."""
        with self._counts:
            self._busy += 1
            grow = (not self._stopping and self._threads - self._busy < self.min_spare
                    and self._threads < self.max_threads)
            if grow:
                self._threads += 1
        if grow:
            self._launch()

    def _became_idle(self) -> bool:
        """Count this thread idle; True if it was one too many and is no longer counted."""
        with self._counts:
            self._busy -= 1
            if self._stopping or self._threads - self._busy <= self.max_spare:
                return False
            self._threads -= 1
            return True

    def _leave(self) -> None:
        with self._counts:
            self._threads -= 1
            if not self._threads:
                self._counts.notify_all()

    # -- a worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        """Accept and serve until this thread is a spare too many or the server stops."""
        counted = True
        try:
            poller = self._watch_listener()
            if poller is not None:
                try:
                    counted = self._accept_and_serve(poller)
                finally:
                    poller.close()
            if counted:
                self._serve_queued()
        except Exception:  # noqa: BLE001 - the pool must not lose count of its threads
            log.exception("internal error in a worker thread")
        finally:
            if counted:
                self._leave()

    def _watch_listener(self) -> Poller | None:
        """This thread's wait on the listener and the stop pipe; None if already stopping.

        Under the accept lock, so the listener is not closed by the stop meanwhile.
        """
        with self._accept_lock:
            if self._stopping:
                return None
            return Poller(exclusive=[self._listener_fd], shared=[self._stop_read])

    def _accept_and_serve(self, poller: Poller) -> bool:
        """Serve connections until stopping (True) or retired as a spare (False)."""
        while not self._stopping:
            if self._listener_fd not in poller.wait():
                continue  # the stop pipe: the loop condition says so
            accepted = self._accept()
            if accepted is None:
                continue
            self._became_busy()
            self._serve(*accepted)
            if self._became_idle():
                return False
        return True

    def _accept(self) -> tuple[socket.socket, Any] | None:
        """A connection, or None if a sibling was faster or the server is stopping."""
        with self._accept_lock:
            if self._stopping:
                return None
            try:
                return accept(self._listener, self._listener_kind)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                failure = exc
        pause_after_accept_error(failure)  # not holding the lock: the stop may need it
        return None

    def _serve_queued(self) -> None:
        """On stop: serve the connections the stop took from the listen queue."""
        while True:
            try:
                conn, addr = self._queued.popleft()
            except IndexError:
                return
            with self._counts:
                self._busy += 1
            self._serve(conn, addr)
            with self._counts:
                self._busy -= 1

    def _serve(self, conn: socket.socket, addr: Any) -> None:
        if not worker.admitted(self.peers, conn, addr):
            return
        # A kept-open connection is let go between requests once the server stops.
        serve_connection(self.app, conn, addr, stop_requested=self._stop_requested,
                         stop_fds=(self._stop_read,))

    def _stop_requested(self) -> bool:
        return self._stopping

"""How idle workers share one listener: wait for a connection, race for it, take the backlog.

Prefork children and the threaded server's threads wait the same way: each
in its own epoll set, with the listener registered EPOLLEXCLUSIVE, so a new
connection wakes one idle worker instead of all of them. Accepting is
non-blocking, because a sibling may still win the race.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any

log = logging.getLogger("safefcgi.polling")

DRAIN_LIMIT = 1000  # at most this many backlog connections are served on stop
ACCEPT_ERROR_PAUSE = 0.5  # seconds between retries of an accept() that failed

ListenerKind = tuple[int, int, int]  # family, type, proto as plain ints


class Poller:
    """Waits for any of a few fds; ``exclusive`` ones wake only one waiting worker.

    EPOLLEXCLUSIVE (Linux 4.5) on the shared listener: one connection, one
    worker woken. Elsewhere, poll() wakes every idle worker and all but one
    find nothing to accept, which is still correct.
    """

    def __init__(self, exclusive: list[int], shared: list[int]):
        self._epoll = None
        if hasattr(select, "epoll") and hasattr(select, "EPOLLEXCLUSIVE"):
            self._epoll = select.epoll()
            for fd in exclusive:
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            for fd in shared:
                self._epoll.register(fd, select.EPOLLIN)
        else:
            self._poll = select.poll()
            for fd in exclusive + shared:
                self._poll.register(fd, select.POLLIN)

    def add(self, fd: int) -> None:
        """Watch one more fd (a kept-open connection this worker holds while idle)."""
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            self._poll.register(fd, select.POLLIN)

    def remove(self, fd: int) -> None:
        """Stop watching ``fd``; before it is closed or passed on (epoll keys on the file)."""
        if self._epoll is not None:
            self._epoll.unregister(fd)
        else:
            self._poll.unregister(fd)

    def wait(self, timeout: float | None = None) -> set[int]:
        """The fds that are ready (readable, closed or in error); empty after ``timeout`` s."""
        if self._epoll is not None:
            return {fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)}
        return {fd for fd, _ in self._poll.poll(None if timeout is None else timeout * 1000)}

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


def listener_kind(listener: socket.socket) -> ListenerKind:
    """The listener's family, type and proto as plain ints, read once.

    The socket properties build enums on every access.
    """
    return int(listener.family), int(listener.type), listener.proto


def accept(listener: socket.socket, kind: ListenerKind) -> tuple[socket.socket, Any]:
    """socket.accept() without its per-call cost of turning family and type into enums.

    The same steps as the standard library's accept(): the C-level
    ``_accept`` and a socket object of the listener's (cached) kind. Raises
    BlockingIOError when a sibling took the connection first.
    """
    fd, addr = listener._accept()
    family, type_, proto = kind
    return socket.socket(family, type_, proto, fileno=fd), addr


def pause_after_accept_error(exc: OSError) -> None:
    """Log a failed accept() and wait a little before the next try.

    What makes accept() fail here (EMFILE: out of file descriptors, ENFILE,
    ENOBUFS) lasts, and epoll keeps reporting the listener ready: retrying at
    once would spin, writing a warning per try. The connection waits in the
    listen queue meanwhile.
    """
    log.warning("accept failed: %s; retrying in %g s", exc, ACCEPT_ERROR_PAUSE)
    time.sleep(ACCEPT_ERROR_PAUSE)


def take_backlog(listener: socket.socket, kind: ListenerKind,
                 limit: int = DRAIN_LIMIT) -> list[tuple[socket.socket, Any]]:
    """Accept every connection already queued on a non-blocking listener (at most ``limit``).

    On stop: the kernel accepted these for us, so they are served, not reset.
    """
    queued = []
    for _ in range(limit):
        try:
            queued.append(accept(listener, kind))
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            log.debug("accept while stopping failed: %s", exc)
            break
    return queued

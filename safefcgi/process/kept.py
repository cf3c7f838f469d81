"""Idle kept-open connections, watched by the master and passed to whichever child is free.

With nginx's ``fastcgi_keep_conn`` (or Apache's ``enablereuse=on``) the web
server keeps connections open between requests, as many as it has had
concurrent requests. A prefork child that waited on its connection for the
next request would be pinned to it: with more open connections than
children, a request arriving on a connection no child watches would wait,
and one arriving behind a slow view would wait for that view although
another child is idle.

So no child waits on a connection while it works on another. A child that
finishes a request keeps the connection in its own poll set only while it
is idle itself (the web server often sends its next request on the same
connection: that costs nothing). Before it serves anything else, it hands
the idle connection to the master over its channel (SCM_RIGHTS). The master
watches every handed-back connection; when the web server writes on one,
the master puts it in the ready queue, a SEQPACKET socket every child
watches like the listener (EPOLLEXCLUSIVE: one idle child wakes and takes
it). A request on any open connection is thus served as soon as any child
is free, in the order they arrived.

Nothing here closes a connection the web server may be writing to, except
--read-timeout: an idle connection is closed after that long, so the web
server's own idle limit must be shorter (nginx ``keepalive_timeout`` in the
upstream block). One that the web server closed is dropped at once.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections import deque
from dataclasses import dataclass

from safefcgi.process.fds import close_fds

log = logging.getLogger("safefcgi.kept")

QUEUE_MESSAGE_SIZE = 32  # a queue message: one fd, and how many requests it carried


@dataclass(eq=False)
class IdleConnection:
    """One kept-open connection the master holds between two requests."""

    fd: int
    since: float
    served: int = 0  # requests it carried so far (safefcgi.connection_requests)


def ready_queue() -> tuple[socket.socket, socket.socket]:
    """(master's sending end, children's receiving end) of the ready queue."""
    send_end, receive_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    send_end.setblocking(False)
    receive_end.setblocking(False)
    return send_end, receive_end


def take_from_queue(queue: socket.socket) -> tuple[int, int] | None:
    """(fd, requests it carried) from the ready queue, or None if a sibling took it first."""
    try:
        data, fds, _, _ = socket.recv_fds(queue, QUEUE_MESSAGE_SIZE, 1)
    except (BlockingIOError, InterruptedError):
        return None
    if not fds:
        return None
    try:
        return fds[0], int(data)
    except ValueError:
        return fds[0], 0


class KeptConnections:
    """The master's side: idle connections children handed back, and the ready queue.

    The idle connections sit in an epoll set of their own, whose fd the
    master's loop watches: one wake-up hands on every connection written on
    since, without the selectors module's bookkeeping per connection.
    """

    def __init__(self, read_timeout: float,
                 queue: tuple[socket.socket, socket.socket] | None = None):
        self.read_timeout = read_timeout
        self.send_end, self.receive_end = queue or ready_queue()
        self._epoll = select.epoll()
        # In the order they became idle (dicts keep it): the first expires first.
        self._idle: dict[int, IdleConnection] = {}
        self._unsent: deque[IdleConnection] = deque()  # readable, waiting for queue room
        self.stopping = False

    def __len__(self) -> int:
        return len(self._idle)

    def fileno(self) -> int:
        """Readable when the web server wrote on (or closed) an idle connection."""
        return self._epoll.fileno()

    def adopt(self, fd: int, served: int = 0) -> None:
        """Watch a connection a child handed back (the fd is ours now)."""
        if self.stopping:
            os.close(fd)
            return
        self._idle[fd] = IdleConnection(fd, time.monotonic(), served)
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)

    def hand_on(self) -> None:
        """Queue every idle connection the web server wrote on; drop those it closed."""
        for fd, events in self._epoll.poll(0):
            entry = self._idle.pop(fd, None)
            self._epoll.unregister(fd)
            if entry is None:
                continue
            if events & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR) \
                    and _closed_by_peer(fd):
                os.close(fd)
                continue
            self._unsent.append(entry)
        self.flush()

    def flush(self) -> None:
        """Put readable connections in the ready queue, oldest first, while it has room."""
        while self._unsent:
            entry = self._unsent[0]
            try:
                socket.send_fds(self.send_end, [b"%d" % entry.served], [entry.fd])
            except (BlockingIOError, InterruptedError):
                return  # full: the next tick tries again
            except OSError as exc:
                log.error("cannot queue a kept-open connection: %s", exc)
                return
            self._unsent.popleft()
            os.close(entry.fd)

    def expire(self, now: float) -> None:
        """Close connections idle for longer than --read-timeout."""
        if self.read_timeout <= 0:
            return
        limit = now - self.read_timeout
        while self._idle:
            entry = next(iter(self._idle.values()))
            if entry.since > limit:
                return
            log.debug("kept-open connection idle for %g s, closed", self.read_timeout)
            del self._idle[entry.fd]
            self._epoll.unregister(entry.fd)
            os.close(entry.fd)

    def next_expiry(self) -> float | None:
        if self.read_timeout <= 0 or not self._idle:
            return None
        return next(iter(self._idle.values())).since + self.read_timeout

    def stop(self) -> None:
        """On a graceful stop: queue what the web server has already written on, close the rest.

        Closed now rather than when the server exits: the web server sees
        the close while the connection is idle, drops it, and sends its next
        requests elsewhere (to another host, or a refused connection it can
        retry) instead of writing them on a connection nobody will serve.
        Connections children hand back from now on are closed too.
        """
        self.hand_on()
        self.stopping = True
        for fd in list(self._idle):
            self._epoll.unregister(fd)
            os.close(fd)
        self._idle.clear()

    def held(self) -> list[tuple[int, int]]:
        """(fd, requests carried) of every connection a re-executed master must inherit."""
        return [(e.fd, e.served) for e in (*self._idle.values(), *self._unsent)]

    def close(self) -> None:
        """Close what is left (the server stops): idle connections and the queue."""
        close_fds([fd for fd, _ in self.held()])
        self._idle.clear()
        self._unsent.clear()
        self._epoll.close()
        self.send_end.close()
        self.receive_end.close()

    def close_in_child(self) -> None:
        """In a new child: drop the copies fork gave it; only the queue's receiving end stays.

        A child holding a copy of an idle connection would keep it open after
        the master closes it, and the web server would never see it end.
        """
        close_fds([fd for fd, _ in self.held()])
        self._idle.clear()
        self._unsent.clear()
        self._epoll.close()
        self.send_end.close()


def _peek(fd: int) -> bytes | None:
    """One byte of what waits on ``fd`` (b"": closed by the peer), None if nothing."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""  # reset: as good as closed
    finally:
        sock.detach()


def _closed_by_peer(fd: int) -> bool:
    return _peek(fd) == b""



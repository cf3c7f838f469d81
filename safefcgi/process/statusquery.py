"""The status page's round trip: a child asks the master for the pool's numbers.

Only the master sees the whole pool, but only a child can answer a request
(see ops/status.py for why asking beats a snapshot in shared memory). The
child serving the status path sends ``status`` over its channel and waits;
the master, once it has read every channel, answers ``status`` with the
numbers as JSON in an attached memfd, so a page of hundreds of children
needs no bigger channel messages. Both ends live here.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from safefcgi.process import channel as ch
from safefcgi.process.fds import close_fds

log = logging.getLogger("safefcgi.statusquery")


# -- the child's side ------------------------------------------------------------------


def ask(channel: socket.socket, full: bool, timeout: float,
        on_other: Callable[[ch.Message], None]) -> dict[str, Any] | None:
    """The master's numbers, or None if no answer came within ``timeout``.

    Other messages arriving meanwhile go to ``on_other``. Raises
    ch.ChannelClosed when the master is gone.
    """
    if not ch.send(channel, ch.STATUS, full=full):
        raise ch.ChannelClosed
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([channel], [], [], remaining)
        if not readable:
            break
        try:
            message = ch.receive(channel, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            continue
        if message is not None and message.kind == ch.STATUS:
            return _read_answer(message)
        if message is not None:
            on_other(message)
    return None


def _read_answer(message: ch.Message) -> dict[str, Any] | None:
    if not message.fds:
        return None
    try:
        return json.loads(_read_whole(message.fds[0]))
    except ValueError:
        log.warning("the master's status answer is not JSON")
        return None
    finally:
        close_fds(message.fds)


def _read_whole(fd: int) -> bytes:
    """All of a file the master wrote (a memfd), from its start."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


# -- the master's side -----------------------------------------------------------------


def wants_full(message: ch.Message) -> bool:
    """True if the question asks for one row per child (the ``?full`` page)."""
    return bool(message.get("full"))


def answer(channel: socket.socket, numbers: dict[str, Any]) -> None:
    """Send ``numbers`` as JSON in an attached memfd; OSError if one cannot be made."""
    data = json.dumps(numbers).encode()
    fd = os.memfd_create("safefcgi-status", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        ch.send(channel, ch.STATUS, fds=(fd,))
    finally:
        os.close(fd)

"""The master ↔ child channel: small framed messages over a SEQPACKET socketpair.

SOCK_SEQPACKET keeps message boundaries, so one send() is one message and a
reader never sees half of one. A message is a JSON object with a ``kind``;
readers ignore kinds and fields they do not know, so later additions (per-child
counters for a status page, say) need no change of format. EOF means the
other side is gone, or (master → child) that the child is retired.

Child → master: ``idle``, once, when the child is ready to serve; ``kept``,
with the fd of a kept-open connection it leaves idle (see kept.py). What it
does after that (busy, which request, how many served) is on its scoreboard
(see scoreboard.py), not in messages. Master → child: ``retire`` (finish the
request in hand, then exit: the pool shrinks or a reload replaces the child;
the channel stays open both ways, so it can still ask for the status page),
``reopen`` (with the new fds of the log files attached). A stop of the whole
server is SIGTERM, not a message: it also reaches a child still starting.

For the status page (see status.py): a child sends ``status`` (``full``: with
one row per child) and the master answers ``status`` with a memfd attached
that holds the page's numbers as JSON. Master → child ``drain``: the server
is about to stop, ping must say so (see --ping-drain).
"""

from __future__ import annotations

import array
import json
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from safefcgi.process.fds import close_fds

log = logging.getLogger("safefcgi.channel")

MAX_MESSAGE = 4096
MAX_FDS = 4
FD_SIZE = array.array("i").itemsize

IDLE, REOPEN, KEPT = "idle", "reopen", "kept"
STATUS, DRAIN, RETIRE = "status", "drain", "retire"


@dataclass(frozen=True)
class Message:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    fds: tuple[int, ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(master end, child end); neither is inherited across exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(kind: str, **fields: Any) -> bytes:
    data = json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"{kind} message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes, fds: tuple[int, ...] = ()) -> Message | None:
    """A message, or None for bytes that are not one (logged; the channel goes on)."""
    try:
        obj = json.loads(data)
        kind = obj.pop("kind")
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("ignoring a malformed channel message: %r", data[:80])
        return None
    if not isinstance(kind, str):
        return None
    return Message(kind, obj, fds)


def send(sock: socket.socket, kind: str, fds: tuple[int, ...] = (), **fields: Any) -> bool:
    """Send one message; False when the other end is gone."""
    try:
        if fds:
            socket.send_fds(sock, [encode(kind, **fields)], list(fds))
        else:
            sock.send(encode(kind, **fields))
        return True
    except (BrokenPipeError, ConnectionResetError, BlockingIOError):
        return False
    except OSError as exc:
        log.debug("channel send of %s failed: %s", kind, exc)
        return False


class ChannelClosed(Exception):
    """The other end closed the channel (or died)."""


def receive(sock: socket.socket, flags: int = 0) -> Message | None:
    """One message; None if it was malformed. BlockingIOError when nothing is waiting."""
    try:
        # Not socket.recv_fds(): before Python 3.12 it drops its flags argument.
        data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_LEN(MAX_FDS * FD_SIZE),
                                             flags)
    except (ConnectionResetError, BrokenPipeError):
        data, ancillary = b"", []
    fds = _passed_fds(ancillary)
    if not data:
        close_fds(fds)
        raise ChannelClosed
    return decode(data, tuple(fds))


def _passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % FD_SIZE])
    return list(fds)


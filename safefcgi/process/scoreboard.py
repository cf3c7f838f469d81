"""What each child is doing, in a page of memory it shares with the master.

A message to the master for every request costs a system call and a JSON
encoding in the child, and a wake-up, a read and a decoding in the master:
more than the rest of the server's work for a small request. So the child
writes its state (idle, holding a connection, serving a request since when,
how many served) into a small shared mapping the master created for it
before the fork, and the master reads it on its own schedule. Writing is a
few memory stores; the master wakes a few times a second, whatever the load.

A sequence number makes reads consistent without locks: the child makes it
odd while it writes and even when done, and the master retries a read that
saw it odd or changing (a seqlock; there is one writer per board).
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

IDLE, CONNECTED, SERVING = 0, 1, 2  # no connection / a connection / inside a request
LEAVING = 3  # done: exits without accepting again (never to be counted as idle)
# seq, state, served, request start (monotonic seconds), length of the request line
_HEADER = struct.Struct("=QBxxxxxxxQdH")
_SEQ = struct.Struct("=Q")
TARGET_LIMIT = 1024  # bytes of "METHOD URI" kept (it is only for log lines)
_WITH_TARGET = struct.Struct(_HEADER.format + f"{TARGET_LIMIT}s")
SIZE = mmap.PAGESIZE
READ_TRIES = 5

assert _HEADER.size + TARGET_LIMIT <= SIZE


@dataclass(frozen=True)
class ChildState:
    """One consistent reading of a board."""

    state: int
    served: int
    request_since: float
    request: tuple[str, str] | None  # (method, URI) while SERVING


class Scoreboard:
    """The shared state of one child: the child writes, the master reads."""

    def __init__(self) -> None:
        # Anonymous and shared: after fork() parent and child see the same page.
        self._map = mmap.mmap(-1, SIZE, flags=mmap.MAP_SHARED)
        self._seq = 0
        self._served = 0

    # -- the child's side ----------------------------------------------------------------

    def _write(self, state: int) -> None:
        self._seq += 1  # odd: being written
        _HEADER.pack_into(self._map, 0, self._seq, state, self._served, 0.0, 0)
        self._seq += 1  # even: consistent
        _SEQ.pack_into(self._map, 0, self._seq)

    def connected(self) -> None:
        self._write(CONNECTED)

    def request_started(self, method: str, uri: str) -> None:
        # environ values are bytes decoded as latin-1 (PEP 3333): back to the same bytes.
        target = (method + " " + uri).encode("latin-1", "replace")[:TARGET_LIMIT]
        self._seq += 1
        _WITH_TARGET.pack_into(self._map, 0, self._seq, SERVING, self._served,
                               time.monotonic(), len(target), target)
        self._seq += 1
        _SEQ.pack_into(self._map, 0, self._seq)

    def request_finished(self) -> None:
        self._served += 1
        self._write(CONNECTED)

    def idle(self) -> None:
        self._write(IDLE)

    def leaving(self) -> None:
        self._write(LEAVING)

    @property
    def served(self) -> int:
        return self._served

    # -- the master's side ---------------------------------------------------------------

    def read(self) -> ChildState | None:
        """The child's state, or None if it kept changing while we read."""
        for _ in range(READ_TRIES):
            seq, state, served, since, length = _HEADER.unpack_from(self._map, 0)
            target = bytes(self._map[_HEADER.size:_HEADER.size + min(length, TARGET_LIMIT)]) \
                if state == SERVING else b""
            if seq % 2 == 0 and _SEQ.unpack_from(self._map, 0)[0] == seq:
                request = None
                if state == SERVING:
                    method, _, uri = target.decode("latin-1").partition(" ")
                    request = (method, uri)
                return ChildState(state, served, since, request)
        return None

    def close(self) -> None:
        self._map.close()

"""--status-listen: the status page answered by the master, on a socket of its own.

On the main socket a child answers the status page, so when every child is
busy the page waits in the listen queue, exactly when an operator needs it.
The master never serves the application, so it can answer at once: it
accepts on a second socket (a unix path or a loopback TCP port) and speaks
FastCGI there too, so a web server location and ``safefcgi status`` work as
they do on the main socket.

The master must never wait on a client: every socket here is non-blocking,
driven by the master's selector. At most MAX_CONNECTIONS are open at once
(the oldest is dropped for a new one), and when a client connects, those
silent for more than CONNECTION_SECONDS since their last answer are dropped.
No threads: a thread in the master would be copied, locks and all, into
every child it forks.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from safefcgi.fastcgi.records import (
    KEEP_CONN,
    NULL_REQUEST_ID,
    ProtocolError,
    RecordReader,
    RecordType,
    decode_pairs,
    encode_pairs,
    encode_record,
    encode_stream,
    parse_begin_request,
    stream_end_and_end_request,
    unknown_type,
)
from safefcgi.ops.status import RENDERERS, STATUS_HEADER, StatusQuery

log = logging.getLogger("safefcgi.status")

CONNECTION_SECONDS = 5.0
MAX_CONNECTIONS = 16
MAX_REQUEST_BYTES = 64 * 1024  # params of a status request: a few hundred bytes
RECV_SIZE = 16 * 1024

PageSource = Callable[[bool], dict[str, Any]]  # full -> the snapshot


def status_response(page: PageSource, params: dict[str, str]) -> bytes:
    """The CGI response (headers and body) for one request to the status socket."""
    wanted = StatusQuery.parse(params.get("QUERY_STRING", ""), params.get("HTTP_ACCEPT", ""))
    render, content_type = RENDERERS[wanted.format]
    body = render(page(wanted.full)).encode("utf-8")
    head = (f"Status: 200 OK\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            f"{STATUS_HEADER}: status\r\n\r\n")
    return head.encode("latin-1") + body


class StatusListener:
    """The listening socket; registered in the master's selector."""

    def __init__(self, sock: socket.socket, page: PageSource):
        self.sock = sock
        self.page = page
        self.connections: list[StatusConnection] = []
        self.selector: selectors.BaseSelector | None = None

    def register(self, selector: selectors.BaseSelector) -> None:
        self.sock.setblocking(False)
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self)

    def on_ready(self, events: int) -> None:
        """Accept whatever is waiting (a few at most), dropping stale connections first."""
        self.expire(time.monotonic())
        for _ in range(MAX_CONNECTIONS):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next event retries
                log.warning("status socket: accept failed: %s", exc)
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                self.connections[0].close()
            self._add(conn)

    def _add(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        connection = StatusConnection(conn, self)
        self.connections.append(connection)
        self.selector.register(conn, selectors.EVENT_READ, connection)

    def expire(self, now: float) -> None:
        for connection in [c for c in self.connections if c.deadline < now]:
            connection.close()

    def forget(self, connection: StatusConnection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
        if self.selector is not None:
            try:
                self.selector.unregister(connection.sock)
            except (KeyError, ValueError):
                pass

    def close(self, after_fork: bool = False) -> None:
        """Close everything: in the master on exit, and in each child right after fork.

        A child must not unregister anything: its selector's epoll instance is
        the master's own (fork shares it), so it only closes its copies.
        """
        if after_fork:
            self.selector = None
        for connection in list(self.connections):
            connection.close()
        if self.selector is not None:
            try:
                self.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()


class StatusConnection:
    """One client of the status socket: requests in, status pages out, never blocking."""

    def __init__(self, sock: socket.socket, listener: StatusListener):
        self.sock = sock
        self.listener = listener
        self.deadline = time.monotonic() + CONNECTION_SECONDS
        self.reader = RecordReader()
        self.received = 0
        self.request_id: int | None = None
        self.keep_conn = False
        self.params = bytearray()
        self.outgoing = b""
        self.answered = False  # a whole response was queued
        self.closed = False

    def on_ready(self, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                self._flush()
            if events & selectors.EVENT_READ and not self.closed:
                self._read()
        except ProtocolError as exc:
            log.info("status socket: malformed FastCGI input, connection closed: %s", exc)
            self.close()
        except OSError:
            self.close()
        except Exception:  # noqa: BLE001 - this runs in the master's loop, which must go on
            log.exception("status socket: internal error; connection closed")
            self.close()

    def _read(self) -> None:
        data = self.sock.recv(RECV_SIZE)
        if not data:
            self.close()
            return
        self.received += len(data)
        if self.received > MAX_REQUEST_BYTES:
            raise ProtocolError("more than a status request needs")
        self.reader.feed(data)
        for record in self.reader.records():
            self._handle(record)
            if self.closed:
                return

    def _handle(self, record: Any) -> None:
        if record.request_id == NULL_REQUEST_ID:
            self._management(record)
        elif record.type == RecordType.BEGIN_REQUEST and self.request_id is None:
            _, flags = parse_begin_request(record.content)
            self.request_id, self.keep_conn = record.request_id, bool(flags & KEEP_CONN)
            self.params.clear()
        elif record.request_id != self.request_id:
            return  # not the request in hand: ignored, as the specification says
        elif record.type == RecordType.ABORT_REQUEST:
            self._finish(b"")
        elif record.type == RecordType.PARAMS and record.content:
            self.params += record.content
        elif record.type == RecordType.STDIN and not record.content:
            self._finish(status_response(self.listener.page, decode_pairs(bytes(self.params))))

    def _management(self, record: Any) -> None:
        if record.type == RecordType.GET_VALUES:
            wanted = decode_pairs(record.content)
            known = {"FCGI_MAX_CONNS": str(MAX_CONNECTIONS), "FCGI_MAX_REQS": "1",
                     "FCGI_MPXS_CONNS": "0"}
            self._send(encode_record(RecordType.GET_VALUES_RESULT, NULL_REQUEST_ID,
                                     encode_pairs((n, known[n]) for n in wanted if n in known)))
        else:
            self._send(unknown_type(record.type))

    def _finish(self, response: bytes) -> None:
        request_id, self.request_id = self.request_id, None
        self.answered = True
        self.received = 0  # the size limit is per request: a kept connection goes on
        self.deadline = time.monotonic() + CONNECTION_SECONDS
        pieces = encode_stream(RecordType.STDOUT, request_id, response)
        self._send(b"".join(bytes(p) for p in pieces)
                   + stream_end_and_end_request(RecordType.STDOUT, request_id))

    def _send(self, data: bytes) -> None:
        self.outgoing += data
        self._flush()

    def _flush(self) -> None:
        if self.outgoing:
            try:
                sent = self.sock.send(self.outgoing)
            except BlockingIOError:
                sent = 0
            self.outgoing = self.outgoing[sent:]
        if self.outgoing:
            self.listener.selector.modify(self.sock, selectors.EVENT_WRITE, self)
        elif self.answered and self.request_id is None and not self.keep_conn:
            self.close()  # answered, and the web server did not ask to keep it
        else:
            self.listener.selector.modify(self.sock, selectors.EVENT_READ, self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.listener.forget(self)
            self.sock.close()

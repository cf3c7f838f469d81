"""FastCGI spoken record by record, as a web server would, to a server under test."""

from __future__ import annotations

import select
import socket
import time

from safefcgi.fastcgi import client
from safefcgi.fastcgi.records import Record, RecordReader


def begin(request_id: int = 1, keep_conn: bool = False, role: int = client.RESPONDER) -> bytes:
    return client.record(client.BEGIN_REQUEST, request_id,
                         client.begin_request_body(role, 1 if keep_conn else 0))


def whole_request(path: str = "/pid", request_id: int = 1, keep_conn: bool = False,
                  body: bytes = b"", method: str = "GET") -> bytes:
    """BEGIN_REQUEST, the params and the body of one request, each stream ended."""
    params = client.cgi_params(path, method, content_length=len(body))
    return (begin(request_id, keep_conn)
            + client.stream(client.PARAMS, request_id, client.encode_pairs(params))
            + client.stream(client.STDIN, request_id, body))


def kinds(records: list[Record]) -> list[int]:
    return [record.type for record in records]


def send_request(address, path: str) -> socket.socket:
    """Connect and send a whole request, leaving the response unread."""
    sock = client.connect(address, timeout=20)
    sock.sendall(whole_request(path))
    return sock


def read_response(sock: socket.socket) -> client.Response:
    """The response to a request sent with ``send_request``; closes the socket."""
    with sock:
        return client.parse_response(client.read_records(sock))


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[list[Record], bool]:
    """Every record the server sends until it closes; (records, closed within timeout)."""
    reader = RecordReader()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return list(reader.records()), False
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            continue
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return list(reader.records()), True
        reader.feed(data)

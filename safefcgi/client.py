"""A small FastCGI client: one request, one response. For smoke tests and our tests."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

FCGI_VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = 1
HEADER = struct.Struct("!BBHHBx")
MAX_CONTENT = 65535


@dataclass
class Response:
    """What came back: parsed CGI headers and body, plus the FastCGI stderr stream."""

    status: int
    headers: dict[str, str]
    body: bytes
    stderr: bytes = b""
    app_status: int = 0
    records: list[tuple[int, bytes]] = field(default_factory=list)


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """Encode one record, padded to a multiple of 8 bytes."""
    padding = -len(content) & 7
    return HEADER.pack(FCGI_VERSION, kind, request_id, len(content), padding) + content \
        + b"\0" * padding


def encode_pairs(pairs: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in pairs.items():
        for item in (name.encode("latin-1"), value.encode("latin-1")):
            out += bytes([len(item)]) if len(item) < 128 else struct.pack("!L", len(item)
                                                                          | 0x80000000)
        out += name.encode("latin-1") + value.encode("latin-1")
    return bytes(out)


def stream(kind: int, request_id: int, data: bytes) -> bytes:
    """A whole stream: its data in records of at most 65535 bytes, then the empty one."""
    chunks = [data[i:i + MAX_CONTENT] for i in range(0, len(data), MAX_CONTENT)]
    return b"".join(record(kind, request_id, chunk) for chunk in chunks) + record(kind,
                                                                                  request_id)


def connect(address: str | tuple[str, int], timeout: float = 30.0) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def read_records(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Read records until END_REQUEST or EOF."""
    buffer = b""
    records = []
    while True:
        while len(buffer) >= HEADER.size:
            _, kind, _, length, padding = HEADER.unpack_from(buffer)
            total = HEADER.size + length + padding
            if len(buffer) < total:
                break
            records.append((kind, buffer[HEADER.size:HEADER.size + length]))
            buffer = buffer[total:]
            if kind in (END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE):
                return records
        data = sock.recv(65536)
        if not data:
            return records
        buffer += data


def request(address: str | tuple[str, int], path: str = "/", method: str = "GET",
            body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 30.0) -> Response:
    """Send one request the way a web server would, and parse the response."""
    path_only, _, query = path.partition("?")
    params = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path_only,
        "QUERY_STRING": query, "REQUEST_URI": path, "SERVER_NAME": "localhost",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        params[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    message = (record(BEGIN_REQUEST, 1, struct.pack("!HB5x", RESPONDER, 0))
               + stream(PARAMS, 1, encode_pairs(params)) + stream(STDIN, 1, body))
    with connect(address, timeout) as sock:
        sock.sendall(message)
        records = read_records(sock)
    return parse_response(records)


def parse_response(records: list[tuple[int, bytes]]) -> Response:
    stdout = b"".join(content for kind, content in records if kind == STDOUT)
    stderr = b"".join(content for kind, content in records if kind == STDERR)
    ends = [content for kind, content in records if kind == END_REQUEST]
    if not ends:
        raise ConnectionError("the server closed the connection without END_REQUEST")
    app_status = struct.unpack("!L", ends[0][:4])[0]
    head, _, body = stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n"):
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    status = int(headers.pop("status", "200").split()[0])
    return Response(status, headers, body, stderr, app_status, records)

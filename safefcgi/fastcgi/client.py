"""A small FastCGI client: what ``safefcgi request`` and the tests use to talk to a server.

It sends what a web server would (CGI params, the body as STDIN) and reads the
response while still sending, so a server that answers before it has read
the whole body cannot deadlock it. A ``Connection`` may carry several requests
(FCGI_KEEP_CONN), as nginx's ``fastcgi_keep_conn on`` does.
"""

from __future__ import annotations

import argparse
import itertools
import select
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from safefcgi.fastcgi.records import (
    KEEP_CONN,
    MAX_CONTENT,
    ProtocolError,
    Record,
    RecordReader,
    Role,
    begin_request_body,
    encode_pairs,
    encode_record,
    encode_stream_end,
    parse_end_request,
)

# Names the tests have always used.
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST = 1, 2, 3
PARAMS, STDIN, STDOUT, STDERR, DATA = 4, 5, 6, 7, 8
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER = Role.RESPONDER
SEND_CHUNK = 1024 * 1024
EXIT_OK, EXIT_FAILED = 0, 1

Address = str | tuple[str, int]


@dataclass
class Response:
    """What came back: parsed CGI headers and body, plus the FastCGI stderr stream."""

    status: int
    headers: dict[str, str]
    body: bytes
    stderr: bytes = b""
    app_status: int = 0
    records: list[tuple[int, bytes]] = field(default_factory=list)
    protocol_status: int = 0
    head: bytes = b""  # the CGI header block as sent, for printing


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """Encode one record, padded to a multiple of 8 bytes."""
    return encode_record(kind, request_id, content)


def stream(kind: int, request_id: int, data: bytes) -> bytes:
    """A whole stream: its data in records of at most 65535 bytes, then the empty one."""
    return b"".join(stream_records(kind, request_id, [data]))


def stream_records(kind: int, request_id: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Records carrying ``chunks`` (any sizes), then the empty record ending the stream."""
    for chunk in chunks:
        for start in range(0, len(chunk), MAX_CONTENT):
            yield encode_record(kind, request_id, chunk[start:start + MAX_CONTENT])
    yield encode_stream_end(kind, request_id)


def cgi_params(path: str, method: str = "GET", headers: Mapping[str, str] | None = None,
               content_length: int | None = 0) -> dict[str, str]:
    """The CGI variables a web server sends for ``path`` (which may carry a query).

    Like a browser, non-ASCII characters are sent UTF-8 and percent-encoded in
    REQUEST_URI; like a web server, PATH_INFO is decoded ("bytes as latin-1").
    """
    uri = quote(path, safe="!#$%&'()*+,/:;=?@[]~")
    path_only, _, query = uri.partition("?")
    params = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path_only).decode("latin-1"),
        "QUERY_STRING": query, "REQUEST_URI": uri, "SERVER_NAME": "localhost",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
    }
    if content_length is not None:
        params["CONTENT_LENGTH"] = str(content_length)
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        params[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    return params


def connect(address: Address, timeout: float = 30.0) -> socket.socket:
    if not isinstance(address, str):
        # Resolves the host, so an IPv6 address works as well as an IPv4 one.
        return socket.create_connection(address, timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def read_records(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Read records until END_REQUEST, a management answer, or EOF."""
    reader = RecordReader()
    records = []
    while True:
        for item in reader.records():
            records.append((item.type, item.content))
            if item.type in (END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE):
                return records
        data = sock.recv(65536)
        if not data:
            return records
        reader.feed(data)


class Connection:
    """A client connection that may carry several requests one after the other."""

    def __init__(self, address: Address, timeout: float = 30.0):
        self.sock = connect(address, timeout)
        self.timeout = timeout
        self.reader = RecordReader()
        self.closed_by_server = False
        self._next_id = 1

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, path: str = "/", method: str = "GET", body: bytes | Iterable[bytes] = b"",
                headers: Mapping[str, str] | None = None, *, keep_conn: bool = False,
                params: Mapping[str, str] | None = None,
                content_length: int | None = None) -> Response:
        """Send one request and read its response.

        ``body`` may be an iterable of chunks (sent as they come, never joined);
        then give ``content_length``. ``params`` replaces the CGI variables.
        """
        request_id = self._next_id
        self._next_id = self._next_id % 0xFFFF + 1
        chunks = [body] if isinstance(body, bytes | bytearray) else body
        if content_length is None and isinstance(body, bytes | bytearray):
            content_length = len(body)
        if params is None:
            params = cgi_params(path, method, headers, content_length)
        head = (record(BEGIN_REQUEST, request_id,
                       begin_request_body(RESPONDER, KEEP_CONN if keep_conn else 0))
                + stream(PARAMS, request_id, encode_pairs(params)))
        outgoing = _batched([head], stream_records(STDIN, request_id, chunks))
        records = self.exchange(outgoing, request_id)
        return parse_response(records)

    def exchange(self, outgoing: Iterator[bytes], request_id: int) -> list[Record]:
        """Send ``outgoing`` while collecting records up to END_REQUEST of ``request_id``.

        Like a web server, it sends the whole request even when the answer comes
        first (a 413 before the body was read), so the connection stays usable.
        """
        records: list[Record] = []
        pending = memoryview(next(outgoing, b""))
        ended = False
        while True:
            for item in self.reader.records():
                records.append(item)
                ended = ended or (item.type == END_REQUEST and item.request_id == request_id)
            if ended and not pending:
                return records
            want_write = [self.sock] if pending else []
            readable, writable, _ = select.select([self.sock], want_write, [], self.timeout)
            if not readable and not writable:
                raise TimeoutError(f"no answer within {self.timeout:g} s")
            if readable:
                data = self.sock.recv(262144)
                if not data:
                    self.closed_by_server = True
                    if ended:
                        return records
                    raise ConnectionError("the server closed the connection without "
                                          "END_REQUEST")
                self.reader.feed(data)
            if writable:
                try:
                    sent = self.sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    pending = memoryview(b"")  # the server stopped reading; collect its answer
                    continue
                pending = pending[sent:] or memoryview(next(outgoing, b""))

    def wait_closed(self) -> bool:
        """True if the server closes the connection (EOF) rather than keeping it open."""
        readable, _, _ = select.select([self.sock], [], [], self.timeout)
        return bool(readable) and self.sock.recv(1) == b""


def _batched(first: Iterable[bytes], rest: Iterable[bytes]) -> Iterator[bytes]:
    """Join small records into sends of about SEND_CHUNK bytes."""
    batch, size = [], 0
    for piece in itertools.chain(first, rest):
        batch.append(piece)
        size += len(piece)
        if size >= SEND_CHUNK:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def request(address: Address, path: str = "/", method: str = "GET",
            body: bytes | Iterable[bytes] = b"", headers: Mapping[str, str] | None = None,
            timeout: float = 30.0, **kwargs) -> Response:
    """Send one request on a fresh connection, the way a web server would."""
    with Connection(address, timeout) as connection:
        return connection.request(path, method, body, headers, **kwargs)


def parse_response(records: Iterable[Record | tuple[int, bytes]]) -> Response:
    """Join STDOUT and STDERR, split the CGI headers from the body."""
    pairs = [(item.type, item.content) if isinstance(item, Record) else item
             for item in records]
    stdout = b"".join(content for kind, content in pairs if kind == STDOUT)
    stderr = b"".join(content for kind, content in pairs if kind == STDERR)
    ends = [content for kind, content in pairs if kind == END_REQUEST]
    if not ends:
        raise ConnectionError("the server closed the connection without END_REQUEST")
    app_status, protocol_status = parse_end_request(ends[-1])
    head, _, body = stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n"):
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    status = int(headers.pop("status", "200").split()[0]) if stdout else 0
    return Response(status, headers, body, stderr, app_status, pairs, protocol_status, head)


# -- safefcgi request -------------------------------------------------------------------


def run_request_command(args: argparse.Namespace) -> int:
    """``safefcgi request``: send one request, print the response, report by exit status."""
    address: Address = args.socket if args.socket else (args.host, args.port)
    headers = {}
    for header in args.header:
        name, separator, value = header.partition(":")
        if not separator or not name.strip():
            print(f"safefcgi request: error: header {header!r} is not 'Name: value'",
                  file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    body = _request_body(args.data)
    method = args.request or ("POST" if args.data is not None else "GET")
    if args.data is not None and not any(n.lower() == "content-type" for n in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        response = request(address, args.path, method, body, headers, timeout=args.timeout)
    except (OSError, ConnectionError, ProtocolError) as exc:
        print(f"safefcgi request: error: {_address_text(address)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if response.stderr:
        sys.stderr.buffer.write(response.stderr)
    out = sys.stdout.buffer
    if not args.body_only:
        out.write(response.head + b"\r\n\r\n")
    out.write(response.body)
    out.flush()
    if args.fail and (response.status >= 400 or response.status == 0):
        return EXIT_FAILED
    return EXIT_OK


def _request_body(data: str | None) -> bytes:
    if data is None:
        return b""
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        with open(data[1:], "rb") as file:
            return file.read()
    return data.encode("utf-8")


def _address_text(address: Address) -> str:
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


"""The connection handler over a socketpair (a thread, no fork): sends, and fuzzing."""

import logging
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safefcgi.config import protocol_limits
from safefcgi.fastcgi import client
from safefcgi.fastcgi.protocol import (
    NODELAY_INHERITED,
    FastCGIApplication,
    prepare_listener,
    serve_connection,
)
from safefcgi.fastcgi.records import ProtocolError, RecordReader, RecordType


class CountingSocket(socket.socket):
    """A real socket that counts send(), sendall() and sendmsg() calls: one per system call
    batch."""

    sends: list[int]

    def send(self, data, *args):
        sent = super().send(data, *args)
        self.sends.append(sent)
        return sent

    def sendall(self, data, *args):
        self.sends.append(len(data))
        return super().sendall(data, *args)

    def sendmsg(self, buffers, *args):
        sent = super().sendmsg(buffers, *args)
        self.sends.append(sent)
        return sent


def blocks_app(blocks, buffered=True):
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return list(blocks) if buffered else iter(blocks)
    return app


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def protocol_log():
    handler = LogLines()
    logger = logging.getLogger("safefcgi.protocol")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def serve(app, incoming: bytes, limits=None):
    """Run serve_connection on one end of a socketpair; return (records, sends, result)."""
    ours, theirs = socket.socketpair()
    server_sock = CountingSocket(theirs.family, theirs.type, fileno=theirs.detach())
    server_sock.sends = []
    fastcgi_app = FastCGIApplication(app, debug=False, multithreaded=False, max_connections=1,
                                     limits=limits or protocol_limits(read_timeout=2))
    result = []
    thread = threading.Thread(
        target=lambda: result.append(serve_connection(fastcgi_app, server_sock, "")))
    thread.start()
    reader = RecordReader()
    try:
        ours.sendall(incoming)
        ours.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass
    ours.settimeout(10)
    while True:
        try:
            data = ours.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            break
        reader.feed(data)
    thread.join(10)
    assert not thread.is_alive(), "serve_connection did not return"
    ours.close()
    return list(reader.records()), server_sock.sends, result[0]


def request_bytes(path="/", body=b"", keep_conn=False, request_id=1):
    params = client.cgi_params(path, "POST" if body else "GET", content_length=len(body))
    return (client.record(client.BEGIN_REQUEST, request_id,
                          bytes([0, 1, 1 if keep_conn else 0]) + bytes(5))
            + client.stream(client.PARAMS, request_id, client.encode_pairs(params))
            + client.stream(client.STDIN, request_id, body))


def test_a_small_response_is_one_send_with_its_end_request():
    records, sends, ok = serve(blocks_app([b"hello"]), request_bytes())
    assert ok and len(sends) == 1
    assert [r.type for r in records] == [RecordType.STDOUT, RecordType.STDOUT,
                                         RecordType.END_REQUEST]


def test_a_streamed_response_is_one_send_per_block_plus_the_end():
    _, sends, _ = serve(blocks_app([b"a" * 10, b"b" * 100_000, b"c"], buffered=False),
                        request_bytes())
    assert len(sends) == 4


def test_a_megabyte_block_leaves_in_full_records_and_few_sends():
    records, sends, _ = serve(blocks_app([b"z" * 1_000_000]), request_bytes())
    # Scatter-gather: as many system calls as the socket buffer needs, never one
    # per record (16 records here).
    assert len(sends) <= 1_000_000 // 131072 + 1
    stdout = [len(r.content) for r in records if r.type == RecordType.STDOUT]
    assert stdout[:-2] == [65535] * 15 and stdout[-1] == 0


def test_keep_conn_requests_are_served_in_turn():
    data = request_bytes("/a", keep_conn=True, request_id=1) + request_bytes("/b", request_id=2)
    records, _, ok = serve(blocks_app([b"x"]), data)
    assert ok
    assert [(r.type, r.request_id) for r in records if r.type == RecordType.END_REQUEST] == \
        [(3, 1), (3, 2)]


def test_the_application_sees_the_body_it_was_sent():
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"].read())
        start_response("204 No Content", [])
        return []

    serve(app, request_bytes(body=b"q" * 200_000))
    assert seen == [b"q" * 200_000]


# -- fuzzing -----------------------------------------------------------------------------

VALID = [request_bytes(), request_bytes(keep_conn=True), request_bytes(body=b"data"),
         client.record(client.GET_VALUES, 0, client.encode_pairs({"FCGI_MAX_CONNS": ""})),
         client.record(client.ABORT_REQUEST, 1)]
pieces = st.lists(
    st.one_of(
        st.sampled_from(VALID),
        st.builds(client.record, st.integers(0, 255), st.integers(0, 3), st.binary(max_size=64)),
        st.binary(max_size=16),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(pieces, st.booleans())
def test_any_byte_stream_ends_in_a_return_and_at_most_one_log_line(parts, cut):
    handler = LogLines()
    logger = logging.getLogger("safefcgi.protocol")
    logger.addHandler(handler)
    try:
        data = b"".join(parts)
        if cut and data:
            data = data[:-1]
        limits = protocol_limits(read_timeout=1, max_params_bytes=4096)
        records, _, result = serve(blocks_app([b"ok"]), data, limits)
    finally:
        logger.removeHandler(handler)
    assert result in (True, False)
    assert len(handler.records) <= 1, [r.getMessage() for r in handler.records]
    assert not [r for r in handler.records if "internal error" in r.getMessage()]
    for record in records:  # whatever we sent back is well-formed
        assert record.type in (RecordType.STDOUT, RecordType.END_REQUEST,
                               RecordType.GET_VALUES_RESULT, RecordType.UNKNOWN_TYPE)


def test_garbage_is_reported_as_malformed_input(protocol_log):
    _, _, ok = serve(blocks_app([b"ok"]), b"\x09" * 16)
    assert not ok
    (record,) = protocol_log
    assert "malformed FastCGI input" in record.getMessage()
    assert "version 9" in record.getMessage()


def test_protocol_error_is_a_value_error_for_callers():
    assert issubclass(ProtocolError, ValueError)


def test_connections_accepted_over_tcp_send_small_records_at_once():
    """TCP_NODELAY is set once on the listener; Linux copies it to every accepted socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    prepare_listener(listener)
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert NODELAY_INHERITED


class OptionRecordingSocket(socket.socket):
    """A real socket that records which socket options were set on it."""

    options: list[int]

    def setsockopt(self, level, option, value, *args):
        self.options.append(option)
        return super().setsockopt(level, option, value, *args)


def serve_arriving(app, incoming: bytes, delay: float) -> tuple[list[int], list]:
    """Serve a request that arrives after ``delay`` s (0: before serving starts).

    Returns the socket options the server set and the records it sent back.
    """
    ours, theirs = socket.socketpair()
    server_sock = OptionRecordingSocket(theirs.family, theirs.type, fileno=theirs.detach())
    server_sock.options = []
    fastcgi_app = FastCGIApplication(app, debug=False, multithreaded=False, max_connections=1,
                                     limits=protocol_limits(read_timeout=2))
    def web_server_writes():
        ours.sendall(incoming)
        ours.shutdown(socket.SHUT_WR)

    timer = threading.Timer(delay, web_server_writes)
    if delay:
        timer.start()
    else:
        web_server_writes()
    assert serve_connection(fastcgi_app, server_sock, "")
    if delay:
        timer.join()
    reader = RecordReader()
    while data := ours.recv(65536):
        reader.feed(data)
    ours.close()
    return server_sock.options, list(reader.records())


@pytest.mark.parametrize("delay, armed", [(0, False), (0.2, True)],
                         ids=["arrived whole", "still arriving"])
def test_read_timeouts_cost_system_calls_only_when_a_call_would_block(delay, armed):
    options, records = serve_arriving(blocks_app([b"hello"]), request_bytes(), delay)
    assert records[-1].type == RecordType.END_REQUEST
    assert (socket.SO_RCVTIMEO in options) is armed
    assert (socket.SO_SNDTIMEO in options) is armed

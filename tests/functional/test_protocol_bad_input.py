"""Bad input ends one connection with at most one log line; the child and parent go on."""

import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safefcgi.fastcgi import client
from safefcgi.fastcgi.records import HEADER, RecordType
from tests.support.fastcgi import begin, kinds, read_until_closed, whole_request
from tests.support.servers import LogWatch, start_fixture_server
from tests.support.waiting import wait_until

READ_TIMEOUT = 1.5
MAX_PARAMS = 8192
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_fixture_server(tmp_path_factory.mktemp("bad-input"), "--maxchildren", "1",
                   "--read-timeout", str(READ_TIMEOUT), "--max-params-bytes", str(MAX_PARAMS),
                   "--max-body-bytes", str(MAX_BODY))
    yield server
    server.stop()


@pytest.fixture
def unharmed(server):
    """After the test: same child, same parent, serving; yields the log watch."""
    pid = server.get("/pid").body
    watch = LogWatch(server)
    yield watch
    assert server.get("/pid").body == pid, "the child was replaced"
    assert server.process.poll() is None


def params_of(path="/pid", **extra):
    return client.encode_pairs({**client.cgi_params(path), **extra})


BEGIN = begin(1)
PARAMS = client.stream(client.PARAMS, 1, params_of())
STDIN_END = client.record(client.STDIN, 1)

# name, bytes the web server sends before it shuts down its side, what the log must say
# (None: nothing at all).
CORPUS = [
    ("truncated header", b"\x01\x01\x00", "in the middle of a record"),
    ("wrong version", b"\x02" + BEGIN[1:], "unsupported FastCGI version 2"),
    ("content length past the data", HEADER.pack(1, client.PARAMS, 1, 1000, 0) + b"x" * 10,
     "in the middle of a record"),
    ("peer closing mid-record while the body is read",
     BEGIN + client.stream(client.PARAMS, 1, client.encode_pairs(client.cgi_params(
         "/p/raw", "POST", content_length=100))) + client.record(client.STDIN, 1, b"x" * 64)[:20],
     "in the middle of a record"),
    ("peer closing between records", BEGIN + client.record(client.PARAMS, 1, params_of()),
     "before the request was complete"),
    ("pair lengths past the stream",
     BEGIN + client.record(client.PARAMS, 1, b"\xff\xff\xff\xff\x00") + client.record(4, 1),
     "runs past the end of its stream"),
    ("oversize params", BEGIN + client.stream(client.PARAMS, 1, params_of(
        HTTP_COOKIE="c" * (2 * MAX_PARAMS))) + STDIN_END, "exceed --max-params-bytes"),
    ("short BEGIN_REQUEST body", client.record(client.BEGIN_REQUEST, 1, b"\x00\x01\x00"),
     "BEGIN_REQUEST body of 3 bytes"),
    ("STDIN before the end of PARAMS", BEGIN + client.record(client.STDIN, 1, b"x"),
     "before the end of its PARAMS"),
    ("BEGIN_REQUEST for the active request", BEGIN + BEGIN, "still active"),
    ("body longer than --max-body-bytes without CONTENT_LENGTH",
     BEGIN + client.stream(client.PARAMS, 1, client.encode_pairs(
         {k: v for k, v in client.cgi_params("/p/raw", "POST", content_length=None).items()}))
     + client.stream(client.STDIN, 1, b"b" * (MAX_BODY + 70000)),
     "exceeds --max-body-bytes"),
    ("garbage after END on a kept connection", begin(1, keep_conn=True) + PARAMS + STDIN_END
     + b"\x07garbage!", "unsupported FastCGI version 7"),
    ("garbage after END", whole_request() + b"\x07garbage!", None),
    ("nothing at all", b"", None),
]


@pytest.mark.parametrize("data, expected", [(data, expected) for _, data, expected in CORPUS],
                         ids=[name for name, _, _ in CORPUS])
def test_malformed_input_closes_the_connection_with_one_log_line(server, unharmed, data,
                                                                 expected):
    with client.connect(server.socket) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        _, closed = read_until_closed(sock, timeout=READ_TIMEOUT * 4)
    assert closed, "the server kept the connection open"
    lines = unharmed.new_lines()
    assert len(lines) <= 1, "\n".join(lines)
    if expected is None:
        assert lines == []
    else:
        assert lines and expected in lines[0], lines


def test_a_silent_web_server_cannot_hold_the_child(server, unharmed):
    with client.connect(server.socket) as sock:
        started = time.monotonic()
        _, closed = read_until_closed(sock, timeout=READ_TIMEOUT * 4)
    assert closed and time.monotonic() - started >= READ_TIMEOUT * 0.9
    assert [line for line in unharmed.new_lines() if "sent nothing" in line]


def test_a_web_server_silent_mid_request_is_cut_off(server, unharmed):
    with client.connect(server.socket) as sock:
        sock.sendall(BEGIN + client.record(client.PARAMS, 1, params_of()))
        _, closed = read_until_closed(sock, timeout=READ_TIMEOUT * 4)
    assert closed
    (line,) = unharmed.new_lines()
    assert "sent nothing for 1.5 s in the middle of a request" in line


@pytest.mark.parametrize("path", ["/p/big?size=8000000", "/p/stream?count=2000&size=4000"],
                         ids=["one large block", "many small blocks"])
def test_a_web_server_that_reads_no_response_cannot_hold_the_child(server, unharmed, path):
    with client.connect(server.socket) as sock:
        sock.sendall(whole_request(path))
        time.sleep(READ_TIMEOUT * 2.5)  # read nothing: the response fills the socket
        records, closed = read_until_closed(sock, timeout=READ_TIMEOUT * 4)
    assert closed
    assert RecordType.END_REQUEST not in kinds(records), "the response was not cut short"
    (line,) = unharmed.new_lines()
    assert "accepted no response data for 1.5 s" in line


def test_a_body_over_the_limit_is_answered_413_and_the_connection_goes_on(server, unharmed):
    with client.Connection(server.socket, timeout=10) as connection:
        refused = connection.request("/p/raw", "POST", b"b" * (MAX_BODY + 1), keep_conn=True)
        after = connection.request("/p/echo/after-413", keep_conn=True)
    assert refused.status == 413
    assert json.loads(after.body)["path"] == "/p/echo/after-413"
    (line,) = unharmed.new_lines()
    assert "refused: --max-body-bytes" in line


def test_a_body_at_the_limit_is_accepted(server, unharmed):
    response = server.get("/p/raw", method="POST", body=b"b" * MAX_BODY)
    assert json.loads(response.body)["size"] == MAX_BODY


def test_an_invalid_content_length_is_a_400(server, unharmed):
    params = {**client.cgi_params("/p/raw", "POST"), "CONTENT_LENGTH": "12abc"}
    with client.Connection(server.socket) as connection:
        assert connection.request(params=params).status == 400


def test_a_web_server_vanishing_mid_response_is_one_line_and_close_is_called(server, unharmed):
    with client.connect(server.socket) as sock:
        sock.sendall(whole_request("/p/stream?count=100000&size=65536&tag=vanish"))
        sock.recv(65536)  # the response has started
    closed_line = wait_until(lambda: [line for line in server.hook_log.read_text().splitlines()
                                      if line.startswith("vanish closed")],
                             5, "the response to be closed")
    assert closed_line[0] != "vanish closed after 100000 blocks"
    # The child closes the response, then logs why it stopped sending.
    (line,) = wait_until(unharmed.new_lines, 5, "the child's log line")
    assert "before the response was complete" in line


# -- fuzzing the running server ----------------------------------------------------------

record_kinds = st.sampled_from([t.value for t in RecordType] + [0, 12, 200])
fuzz_records = st.lists(
    st.one_of(
        st.builds(client.record, record_kinds, st.sampled_from([0, 1, 2]),
                  st.binary(max_size=40)),
        st.sampled_from([BEGIN, begin(1, keep_conn=True), PARAMS, STDIN_END,
                         client.record(client.ABORT_REQUEST, 1)]),
        st.binary(max_size=12),
    ),
    max_size=8,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=fuzz_records)
def test_fuzzed_record_streams_never_hurt_the_child(server, pieces):
    watch = LogWatch(server)
    with client.connect(server.socket) as sock:
        try:
            sock.sendall(b"".join(pieces))
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already closed on bad input
        records, closed = read_until_closed(sock, timeout=READ_TIMEOUT * 4)
    assert closed
    assert len(watch.new_lines()) <= 1, watch.new_lines()
    assert not [line for line in watch.new_lines() if "internal error" in line]
    assert kinds(records).count(RecordType.END_REQUEST) <= 3
    assert server.get("/pid").status == 200

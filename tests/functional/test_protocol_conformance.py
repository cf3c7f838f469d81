"""FastCGI 1.0 as the specification writes it, spoken record by record to a real server."""

import json
import struct

import pytest

from safefcgi.fastcgi import client
from safefcgi.fastcgi.records import HEADER, RecordType, parse_end_request
from tests.support.fastcgi import begin, kinds, read_until_closed, whole_request
from tests.support.servers import AGAINST_FLUP, LogWatch, start_fixture_server
from tests.support.waiting import stays_false, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_fixture_server(tmp_path_factory.mktemp("conformance"), "--maxchildren", "1")
    yield server
    server.stop()


@pytest.fixture
def pid(server):
    """The one child's pid: the same child must still be serving after each test."""
    before = server.get("/pid").body
    yield before
    assert server.get("/pid").body == before, "the child was replaced"
    assert server.process.poll() is None


def ends(records):
    return [(r.request_id, *parse_end_request(r.content)) for r in records
            if r.type == RecordType.END_REQUEST]


# -- management records ------------------------------------------------------------------


@pytest.mark.parametrize("method, capacity", [("prefork", "maxchildren"),
                                              ("threaded", "maxthreads")])
def test_get_values_reports_the_real_capacity(tmp_path, method, capacity):
    # flup6 never answered (bytes names looked up among str keys); its numbers
    # were the fd limit, not the pool.
    server = start_fixture_server(tmp_path, "--method", method, f"--{capacity}", "3")
    try:
        with client.connect(server.socket) as sock:
            sock.sendall(client.record(client.GET_VALUES, 0, client.encode_pairs(
                {"FCGI_MAX_CONNS": "", "FCGI_MAX_REQS": "", "FCGI_MPXS_CONNS": "",
                 "NOT_A_VARIABLE": ""})))
            (answer,), _ = read_until_closed(sock, timeout=5)
    finally:
        server.stop()
    assert answer.type == RecordType.GET_VALUES_RESULT and answer.request_id == 0
    assert answer.content == client.encode_pairs(
        {"FCGI_MAX_CONNS": "3", "FCGI_MAX_REQS": "3", "FCGI_MPXS_CONNS": "0"})


def test_unknown_management_record_gets_unknown_type(server, pid):
    # flup6 raised NameError here and the child died.
    with client.connect(server.socket) as sock:
        sock.sendall(client.record(42, 0, b"\0" * 8) + whole_request())
        records, _ = read_until_closed(sock)
    assert records[0].type == RecordType.UNKNOWN_TYPE
    assert records[0].content == bytes([42]) + bytes(7)
    assert ends(records) == [(1, 0, 0)]  # and the connection went on to serve a request


# -- FCGI_KEEP_CONN ----------------------------------------------------------------------


def test_keep_conn_serves_several_requests_on_one_connection(server, pid):
    with client.Connection(server.socket, timeout=10) as connection:
        answers = [connection.request(f"/p/echo/{n}", keep_conn=True) for n in range(3)]
        last = connection.request("/p/echo/last", keep_conn=False)
        assert connection.wait_closed(), "connection left open without FCGI_KEEP_CONN"
    assert [json.loads(a.body)["path"] for a in answers + [last]] == \
        ["/p/echo/0", "/p/echo/1", "/p/echo/2", "/p/echo/last"]


def test_without_keep_conn_the_server_closes_after_the_response(server, pid):
    with client.connect(server.socket) as sock:
        sock.sendall(whole_request())
        records, closed = read_until_closed(sock, timeout=5)
    assert closed
    assert kinds(records)[-2:] == [RecordType.STDOUT, RecordType.END_REQUEST]


def test_a_body_the_application_ignores_does_not_spill_into_the_next_request(server, pid):
    with client.Connection(server.socket, timeout=10) as connection:
        ignored = connection.request("/pid", "POST", b"q" * 300_000, keep_conn=True)
        after = connection.request("/p/echo/after", keep_conn=True)
    assert ignored.status == 200
    assert json.loads(after.body)["path"] == "/p/echo/after"


# -- FCGI_ABORT_REQUEST ------------------------------------------------------------------


def test_abort_before_the_params_end_gets_end_request(server, pid):
    # flup6 only set a flag: no END_REQUEST ever came and the child hung.
    params = client.encode_pairs(client.cgi_params("/sleep?seconds=5"))
    with client.connect(server.socket) as sock:
        sock.sendall(begin(5) + client.record(client.PARAMS, 5, params)
                     + client.record(client.ABORT_REQUEST, 5))
        records, closed = read_until_closed(sock, timeout=5)
    assert ends(records) == [(5, 0, 0)]
    assert RecordType.STDOUT not in kinds(records)
    assert closed


def test_abort_during_an_upload_ends_the_request_and_keeps_the_connection(server, pid):
    params = client.encode_pairs(client.cgi_params("/p/raw", "POST",
                                                   content_length=50_000_000))
    with client.Connection(server.socket, timeout=10) as connection:
        connection.sock.sendall(
            begin(2, keep_conn=True) + client.stream(client.PARAMS, 2, params)
            + b"".join(client.record(client.STDIN, 2, b"u" * 65535) for _ in range(40))
            + client.record(client.ABORT_REQUEST, 2))
        records = connection.exchange(iter([]), 2)
        after = connection.request("/p/echo/after-abort", keep_conn=True)
    assert ends(records) == [(2, 0, 0)]
    assert json.loads(after.body)["path"] == "/p/echo/after-abort"


# -- roles and multiplexing --------------------------------------------------------------


@pytest.mark.parametrize("role", [2, 3, 77])  # authorizer, filter, nonsense
def test_unknown_role_gets_unknown_role(server, pid, role):
    with client.connect(server.socket) as sock:
        sock.sendall(begin(3, role=role))
        records, _ = read_until_closed(sock, timeout=5)
    assert ends(records) == [(3, 0, 3)]  # FCGI_UNKNOWN_ROLE


def test_unknown_role_ends_a_kept_connection_with_one_log_line(server, pid):
    """What follows on the connection is not read: one line, however much the web server sends.

    Found by the record fuzzer: a kept-open connection went on to a second request that
    the web server then abandoned, and the connection left two log lines.
    """
    watch = LogWatch(server)
    with client.connect(server.socket) as sock:
        sock.sendall(begin(1, role=0, keep_conn=True) + begin(1))
        records, closed = read_until_closed(sock, timeout=5)
    assert closed
    assert ends(records) == [(1, 0, 3)]
    (line,) = wait_until(watch.new_lines, 5, "the child's log line")
    assert "role 0" in line
    assert stays_false(lambda: len(watch.new_lines()) > 1, 0.5), watch.new_lines()


def test_second_begin_request_gets_cant_mpx_conn(server, pid):
    params = client.encode_pairs(client.cgi_params("/p/echo/first"))
    with client.connect(server.socket) as sock:
        sock.sendall(begin(1) + client.record(client.PARAMS, 1, params) + begin(2)
                     + client.record(client.PARAMS, 2, params)
                     + client.record(client.PARAMS, 1) + client.record(client.STDIN, 1))
        records, _ = read_until_closed(sock, timeout=5)
    assert ends(records) == [(2, 0, 1), (1, 0, 0)]  # FCGI_CANT_MPX_CONN, then complete
    stdout = b"".join(r.content for r in records if r.type == RecordType.STDOUT)
    assert b'"path": "/p/echo/first"' in stdout


# -- name-value pairs, padding, terminators ----------------------------------------------


def test_params_split_anywhere_across_records_with_four_byte_lengths(server, pid):
    # flup6 decoded each PARAMS record on its own: a pair spanning two records
    # was garbled.
    long_value = "v" * 300  # needs a 4-byte length
    params = client.encode_pairs({**client.cgi_params("/p/echo/split?x=1"),
                                  "HTTP_X_LONG": long_value})
    cut_inside_length = params.index(b"\x80\x00\x01\x2c") + 2
    pieces = [params[:7], params[7:cut_inside_length], params[cut_inside_length:-10],
              params[-10:]]
    with client.connect(server.socket) as sock:
        sock.sendall(begin(1) + b"".join(client.record(client.PARAMS, 1, p) for p in pieces)
                     + client.record(client.PARAMS, 1) + client.record(client.STDIN, 1))
        records, _ = read_until_closed(sock)
    response = client.parse_response(records)
    assert response.status == 200
    assert json.loads(response.body)["query"] == {"x": "1"}


def test_any_padding_the_web_server_chooses_is_skipped(server, pid):
    def padded(kind, content, padding):
        return HEADER.pack(1, kind, 1, len(content), padding) + content + b"\xaa" * padding

    params = client.encode_pairs(client.cgi_params("/p/echo/padded", "POST",
                                                   content_length=5))
    with client.connect(server.socket) as sock:
        sock.sendall(padded(client.BEGIN_REQUEST, bytes([0, 1, 0]) + bytes(5), 255)
                     + padded(client.PARAMS, params, 3) + padded(client.PARAMS, b"", 200)
                     + padded(client.STDIN, b"he", 1) + padded(client.STDIN, b"llo", 0)
                     + padded(client.STDIN, b"", 7))
        records, _ = read_until_closed(sock)
    assert json.loads(client.parse_response(records).body)["body"] == "hello"


def test_streams_end_with_an_empty_record_before_end_request(server, pid):
    with client.connect(server.socket) as sock:
        sock.sendall(whole_request("/p/echo/x"))
        records, _ = read_until_closed(sock)
    assert kinds(records)[-2:] == [RecordType.STDOUT, RecordType.END_REQUEST]
    assert records[-2].content == b""
    assert all(r.content for r in records[:-2]), "an empty STDOUT record mid-stream"


# -- large bodies and responses ----------------------------------------------------------


def test_large_response_goes_out_in_records_of_65535_bytes(server, pid):
    # flup6 cut responses into 8 KiB records and sent each in three system calls.
    response = server.get("/p/big?size=1000000")
    assert response.body == b"y" * 1_000_000
    sizes = [len(content) for kind, content in response.records if kind == client.STDOUT]
    assert sizes[:-2] == [65535] * (len(sizes) - 2)
    assert sizes[-1] == 0 and 0 < sizes[-2] <= 65535


def test_streaming_response_sends_each_block_and_closes_the_generator(server, pid):
    response = server.get("/p/stream?count=5&size=3&tag=five")
    assert response.body == b"xxx" * 5
    assert "five closed after 5 blocks" in server.hook_log.read_text()


UPLOAD_MB = 100


def test_100_mb_upload_is_streamed_with_bounded_memory(server, pid):
    baseline = json.loads(server.get("/p/rss").body)["peak_rss_kib"]
    chunks = (bytes([n]) * 1024 * 1024 for n in range(UPLOAD_MB))
    response = server.get("/p/raw", method="POST", body=chunks,
                          content_length=UPLOAD_MB * 1024 * 1024, timeout=60)
    answer = json.loads(response.body)
    assert answer["size"] == UPLOAD_MB * 1024 * 1024
    growth_mib = (answer["peak_rss_kib"] - baseline) / 1024
    assert growth_mib < 20, f"the child grew by {growth_mib:.0f} MiB reading the body"


def test_100_mb_multipart_upload_reaches_django_intact(server, pid):
    import hashlib

    boundary = "safefcgi-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    for _ in range(UPLOAD_MB):
        digest.update(block)
    baseline = json.loads(server.get("/p/rss").body)["peak_rss_kib"]
    response = server.get(
        "/p/upload", method="POST", body=iter([head, *[block] * UPLOAD_MB, tail]),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        content_length=len(head) + len(tail) + UPLOAD_MB * len(block), timeout=60)
    answer = json.loads(response.body)
    assert (answer["size"], answer["sha256"]) == (UPLOAD_MB * len(block), digest.hexdigest())
    assert (answer["peak_rss_kib"] - baseline) / 1024 < 20


# -- WSGI through Django ------------------------------------------------------------------


def test_non_ascii_path_and_query_reach_django_intact(server, pid):
    answer = json.loads(server.get("/p/echo/café/日本 x?q=ü&r=%E2%82%AC").body)
    assert answer["path"] == "/p/echo/café/日本 x"
    assert answer["query"] == {"q": "ü", "r": "€"}


def test_https_param_makes_the_scheme_https(server, pid):
    params = {**client.cgi_params("/p/echo/s"), "HTTPS": "on"}
    with client.Connection(server.socket) as connection:
        answer = json.loads(connection.request(params=params).body)
    assert answer["scheme"] == "https"


def test_latin1_response_header_reaches_the_client(server, pid):
    # flup6 encoded header values as ASCII and failed on this one.
    response = server.get("/latin1")
    assert response.status == 200
    assert response.headers["content-disposition"] == "attachment; filename=café.txt"


@pytest.mark.skipif(AGAINST_FLUP, reason="safefcgi's own error log line")
def test_crashing_application_gives_a_plain_500_without_traceback(tmp_path):
    server = start_fixture_server(tmp_path, "--maxchildren", "1",
                                  "--after-fork", "raising_app.install")
    try:
        response = server.get("/anything")
        assert response.status == 500
        assert b"secret-detail" not in response.body and b"Traceback" not in response.body
        assert "secret-detail-in-traceback" in server.log  # the operator still sees it
        assert server.get("/anything").status == 500  # and the child is still there
    finally:
        server.stop()


def test_debug_shows_the_traceback_without_cgitb(tmp_path):
    server = start_fixture_server(tmp_path, "--maxchildren", "1", "--debug",
                   "--after-fork", "raising_app.install")
    try:
        response = server.get("/anything")
    finally:
        server.stop()
    assert response.status == 500
    assert b"RuntimeError: secret-detail-in-traceback" in response.body


def test_end_request_carries_the_request_id_it_ends(server, pid):
    with client.connect(server.socket) as sock:
        sock.sendall(whole_request("/pid", request_id=513))
        records, _ = read_until_closed(sock)
    assert {r.request_id for r in records} == {513}
    assert struct.unpack("!LB3x", records[-1].content) == (0, 0)


@pytest.mark.skipif(AGAINST_FLUP, reason="needs safefcgi's --after-fork")
def test_requests_pass_wsgiref_validate_end_to_end(tmp_path):
    server = start_fixture_server(tmp_path, "--maxchildren", "1",
                                  "--after-fork", "validating_app.install")
    try:
        boundary = "b0undary"
        upload = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                  f'filename="a.txt"\r\n\r\n{"z" * 5000}\r\n--{boundary}--\r\n').encode()
        responses = [
            server.get("/p/echo/café?q=1"),
            server.get("/p/raw", method="POST", body=b"r" * 300_000),
            server.get("/p/upload", method="POST", body=upload,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
            server.get("/p/stream?count=3&size=5"),
            server.get("/latin1"),
            server.get("/p/big?size=200000"),
        ]
        log = server.log
    finally:
        server.stop()
    assert [r.status for r in responses] == [200] * len(responses), log
    assert "AssertionError" not in log and "WSGIWarning" not in log, log

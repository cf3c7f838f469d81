"""Bad input and crashing applications never take a child down."""

import struct

from safefcgi import client

from .conftest import PROJECT  # noqa: F401 - the project the servers run


def test_garbage_closes_that_connection_and_the_child_serves_the_next(start_server):
    server = start_server("--maxchildren", "1")
    pid = server.get("/pid").body
    with client.connect(server.socket) as sock:
        sock.sendall(b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\xff" * 3)  # truncated body
        sock.shutdown(1)
        assert client.read_records(sock) == []
    with client.connect(server.socket) as sock:
        params = b"\x01\x04\x00\x01\x00\x04\x00\x04" + b"\xff\xff\xff\xff" + b"\0" * 4
        sock.sendall(client.record(client.BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, 0))
                     + params)  # a name-value pair whose lengths run past the record
        sock.shutdown(1)
        try:
            records = client.read_records(sock)
        except ConnectionResetError:
            records = []
    assert client.END_REQUEST not in [kind for kind, _ in records]
    assert server.log.count("malformed FastCGI input") == 1
    assert server.get("/pid").body == pid
    assert server.process.poll() is None


def test_unknown_management_record_gets_unknown_type(start_server):
    # flup6 raised NameError here and the child died.
    server = start_server("--maxchildren", "1")
    pid = server.get("/pid").body
    with client.connect(server.socket) as sock:
        sock.sendall(client.record(42, 0, b"\0" * 8))
        records = client.read_records(sock)
    assert records[0][0] == client.UNKNOWN_TYPE
    assert records[0][1][0] == 42
    assert server.get("/pid").body == pid


def test_get_values_reports_no_multiplexing(start_server):
    server = start_server("--maxchildren", "3")
    with client.connect(server.socket) as sock:
        sock.sendall(client.record(client.GET_VALUES, 0, client.encode_pairs(
            {"FCGI_MAX_CONNS": "", "FCGI_MPXS_CONNS": ""})))
        (kind, content), = client.read_records(sock)
    assert kind == client.GET_VALUES_RESULT
    # flup6 never answered: it looked bytes names up among str keys.
    assert content == client.encode_pairs({"FCGI_MAX_CONNS": "3", "FCGI_MPXS_CONNS": "0"})


def test_crashing_application_gives_a_plain_500_without_traceback(start_server):
    server = start_server("--maxchildren", "1", "--after-fork", "raising_app.install")
    response = server.get("/anything")
    assert response.status == 500
    assert b"secret-detail" not in response.body and b"Traceback" not in response.body
    assert "secret-detail-in-traceback" in server.log  # the operator still sees it
    assert server.get("/anything").status == 500  # and the child is still there


def test_debug_shows_the_traceback_without_cgitb(start_server):
    server = start_server("--maxchildren", "1", "--debug", "--after-fork", "raising_app.install")
    response = server.get("/anything")
    assert response.status == 500
    assert b"RuntimeError: secret-detail-in-traceback" in response.body


def test_latin1_response_header_reaches_the_client(start_server):
    # flup6 encoded header values as ASCII and failed on this one.
    server = start_server("--maxchildren", "1")
    response = server.get("/latin1")
    assert response.status == 200
    assert response.headers["content-disposition"] == "attachment; filename=café.txt"

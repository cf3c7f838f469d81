"""Helpers the functional tests share: raw requests left unread, threads, free ports."""

import re
import socket
import struct
import threading

from safefcgi.fastcgi import client

from .conftest import wait_for


def send_request(address, path: str):
    """Connect and send a whole request, leaving the response unread."""
    path_only, _, query = path.partition("?")
    params = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path_only,
              "QUERY_STRING": query, "REQUEST_URI": path, "SERVER_NAME": "localhost",
              "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": "0"}
    sock = client.connect(address, timeout=20)
    sock.sendall(client.record(client.BEGIN_REQUEST, 1, struct.pack("!HB5x", client.RESPONDER, 0))
                 + client.stream(client.PARAMS, 1, client.encode_pairs(params))
                 + client.stream(client.STDIN, 1, b""))
    return sock


def read_response(sock) -> client.Response:
    with sock:
        return client.parse_response(client.read_records(sock))


def in_thread(function, *args):
    """Run function(*args) in a thread; the returned dict gets 'value' or 'error'."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def sleeping_child(server, seconds: str) -> int:
    """Wait until a child is inside /sleep?seconds=...; return its pid (from its log line)."""
    pattern = re.compile(rf"child (\d+) sleeps {re.escape(seconds)}$", re.MULTILINE)
    match = wait_for(lambda: pattern.search(server.log))
    assert match, server.log
    return int(match.group(1))


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

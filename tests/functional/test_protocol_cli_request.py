"""``safefcgi request`` against a running server."""

import json
import subprocess
import sys

import pytest

from tests.support.servers import start_fixture_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_fixture_server(tmp_path_factory.mktemp("cli"), "--maxchildren", "1")
    yield server
    server.stop()


def safefcgi_request(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "safefcgi", "request", *args],
                          input=stdin, capture_output=True, timeout=30)


def test_prints_headers_then_body(server):
    done = safefcgi_request("--socket", server.socket, "/p/echo/x?y=1")
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK\r\n") and b"Content-Type: application/json" in head
    assert json.loads(body)["query"] == {"y": "1"}


def test_method_data_and_headers(server):
    done = safefcgi_request("--socket", server.socket, "-X", "PUT", "-d", "a=b&c=d",
                            "-H", "X-Test: yes", "--body-only", "/p/echo/put")
    answer = json.loads(done.stdout)
    assert (answer["method"], answer["body"], answer["x_test"]) == ("PUT", "a=b&c=d", "yes")


def test_data_from_standard_input_defaults_to_post(server):
    done = safefcgi_request("--socket", server.socket, "-d", "@-", "--body-only",
                            "/p/echo/stdin", stdin=b"piped")
    answer = json.loads(done.stdout)
    assert (answer["method"], answer["body"]) == ("POST", "piped")


def test_fail_turns_an_error_status_into_exit_status_1(server):
    assert safefcgi_request("--socket", server.socket, "/nowhere").returncode == 0
    done = safefcgi_request("--socket", server.socket, "--fail", "/nowhere")
    assert done.returncode == 1 and b"Status: 404" in done.stdout


def test_unreachable_server_is_one_line_and_exit_status_1(tmp_path):
    done = safefcgi_request("--socket", str(tmp_path / "absent.sock"), "/")
    assert done.returncode == 1
    assert done.stderr.decode().count("\n") == 1 and "absent.sock" in done.stderr.decode()


@pytest.mark.parametrize("args", [
    ["--host", "127.0.0.1", "/"], ["/"], ["--socket", "s", "--host", "h", "--port", "1", "/"],
    ["--socket", "s", "no-slash"], ["--socket", "s", "-H", "x", "/"],
])
def test_usage_errors_exit_2(args):
    assert safefcgi_request(*args).returncode == 2

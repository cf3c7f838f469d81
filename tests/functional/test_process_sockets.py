"""Where the server listens: TCP, unix socket files found at start-up, umask, failing accepts."""

import os
import signal
import socket
import time

from tests.support.ports import free_tcp_port
from tests.support.servers import root_permission, run_fixture_server
from tests.support.waiting import wait_until


def test_tcp_host_and_port(start_server):
    port = free_tcp_port()
    server = start_server("--host", "127.0.0.1", "--port", str(port), wait=False)
    server.socket = ("127.0.0.1", port)
    server.wait_until_serving()
    assert server.get("/pid").status == 200


def test_an_accept_that_keeps_failing_is_retried_at_a_bounded_pace(start_server):
    # The hook leaves the child no free file descriptor: every accept() fails with EMFILE,
    # and epoll keeps saying the listener is ready. Retrying at once would spin.
    server = start_server("--maxchildren", "1", "--minspare", "1", "--maxspare", "1",
                          "--after-fork", "fixturesite_hooks.after_out_of_fds", wait=False)
    wait_until(lambda: os.path.exists(server.socket), 10, "the socket file",
               detail=lambda: server.log)
    waiting = socket.socket(socket.AF_UNIX)
    waiting.connect(server.socket)  # queued: the child cannot take it
    time.sleep(2)
    failures = server.log.count("accept failed")
    waiting.close()
    assert 1 <= failures <= 6, server.log[-2000:]
    assert "Too many open files" in server.log
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_exit(10) == 0


def test_a_socket_path_in_use_by_a_live_server_is_refused(start_server, tmp_path):
    first = start_server()
    result = run_fixture_server("--socket", first.socket, *root_permission([]))
    assert result.returncode == 1
    assert f"socket path {first.socket} is taken: a running server is listening on it" \
        in result.stderr
    assert first.get("/pid").status == 200  # the first server is untouched


def test_a_stale_socket_file_is_replaced(start_server, tmp_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "safefcgi.sock"))
    stale.close()  # the file stays, nobody listens: what a crashed server leaves
    server = start_server()
    assert server.get("/pid").status == 200


def test_a_regular_file_at_the_socket_path_is_never_removed(tmp_path):
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    result = run_fixture_server("--socket", str(path), *root_permission([]))
    assert result.returncode == 1 and "not a socket" in result.stderr
    assert path.read_text() == "keep me"


def test_umask_sets_the_socket_file_mode(start_server):
    server = start_server("--umask", "077")
    assert oct(os.stat(server.socket).st_mode & 0o777) == oct(0o700)

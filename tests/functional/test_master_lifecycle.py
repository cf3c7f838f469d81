"""The prefork master with real forks and real signals (no web server needed)."""

import itertools
import os
import signal
import socket
import time

import pytest

from .conftest import wait_for
from .helpers import free_tcp_port


@pytest.mark.parametrize("args, signame, to_group", [
    (("--maxchildren", "3"), "SIGTERM", False),
    (("--maxchildren", "3"), "SIGQUIT", False),
    (("--maxchildren", "2"), "SIGINT", True),  # what Ctrl-C in a terminal does
    (("--method", "threaded", "--maxthreads", "4"), "SIGTERM", False),
], ids=["TERM", "QUIT", "Ctrl-C to the group", "threaded TERM"])
def test_an_idle_server_stops_at_once_and_leaves_nothing_behind(start_server, args, signame,
                                                                 to_group):
    # stock flup's idle master ignored SIGTERM: its select() had no timeout.
    server = start_server(*args)
    children = server.children()
    started = time.monotonic()
    signum = getattr(signal, signame)
    if to_group:
        os.killpg(server.process.pid, signum)
    else:
        server.process.send_signal(signum)
    assert server.wait_for_exit(5) == 0
    assert time.monotonic() - started < 3
    assert not os.path.exists(server.socket)
    assert wait_for(lambda: all(not _alive(pid) for pid in children), timeout=5)


def test_maxrequests_replaces_children(start_server):
    server = start_server("--maxchildren", "1", "--maxrequests", "3")
    pids = [int(server.get("/pid").body) for _ in range(10)]
    runs = [len(list(group)) for _, group in itertools.groupby(pids)]
    # the start-up probe took one request from the first child
    assert runs[0] == 2 and runs[1:-1] == [3] * (len(runs) - 2) and runs[-1] <= 3
    assert len(set(pids)) == len(runs)  # a retired pid never comes back
    assert server.process.poll() is None


def test_a_killed_child_is_replaced(start_server):
    server = start_server("--maxchildren", "1")
    first = int(server.get("/pid").body)
    os.kill(first, signal.SIGKILL)
    replacement = wait_for(lambda: server.children() - {first})
    assert replacement
    assert int(server.get("/pid").body) != first
    assert "killed by SIGKILL" in server.log


def test_pool_grows_under_concurrent_load_up_to_maxchildren(start_server):
    import concurrent.futures

    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "3")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: server.get("/sleep?seconds=0.4").body, range(12)))
    serving_pids = {body.split()[-1] for body in bodies}
    assert 1 < len(serving_pids) <= 3, serving_pids


def test_idle_pool_shrinks_back_to_maxspare(start_server):
    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "3")
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: server.get("/sleep?seconds=0.5"), range(3)))
    assert wait_for(lambda: len(server.children()) == 1, timeout=10)


def test_pidfile_holds_the_parent_pid_and_is_removed_on_exit(start_server, tmp_path):
    pidfile = tmp_path / "site.pid"
    server = start_server("--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == server.process.pid
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_exit(5) == 0
    assert not pidfile.exists()


def test_daemonize_detaches_and_still_serves(start_server, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    errlog = tmp_path / "daemon.log"
    launcher = start_server("--daemonize", "--pidfile", str(pidfile), "--errlog", str(errlog),
                            wait=False)
    assert launcher.wait_for_exit(15) == 0  # the launching process returns at once
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    daemon_pid = int(pidfile.read_text())
    try:
        assert daemon_pid != launcher.process.pid
        assert wait_for(lambda: _answers(launcher))
        # a session of its own, apart from ours and the launcher's: no terminal to lose
        assert os.getsid(daemon_pid) not in (os.getsid(0), launcher.process.pid)
        assert "serving fixturesite_settings" in errlog.read_text()
    finally:
        os.kill(daemon_pid, signal.SIGTERM)
    assert wait_for(lambda: not _alive(daemon_pid))
    assert not pidfile.exists() and not os.path.exists(launcher.socket)


def test_runfcgi_spelling_starts_the_same_server(start_server, tmp_path):
    sock = str(tmp_path / "old.sock")
    server = start_server("method=prefork", f"socket={sock}", "maxchildren=2",
                          "daemonize=false", wait=False)
    server.socket = sock
    server.wait_until_serving()
    assert server.get("/pid").status == 200


def test_tcp_host_and_port(start_server):
    port = free_tcp_port()
    server = start_server("--host", "127.0.0.1", "--port", str(port), wait=False)
    server.socket = ("127.0.0.1", port)
    server.wait_until_serving()
    assert server.get("/pid").status == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, even between open and read
        return False


def _answers(server) -> bool:
    try:
        return server.get("/pid", timeout=2).status == 200
    except OSError:
        return False


def test_threaded_mode_queues_connections_beyond_its_threads(start_server):
    # flup's threaded loop closed connections it had no free thread for.
    import concurrent.futures

    server = start_server("--method", "threaded", "--maxthreads", "2")
    assert int(server.get("/pid").body) == server.process.pid  # one process serves
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: server.get("/sleep?seconds=0.3").status, range(16)))
    assert statuses == [200] * 16


def test_an_accept_that_keeps_failing_is_retried_at_a_bounded_pace(start_server):
    # The hook leaves the child no free file descriptor: every accept() fails with EMFILE,
    # and epoll keeps saying the listener is ready. Retrying at once would spin.
    server = start_server("--maxchildren", "1", "--minspare", "1", "--maxspare", "1",
                          "--after-fork", "fixturesite_hooks.after_out_of_fds", wait=False)
    assert wait_for(lambda: os.path.exists(server.socket)), server.log
    waiting = socket.socket(socket.AF_UNIX)
    waiting.connect(server.socket)  # queued: the child cannot take it
    time.sleep(2)
    failures = server.log.count("accept failed")
    waiting.close()
    assert 1 <= failures <= 6, server.log[-2000:]
    assert "Too many open files" in server.log
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_exit(10) == 0


def test_minspare_0_still_grows_the_pool_when_every_child_is_busy(start_server):
    # Only an idle child accepts: with none kept, a second request would wait for the first.
    server = start_server("--minspare", "0", "--maxspare", "1", "--maxchildren", "3")
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(server.get, "/sleep?seconds=3")
        time.sleep(0.5)  # the slow request holds the only child
        started = time.monotonic()
        quick = pool.submit(server.get, "/pid")
        assert quick.result(timeout=10).status == 200
        assert time.monotonic() - started < 2, "waited for the slow request"
        assert slow.result(timeout=10).status == 200

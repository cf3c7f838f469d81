"""Signals an operator sends to the master, with real processes and real clients."""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from safefcgi.fastcgi import client
from tests.support.fastcgi import read_response, send_request
from tests.support.servers import sleeping_child
from tests.support.threads import in_thread
from tests.support.waiting import wait_until


def write_code(directory: Path, version: str) -> None:
    (directory / "fixturesite_code.py").write_text(f"VERSION = {version}\n")


@pytest.fixture
def code_dir(tmp_path):
    directory = tmp_path / "code"
    directory.mkdir()
    write_code(directory, '"first"')
    return directory


def reloadable(start_server, code_dir, *args):
    # No .pyc: a rewrite within the same second must still be seen as new code.
    return start_server("--pythonpath", str(code_dir), *args,
                        env={"PYTHONDONTWRITEBYTECODE": "1"})


# -- TERM / INT / QUIT -----------------------------------------------------------------

@pytest.mark.parametrize("one_worker", [
    ("--maxchildren", "1"),
    ("--method", "threaded", "--minspare", "1", "--maxspare", "1", "--maxthreads", "1"),
], ids=["prefork", "threaded"])
def test_graceful_stop_serves_every_queued_connection_and_refuses_new_ones(start_server,
                                                                          one_worker):
    server = start_server(*one_worker)
    in_flight = send_request(server.socket, "/sleep?seconds=1")
    # The only worker is busy: the next connections wait in the listen queue.
    wait_until(lambda: "sleeps 1\n" in server.log, 10, "a child to sleep 1 s",
               detail=lambda: server.log)
    queued = [send_request(server.socket, "/pid") for _ in range(3)]

    server.process.send_signal(signal.SIGTERM)

    wait_until(lambda: not os.path.exists(server.socket), 2, "the socket file to be removed")
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        client.connect(server.socket).close()
    assert read_response(in_flight).body.startswith(b"slept in")
    assert [read_response(sock).status for sock in queued] == [200, 200, 200]
    assert server.wait_for_exit(10) == 0


def test_a_stop_while_the_only_child_starts_still_serves_the_queued_connection(start_server):
    # The child gets TERM while its after-fork hooks run: it must act on it once it
    # can serve (drain, then exit), neither die at once nor lose the signal.
    server = start_server("--maxchildren", "1", "--minspare", "1", "--maxspare", "1",
                          "--after-fork", "fixturesite_hooks.after_slow", wait=False)
    wait_until(lambda: "after_slow" in server.hook_log.read_text(), 10,
               "the after_slow hook", detail=lambda: server.log)
    queued = send_request(server.socket, "/pid")

    server.process.send_signal(signal.SIGTERM)

    response = read_response(queued)
    assert response.status == 200, server.log
    assert server.wait_for_exit(10) == 0, server.log


def test_graceful_timeout_kills_what_is_still_busy(start_server):
    server = start_server("--maxchildren", "1", "--graceful-timeout", "1")
    stuck = in_thread(server.get, "/sleep?seconds=30")
    sleeping_child(server, "30")
    started = time.monotonic()

    server.process.send_signal(signal.SIGTERM)

    assert server.wait_for_exit(10) == 0
    assert time.monotonic() - started < 5
    stuck["thread"].join(5)
    assert "error" in stuck
    assert re.search(r"1 children still busy after 1 s, killing them: \d+ "
                     r"\(serving GET /sleep\?seconds=30\)", server.log)


def test_sigquit_stops_at_once_even_with_requests_in_flight(start_server):
    server = start_server("--maxchildren", "2")
    children = server.children()
    stuck = in_thread(server.get, "/sleep?seconds=30")
    sleeping_child(server, "30")
    started = time.monotonic()

    server.process.send_signal(signal.SIGQUIT)

    assert server.wait_for_exit(5) == 0
    assert time.monotonic() - started < 3
    stuck["thread"].join(5)
    assert "error" in stuck
    wait_until(lambda: not (children & server.children()), 10, "the children to exit")


# -- HUP -----------------------------------------------------------------------------

def test_sighup_serves_freshly_imported_code_from_the_same_master(start_server, code_dir):
    server = reloadable(start_server, code_dir, "--maxchildren", "2")
    old_children = server.children()
    assert server.get("/version").body == b"first"
    write_code(code_dir, '"second, longer"')

    server.process.send_signal(signal.SIGHUP)

    wait_until(lambda: server.get("/version").body == b"second, longer", 10,
               "the new code to answer")
    assert server.process.poll() is None  # the same pid: systemd and the pid file agree
    wait_until(lambda: server.children() and not (server.children() & old_children), 10,
               "every old child to be replaced")
    assert "re-executing the master with fresh code" in server.log


def test_sighup_with_broken_code_keeps_the_old_children_serving(start_server, code_dir):
    server = reloadable(start_server, code_dir, "--maxchildren", "2")
    # The server answers once its first child is ready; the second may still be starting.
    old_children = wait_until(lambda: len(children := server.children()) == 2 and children,
                              10, "both children to start")
    write_code(code_dir, "(  # a syntax error")

    server.process.send_signal(signal.SIGHUP)

    wait_until(lambda: "reload aborted" in server.log, 10, "the reload to be aborted")
    assert "SyntaxError" in server.log
    assert server.get("/version").body == b"first"
    assert server.children() == old_children


def test_a_request_in_flight_during_sighup_completes(start_server, code_dir):
    server = reloadable(start_server, code_dir, "--maxchildren", "1")
    slow = in_thread(server.get, "/sleep?seconds=1.5")
    sleeping_child(server, "1.5")
    write_code(code_dir, '"second"')

    server.process.send_signal(signal.SIGHUP)

    wait_until(lambda: server.get("/version").body == b"second", 10, "the new code to answer")
    slow["thread"].join(10)
    assert slow["value"].status == 200 and slow["value"].body.startswith(b"slept in")


# -- USR1, TTIN, TTOU --------------------------------------------------------------------

def test_sigusr1_reopens_a_rotated_errlog_in_master_and_children(start_server, tmp_path):
    errlog = tmp_path / "error.log"
    server = start_server("--maxchildren", "1", "--errlog", str(errlog))
    server.get("/say?word=before")
    errlog.rename(tmp_path / "error.log.1")  # what logrotate does

    server.process.send_signal(signal.SIGUSR1)

    wait_until(lambda: errlog.exists() and "log files reopened" in errlog.read_text(), 10,
               "the rotated errlog to be reopened")
    wait_until(lambda: server.get("/say?word=after").status == 200, 10,
               "an answer after the rotation")
    assert "says after" in errlog.read_text()
    assert "says before" in (tmp_path / "error.log.1").read_text()
    assert "says after" not in (tmp_path / "error.log.1").read_text()


def test_sigttin_adds_a_child_and_sigttou_removes_one(start_server):
    server = start_server("--minspare", "1", "--maxspare", "2", "--maxchildren", "4")
    wait_until(lambda: len(server.children()) == 2, 10, "two children")

    server.process.send_signal(signal.SIGTTIN)
    wait_until(lambda: len(server.children()) == 3, 10, "a third child after SIGTTIN")
    server.process.send_signal(signal.SIGTTIN)
    wait_until(lambda: len(server.children()) == 4, 10, "a fourth child after SIGTTIN")
    server.process.send_signal(signal.SIGTTIN)  # at maxchildren: no fifth
    time.sleep(0.5)
    assert len(server.children()) == 4

    server.process.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(server.children()) == 3, 10, "one child fewer after SIGTTOU")
    assert "SIGTTOU: now 2-3 spare children, at most 4" in server.log

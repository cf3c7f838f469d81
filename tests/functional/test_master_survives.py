"""What the master survives: faults from outside, through the CLI, signals and the socket.

The master's one job is to stay up and keep the socket served; whatever a
child, the kernel or an operator does, it either goes on or stops cleanly
(children stopped, socket and pid file removed).
"""

import os
import signal
import socket
import threading
import time

import pytest

from tests.support.processes import alive
from tests.support.servers import sleeping_child
from tests.support.threads import in_thread
from tests.support.waiting import wait_until


def catches(pid: int, signum: int) -> bool:
    """True once ``pid`` has a handler for ``signum`` and does not block it."""
    with open(f"/proc/{pid}/status") as status:
        masks = dict(line.split(":\t", 1) for line in status if line.startswith("Sig"))
    bit = 1 << (signum - 1)
    return bool(int(masks["SigCgt"], 16) & bit) and not int(masks["SigBlk"], 16) & bit


def new_image(pid: int) -> bool:
    """True once ``pid`` runs the image a reload executed (its start-up environment)."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return b"SAFEFCGI_HANDOVER=" in environ.read()


def assert_stopped_clean(server, pidfile, children, status=0):
    assert server.wait_for_exit(10) == status, server.log[-3000:]
    assert not os.path.exists(server.socket), server.log[-3000:]
    assert not pidfile.exists(), server.log[-3000:]
    wait_until(lambda: not any(alive(pid) for pid in children), 5, "every child to exit")


def test_a_child_killed_by_a_real_time_signal_is_named_and_replaced(start_server):
    # Watchdogs, profilers and some container runtimes send real-time signals.
    server = start_server("--maxchildren", "1")
    victim = int(server.get("/pid").body)

    os.kill(victim, signal.SIGRTMIN + 1)

    wait_until(lambda: "killed by SIGRTMIN+1" in server.log, 10, "the line naming SIGRTMIN+1",
               detail=lambda: server.log)
    assert server.process.poll() is None, server.log
    wait_until(lambda: server.children() - {victim}, 10, "a child in place of the victim")
    assert int(server.get("/pid").body) != victim


def test_pool_resizing_while_children_recycle_under_load_keeps_the_master_serving(
        start_server):
    # Children exit after every request while TTIN and TTOU alternate: the master
    # retires children that are already gone, and fd numbers are reused at once.
    server = start_server("--maxrequests", "1", "--minspare", "1", "--maxspare", "3",
                          "--maxchildren", "6")
    stop = threading.Event()
    failures, answered = [], []

    def load():
        while not stop.is_set():
            try:
                answered.append(server.get("/pid", timeout=20).status)
            except (OSError, ConnectionError) as exc:
                failures.append(repr(exc))

    clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 8
    for signum in iter(lambda: (signal.SIGTTIN, signal.SIGTTOU), None):
        if time.monotonic() > deadline or server.process.poll() is not None:
            break
        for each in signum:
            server.process.send_signal(each)
            time.sleep(0.03)
    stop.set()
    for thread in clients:
        thread.join(30)

    assert server.process.poll() is None, server.log[-3000:]
    assert failures == [], (failures[:5], server.log[-3000:])
    assert len(answered) > 100 and set(answered) == {200}
    assert "Traceback" not in server.log, server.log[-3000:]


def test_garbled_channel_messages_are_logged_and_the_master_serves_on(start_server):
    server = start_server("--maxchildren", "1",
                          "--after-fork", "fixturesite_hooks.after_garbles_channel")
    wait_until(lambda: server.log.count("ignoring a malformed channel message") >= 4, 10,
               "four malformed channel messages logged", detail=lambda: server.log)
    assert server.get("/pid").status == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.log, server.log


def test_term_while_a_reload_imports_the_new_code_stops_cleanly(start_server, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "fixturesite_code.py").write_text('VERSION = "first"\n')
    pidfile = tmp_path / "site.pid"
    server = start_server("--maxchildren", "2", "--pidfile", str(pidfile),
                          "--pythonpath", str(code), env={"PYTHONDONTWRITEBYTECODE": "1"})
    children = server.children()
    # The new code takes a while to import: in the probe, then in the new image.
    (code / "fixturesite_code.py").write_text('import time\ntime.sleep(3)\nVERSION = "2"\n')

    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "re-executing the master" in server.log, 15, "the reload to start",
               detail=lambda: server.log)
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)

    assert_stopped_clean(server, pidfile, children)
    assert "graceful stop" in server.log


def test_a_second_term_while_a_reload_imports_stops_now_and_cleans_up(start_server,
                                                                      tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "fixturesite_code.py").write_text('VERSION = "first"\n')
    pidfile = tmp_path / "site.pid"
    server = start_server("--maxchildren", "2", "--pidfile", str(pidfile),
                          "--pythonpath", str(code), env={"PYTHONDONTWRITEBYTECODE": "1"})
    children = server.children()
    (code / "fixturesite_code.py").write_text('import time\ntime.sleep(3)\nVERSION = "2"\n')
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "re-executing the master" in server.log, 15, "the reload to start",
               detail=lambda: server.log)
    # Two TERMs pending at once are one: wait until the new image takes them one by one.
    wait_until(lambda: new_image(server.process.pid)
               and catches(server.process.pid, signal.SIGTERM), 10,
               "the re-executed master to catch TERM")

    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    assert_stopped_clean(server, pidfile, children)
    assert time.monotonic() - started < 2.5
    assert "SIGTERM while starting: stopped before serving" in server.log


@pytest.mark.parametrize("method, first, second", [
    ("prefork", "SIGTERM", "SIGQUIT"),
    ("prefork", "SIGTERM", "SIGTERM"),
    ("prefork", "SIGINT", "SIGINT"),
    ("threaded", "SIGTERM", "SIGQUIT"),
    ("threaded", "SIGTERM", "SIGTERM"),
])
def test_a_second_stop_signal_during_a_graceful_stop_stops_now(start_server, tmp_path,
                                                                method, first, second):
    pidfile = tmp_path / "site.pid"
    server = start_server("--method", method, "--maxchildren", "2", "--pidfile",
                          str(pidfile), "--graceful-timeout", "60")
    children = server.children()
    stuck = in_thread(server.get, "/sleep?seconds=20")
    sleeping_child(server, "20")

    server.process.send_signal(getattr(signal, first))
    wait_until(lambda: not os.path.exists(server.socket), 3, "the socket file to be removed")
    time.sleep(0.5)
    assert server.process.poll() is None  # graceful: still waiting for the request
    started = time.monotonic()
    server.process.send_signal(getattr(signal, second))

    assert_stopped_clean(server, pidfile, children)
    assert time.monotonic() - started < 3
    stuck["thread"].join(5)


@pytest.mark.parametrize("logging_config", ["plain", "takes-safefcgi"])
def test_safefcgi_lines_reach_its_stream_whatever_the_projects_logging(start_server,
                                                                       logging_config):
    # "plain" leaves disable_existing_loggers out: dictConfig defaults it to True.
    server = start_server("--maxchildren", "1", env={"FIXTURESITE_LOGGING": logging_config})
    victim = int(server.get("/pid").body)
    os.kill(victim, signal.SIGKILL)
    with socket.socket(socket.AF_UNIX) as garbage:  # a child's line, from the FastCGI layer
        garbage.connect(server.socket)
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
        garbage.recv(100)

    assert "safefcgi serving fixturesite_settings" in server.log
    wait_until(lambda: f"child {victim} killed by SIGKILL" in server.log, 10,
               "the line naming the killed child", detail=lambda: server.log)
    wait_until(lambda: "malformed FastCGI input" in server.log, 10,
               "the malformed-input line", detail=lambda: server.log)

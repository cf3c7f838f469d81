"""`manage.py runfcgi` and the fd-0 (spawned by the web server) deployment shape."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from safefcgi.config import OPTIONS
from safefcgi.fastcgi import client
from tests.support.paths import PROJECT
from tests.support.processes import Process
from tests.support.servers import answers, root_permission
from tests.support.waiting import wait_until

ALLOW_ROOT = ["allow_root=true"] if root_permission([]) else []  # runfcgi-style word too


def manage(*args, timeout=20, **kwargs):
    return subprocess.run([sys.executable, str(PROJECT / "manage.py"), *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


@pytest.fixture
def manage_server(tmp_path):
    """Start `manage.py runfcgi ...` in the foreground; kill its process group afterwards."""
    started = []

    def start(*args) -> subprocess.Popen:
        process = Process("manage.py runfcgi",
                          [sys.executable, PROJECT / "manage.py", "runfcgi", *args, *ALLOW_ROOT],
                          tmp_path / "manage.log", cwd=PROJECT).start()
        started.append(process)
        return process.popen

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def test_old_command_line_serves_unchanged(manage_server, tmp_path):
    sock = str(tmp_path / "mysite.sock")
    process = manage_server("method=prefork", f"socket={sock}", "daemonize=false",
                            "maxchildren=2", f"pidfile={tmp_path / 'mysite.pid'}")
    wait_until(lambda: answers(sock), 15, "runfcgi to answer")
    assert int((tmp_path / "mysite.pid").read_text()) == process.pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert not os.path.exists(sock) and not (tmp_path / "mysite.pid").exists()


def test_dashed_spellings_work_in_manage_py_too(manage_server, tmp_path):
    sock = str(tmp_path / "dashed.sock")
    manage_server("--method", "prefork", "--socket", sock, "--no-daemonize",
                  "--maxchildren", "1")
    wait_until(lambda: answers(sock), 15, "runfcgi to answer")


def test_like_runfcgi_it_daemonizes_when_given_a_socket(tmp_path):
    sock = str(tmp_path / "daemon.sock")
    pidfile = tmp_path / "daemon.pid"
    result = manage("runfcgi", "method=fork", f"socket={sock}", f"pidfile={pidfile}",
                    "maxchildren=1", f"errlog={tmp_path / 'err.log'}", *ALLOW_ROOT)
    assert result.returncode == 0  # returned at once: the server went to the background
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10,
               "the daemon to write its pid file")
    daemon_pid = int(pidfile.read_text())
    try:
        wait_until(lambda: answers(sock), 15, "the daemon to answer")
        assert os.readlink(f"/proc/{daemon_pid}/cwd") == "/"  # runfcgi's workdir default
    finally:
        os.kill(daemon_pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists(), 10, "the pid file to be removed")


@pytest.mark.parametrize("word, message", [
    ("protocol=scgi", "only fcgi is served"),
    ("protocol=ajp", "only fcgi is served"),
    ("maxchildren=lots", "bad value 'lots' for option 'maxchildren'"),
    ("colour=blue", "unknown option 'colour'"),
])
def test_bad_runfcgi_words_are_one_line_errors(word, message):
    result = manage("runfcgi", word, "daemonize=false")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_lists_every_runfcgi_key_with_its_default():
    result = manage("help", "runfcgi")
    table = result.stdout.split("runfcgi keys")[1]
    keys = [option.runfcgi for option in OPTIONS if option.runfcgi]
    assert len(keys) == 16  # runfcgi's vocabulary; the unit tests pin the words
    for key in keys:
        line = next(line for line in table.splitlines()
                    if line.strip().startswith(f"{key}="))
        assert "[default:" in line


def test_runfcgi_help_word_prints_help():
    result = manage("runfcgi", "help")
    assert result.returncode == 0 and "maxchildren=" in result.stdout


def test_runfcgi_spelling_starts_the_same_server(start_server, tmp_path):
    sock = str(tmp_path / "old.sock")
    server = start_server("method=prefork", f"socket={sock}", "maxchildren=2",
                          "daemonize=false", wait=False)
    server.socket = sock
    server.wait_until_serving()
    assert server.get("/pid").status == 200


# -- fd 0: the socket handed over by the web server ----------------------------------

def test_spawn_fcgi_hands_over_its_socket_on_fd0(tmp_path):
    sock = str(tmp_path / "spawned.sock")
    spawner = Process("spawn-fcgi", [
        shutil.which("spawn-fcgi"), "-n", "-s", sock, "--", sys.executable, "-m", "safefcgi",
        "run", "fixturesite_settings", "--pythonpath", PROJECT, "--maxchildren", "2",
        *root_permission([])], tmp_path / "spawned.log").start()
    try:
        wait_until(lambda: answers(sock), 15, "the spawned server to answer",
                   detail=spawner.log)
        pids = {client.request(sock, "/pid").body for _ in range(4)}
        assert pids and all(pid.isdigit() for pid in pids)
        spawner.send_signal(signal.SIGTERM)  # spawn-fcgi -n exec'd safefcgi: same pid
        assert spawner.popen.wait(10) == 0
    finally:
        spawner.stop(signal.SIGKILL)


def test_no_address_and_stdin_not_a_socket_is_one_line_error():
    result = subprocess.run([sys.executable, "-m", "safefcgi", "run", "fixturesite_settings",
                             "--pythonpath", str(PROJECT), *root_permission([])],
                            stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "standard input is not a listening socket" in errors[0]


def test_no_address_and_stdin_a_connected_socket_is_refused():
    left, right = socket.socketpair()
    with left, right:
        result = subprocess.run([sys.executable, "-m", "safefcgi", "run",
                                 "fixturesite_settings", "--pythonpath", str(PROJECT),
                                 *root_permission([])],
                                stdin=left.fileno(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "not listening" in result.stderr

"""The server process itself: detaching, one server per pid file, working directory, log files."""

import os
import signal
import subprocess

import pytest

from safefcgi.fastcgi import client
from tests.support.processes import alive
from tests.support.servers import answers, root_permission, run_fixture_server
from tests.support.waiting import wait_until


@pytest.mark.parametrize("left_behind", [False, True], ids=["no pid file", "stale pid file"])
def test_the_pid_file_holds_the_master_pid_and_is_removed_on_exit(start_server, tmp_path,
                                                                  left_behind):
    pidfile = tmp_path / "site.pid"
    if left_behind:  # what a crashed server leaves: the pid of a process that is gone
        dead = subprocess.Popen(["true"])
        dead.wait()
        pidfile.write_text(f"{dead.pid}\n")
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
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10,
               "the daemon to write its pid file")
    daemon_pid = int(pidfile.read_text())
    try:
        assert daemon_pid != launcher.process.pid
        wait_until(lambda: answers(launcher.socket), 10, "the daemon to answer")
        # a session of its own, apart from ours and the launcher's: no terminal to lose
        assert os.getsid(daemon_pid) not in (os.getsid(0), launcher.process.pid)
        assert "serving fixturesite_settings" in errlog.read_text()
    finally:
        os.kill(daemon_pid, signal.SIGTERM)
    wait_until(lambda: not alive(daemon_pid), 10, "the daemon to exit")
    assert not pidfile.exists() and not os.path.exists(launcher.socket)


@pytest.mark.parametrize("detach", [[], ["--daemonize"]], ids=["foreground", "daemonize"])
def test_a_second_server_with_a_live_pid_file_is_refused(start_server, tmp_path, detach):
    pidfile = tmp_path / "site.pid"
    first = start_server("--pidfile", str(pidfile))
    result = run_fixture_server("--socket", str(tmp_path / "other.sock"),
                                "--pidfile", str(pidfile), *detach, *root_permission([]))
    assert result.returncode == 1
    assert f"pid file {pidfile} names pid {first.process.pid}, which is still running" \
        in result.stderr
    assert int(pidfile.read_text()) == first.process.pid
    assert not (tmp_path / "other.sock").exists()
    assert first.get("/pid").status == 200


def test_the_pid_file_survives_a_reload_and_names_the_same_master(start_server, tmp_path):
    pidfile = tmp_path / "site.pid"
    server = start_server("--pidfile", str(pidfile), "--maxchildren", "1")
    old_children = server.children()
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: server.children() and not (server.children() & old_children), 10,
               "new children after the reload")
    assert int(pidfile.read_text()) == server.process.pid
    assert client.request(server.socket, "/pid").status == 200


def test_workdir_and_outlog(start_server, tmp_path):
    outlog = tmp_path / "out.log"
    server = start_server("--workdir", str(tmp_path), "--outlog", str(outlog))
    wait_until(lambda: os.readlink(f"/proc/{server.process.pid}/cwd") == str(tmp_path), 10,
               "the server to change to its workdir")
    assert outlog.exists()
    assert client.request(server.socket, "/pid").status == 200

"""Who children run as, who may connect, and one server per pid file."""

import grp
import os
import pwd
import signal
import stat
import subprocess
import sys

import pytest

from safefcgi.fastcgi import client

from .conftest import PROJECT, wait_for
from .helpers import free_tcp_port

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="switching users needs the tests to run as root")


def run_server(*args, timeout=20):
    """Run safefcgi to completion, exactly with these arguments (no --allow-root added)."""
    return subprocess.run([sys.executable, "-m", "safefcgi", "run", "fixturesite_settings",
                           "--pythonpath", str(PROJECT), *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def uids_of(pid: int) -> tuple[int, int]:
    """(real uid, real gid) from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])


@needs_root
def test_children_run_as_the_given_user_and_group(start_server):
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrnam("nogroup")
    server = start_server("--user", "nobody", "--group", "nogroup", "--maxchildren", "2")
    pid = int(server.get("/pid").body)
    assert uids_of(pid) == (nobody.pw_uid, nogroup.gr_gid)
    # A child drops privileges right after fork: one just forked may still be root.
    assert wait_for(lambda: all(uids_of(child) == (nobody.pw_uid, nogroup.gr_gid)
                                for child in server.children()))
    assert uids_of(server.process.pid) == (0, 0)  # the parent never serves a request


@needs_root
def test_children_refuse_to_serve_as_root_without_allow_root(tmp_path):
    result = run_server("--socket", str(tmp_path / "s.sock"))
    assert result.returncode == 1
    assert "refusing to serve requests as root: give --user" in result.stderr
    assert not (tmp_path / "s.sock").exists()


@needs_root
def test_user_root_still_needs_allow_root(tmp_path):
    result = run_server("--socket", str(tmp_path / "s.sock"), "--user", "root")
    assert result.returncode == 1
    assert "--user root is root" in result.stderr


def test_an_unknown_user_is_a_usage_error(tmp_path):
    result = run_server("--socket", str(tmp_path / "s.sock"), "--user", "no-such-user-here")
    assert result.returncode == 2
    assert result.stderr.strip() == "safefcgi: error: unknown user 'no-such-user-here'"


@needs_root
def test_socket_mode_and_owner_let_exactly_the_web_server_in(start_server):
    server = start_server("--socket-mode", "0660", "--socket-owner", "nobody:www-data")
    info = os.stat(server.socket)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (pwd.getpwnam("nobody").pw_uid,
                                          grp.getgrnam("www-data").gr_gid)
    assert server.get("/pid").status == 200


def test_socket_mode_without_a_unix_socket_is_refused():
    result = run_server("--host", "127.0.0.1", "--port", "9", "--socket-mode", "0660")
    assert result.returncode == 2
    assert "--socket-mode applies to a unix socket" in result.stderr


def _tcp_server(start_server, *args, env=None):
    port = free_tcp_port()
    server = start_server("--host", "127.0.0.1", "--port", str(port), "--maxchildren", "1",
                          *args, env=env, wait=False)
    server.socket = ("127.0.0.1", port)
    return server


def test_allowed_clients_serves_listed_peers(start_server):
    server = _tcp_server(start_server, "--allowed-clients", "10.0.0.0/8,127.0.0.1,::1")
    server.wait_until_serving()
    assert server.get("/pid").status == 200


@pytest.mark.parametrize("method", ["prefork", "threaded"])
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_peer_not_allowed_is_closed_without_an_answer(start_server, how, method):
    if how == "option":
        server = _tcp_server(start_server, "--method", method,
                             "--allowed-clients", "10.0.0.0/8, 2001:db8::/32")
    else:
        server = _tcp_server(start_server, "--method", method,
                             env={"FCGI_WEB_SERVER_ADDRS": "192.0.2.7"})
    source = "--allowed-clients" if how == "option" else "FCGI_WEB_SERVER_ADDRS"
    assert wait_for(lambda: f"({source})" in server.log)
    with pytest.raises(ConnectionError):
        server.get("/pid", timeout=5)
    assert wait_for(lambda: f"refused a connection from 127.0.0.1: not allowed by {source}"
                    in server.log)
    assert server.process.poll() is None


def test_a_bad_allowed_clients_entry_is_named():
    result = run_server("--host", "127.0.0.1", "--port", "9",
                        "--allowed-clients", "127.0.0.1,10.0.0.300")
    assert result.returncode == 2
    assert "'10.0.0.300' is not an IP address or network" in result.stderr


@pytest.mark.parametrize("detach", [[], ["--daemonize"]], ids=["foreground", "daemonize"])
def test_a_second_server_with_a_live_pid_file_is_refused(start_server, tmp_path, detach):
    pidfile = tmp_path / "site.pid"
    first = start_server("--pidfile", str(pidfile))
    result = run_server("--socket", str(tmp_path / "other.sock"), "--pidfile", str(pidfile),
                        *detach, *(["--allow-root"] if os.geteuid() == 0 else []))
    assert result.returncode == 1
    assert f"pid file {pidfile} names pid {first.process.pid}, which is still running" \
        in result.stderr
    assert int(pidfile.read_text()) == first.process.pid
    assert not (tmp_path / "other.sock").exists()
    assert first.get("/pid").status == 200


def test_a_stale_pid_file_is_replaced(start_server, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "site.pid"
    pidfile.write_text(f"{dead.pid}\n")
    server = start_server("--pidfile", str(pidfile))
    assert int(pidfile.read_text()) == server.process.pid
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_exit(5) == 0
    assert not pidfile.exists()


def test_the_pid_file_survives_a_reload_and_names_the_same_master(start_server, tmp_path):
    pidfile = tmp_path / "site.pid"
    server = start_server("--pidfile", str(pidfile), "--maxchildren", "1")
    old_children = server.children()
    server.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: server.children() and not (server.children() & old_children))
    assert int(pidfile.read_text()) == server.process.pid
    assert client.request(server.socket, "/pid").status == 200

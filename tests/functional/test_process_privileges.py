"""Who children run as and who may connect."""

import grp
import os
import pwd
import stat

import pytest

from tests.support.ports import free_tcp_port
from tests.support.servers import run_fixture_server
from tests.support.waiting import wait_until

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="switching users needs the tests to run as root")


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
    wait_until(lambda: all(uids_of(child) == (nobody.pw_uid, nogroup.gr_gid)
                                for child in server.children()),
               10, "every child to run as nobody:nogroup")
    assert uids_of(server.process.pid) == (0, 0)  # the parent never serves a request


@needs_root
def test_children_refuse_to_serve_as_root_without_allow_root(tmp_path):
    result = run_fixture_server("--socket", str(tmp_path / "s.sock"))
    assert result.returncode == 1
    assert "refusing to serve requests as root: give --user" in result.stderr
    assert not (tmp_path / "s.sock").exists()


@needs_root
def test_user_root_still_needs_allow_root(tmp_path):
    result = run_fixture_server("--socket", str(tmp_path / "s.sock"), "--user", "root")
    assert result.returncode == 1
    assert "--user root is root" in result.stderr


def test_an_unknown_user_is_a_usage_error(tmp_path):
    result = run_fixture_server("--socket", str(tmp_path / "s.sock"),
                                "--user", "no-such-user-here")
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
    result = run_fixture_server("--host", "127.0.0.1", "--port", "9", "--socket-mode", "0660")
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
    wait_until(lambda: f"({source})" in server.log, 10, "the allow list to be logged")
    with pytest.raises(ConnectionError):
        server.get("/pid", timeout=5)
    wait_until(lambda: f"refused a connection from 127.0.0.1: not allowed by {source}"
                    in server.log, 10, "the refused connection to be logged")
    assert server.process.poll() is None


def test_a_bad_allowed_clients_entry_is_named():
    result = run_fixture_server("--host", "127.0.0.1", "--port", "9",
                                "--allowed-clients", "127.0.0.1,10.0.0.300")
    assert result.returncode == 2
    assert "'10.0.0.300' is not an IP address or network" in result.stderr

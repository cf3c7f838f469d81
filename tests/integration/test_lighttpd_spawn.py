"""lighttpd starts safefcgi itself (bin-path): the socket arrives on fd 0.

Runs the shipped conf/lighttpd-spawn.conf, rewriting only its var lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.lighttpd_conf import render_lighttpd_conf
from tests.support.paths import CONF, EXAMPLE_DIR, EXAMPLE_SETTINGS, VENV_BIN
from tests.support.ports import free_tcp_port
from tests.support.processes import Process, alive, descendants
from tests.support.waiting import wait_until
from tests.support.webservers import http_get, lighttpd_binary

SPAWN_CONF = CONF / "lighttpd-spawn.conf"

pytestmark = pytest.mark.integration


@pytest.fixture
def spawning_lighttpd(tmp_path: Path):
    port = free_tcp_port()
    docroot = tmp_path / "htdocs"
    docroot.mkdir()
    conf = tmp_path / "lighttpd-spawn.conf"
    command = (f"{VENV_BIN / 'safefcgi'} run --pythonpath {EXAMPLE_DIR} --maxchildren 3 "
               f"--errlog {tmp_path / 'safefcgi.log'}")
    if os.geteuid() == 0:
        command += " --allow-root"  # lighttpd keeps root here: server_user is left empty
    conf.write_text(render_lighttpd_conf(SPAWN_CONF.read_text(), {
        "safefcgi_socket": str(tmp_path / "spawned.sock"),
        "safefcgi_command": command,
        "settings_module": EXAMPLE_SETTINGS,
        "server_bind": "127.0.0.1",
        "server_port": port,
        "document_root": str(docroot),
        "error_log": str(tmp_path / "lighttpd-error.log"),
        "pid_file": str(tmp_path / "lighttpd.pid"),
        "server_user": "",
        "server_group": "",
    }))
    lighttpd = Process("lighttpd", [lighttpd_binary(), "-D", "-f", conf],
                       tmp_path / "lighttpd.log").start()
    url = f"http://127.0.0.1:{port}"

    def serves() -> bool:
        try:
            return http_get(url, "/hello", timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(serves, 30, "lighttpd and the safefcgi it spawned to answer")
        yield lighttpd, url, tmp_path
    finally:
        lighttpd.stop()


def test_lighttpd_spawned_safefcgi_serves_on_the_socket_it_was_given(spawning_lighttpd):
    lighttpd, url, tmp_path = spawning_lighttpd
    statuses = [http_get(url, "/hello")[0] for _ in range(20)]
    assert statuses == [200] * 20
    log = (tmp_path / "safefcgi.log").read_text()
    assert "on fd:0 (passed by the web server)" in log
    assert f"serving {EXAMPLE_SETTINGS}" in log  # taken from bin-environment


def test_stopping_lighttpd_stops_safefcgi_and_its_children(spawning_lighttpd):
    lighttpd, url, _ = spawning_lighttpd
    tree = descendants(lighttpd.pid)
    assert len(tree) >= 2  # the safefcgi master and at least one child
    lighttpd.send_signal(15)  # an operator's `kill`, to lighttpd alone
    assert lighttpd.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in tree), 10,
               "every safefcgi process to exit")
    assert not any(alive(pid) for pid in tree)

"""Process management behind lighttpd: reload under load, graceful stop, crashes, timeouts.

These run the small fixture project of the functional tests (no database
needed) behind the shipped lighttpd configuration, with real signals.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.load import BackgroundLoad
from tests.support.servers import fixturesite_argv, sleeping_child
from tests.support.threads import in_thread
from tests.support.waiting import wait_until
from tests.support.webservers import http_get

pytestmark = pytest.mark.integration

LOAD_SECONDS = 20.0  # hard bound of every load loop


@pytest.fixture
def code_dir(tmp_path):
    directory = tmp_path / "code"
    directory.mkdir()
    (directory / "fixturesite_code.py").write_text("VERSION = 'first'\n")
    return directory


@pytest.fixture
def site_env():
    return {"PYTHONDONTWRITEBYTECODE": "1"}  # a rewrite in the same second is new code


def queued_connections(socket_path: Path) -> int:
    """Connections waiting in the listen backlog of a unix socket (Recv-Q in ss)."""
    out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == str(socket_path):
            return int(fields[2])
    return 0


def test_reload_under_load_fails_nothing_and_serves_new_code(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, "--pythonpath", code_dir, "--maxchildren", "4")
    with BackgroundLoad(site.url, "/version") as load:
        wait_until(lambda: load.total()[b"first"] >= 20, 10, "load on the old code")
        (code_dir / "fixturesite_code.py").write_text("VERSION = 'second, longer'\n")
        site.server.send_signal(signal.SIGHUP)
        wait_until(lambda: all(b[b"second, longer"] >= 10 for b in load.bodies), LOAD_SECONDS,
                   "every client to see the new code",
                   detail=lambda: f"answers per client: {load.bodies}\n{site.diagnostics()}")
    assert load.failures == [], site.diagnostics()
    assert set(load.total()) == {b"first", b"second, longer"}
    assert site.server.is_running()


def test_graceful_stop_finishes_every_slow_request(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, "--pythonpath", code_dir, "--maxchildren", "3")
    requests = [in_thread(http_get, site.url, "/sleep?seconds=1.5", 15) for _ in range(5)]
    wait_until(lambda: site.log.count("sleeps 1.5") == 3, 10, "three busy children")
    # Only what lighttpd already handed to us counts as accepted: wait for both to queue.
    wait_until(lambda: queued_connections(site.socket_path) == 2, 10, "two queued requests")

    site.server.send_signal(signal.SIGTERM)

    for request in requests:
        request["thread"].join(15)
    results = [request.get("value", (None, b"")) for request in requests]
    assert [status for status, _ in results] == [200] * 5, site.diagnostics()
    assert all(body.startswith(b"slept in") for _, body in results)
    assert site.server.wait(10)


def test_sigkill_of_a_child_under_load_fails_only_its_request(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, "--pythonpath", code_dir, "--minspare", "2",
                 "--maxspare", "4", "--maxchildren", "4")
    victim = in_thread(http_get, site.url, "/sleep?seconds=5", 15)
    pid = sleeping_child(site, "5")
    with BackgroundLoad(site.url, "/pid", clients=3) as load:
        wait_until(lambda: load.served() >= 30, 10, "load")
        os.kill(pid, signal.SIGKILL)
        served_before = load.served()
        wait_until(lambda: load.served() >= served_before + 60, 10,
                   "service to go on after the kill")
    victim["thread"].join(15)
    assert "error" in victim or victim["value"][0] != 200, victim
    assert load.failures == [], site.diagnostics()
    assert f"child {pid} killed by SIGKILL while serving GET /sleep?seconds=5" \
        in site.log


def test_timeout_kills_a_hung_view_and_the_next_request_succeeds(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, "--pythonpath", code_dir, "--maxchildren", "1",
                 "--timeout", "1")
    started = time.monotonic()
    status, _ = http_get(site.url, "/sleep?seconds=30", timeout=15)
    assert status >= 500
    assert time.monotonic() - started < 10
    assert http_get(site.url, "/hello")[0] == 200
    assert re.search(r"child \d+ busy for 1\.\d s on GET /sleep\?seconds=30 "
                     r"\(over --timeout 1 s\)", site.log)

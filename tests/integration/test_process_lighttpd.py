"""Process management behind lighttpd: reload under load, graceful stop, crashes, timeouts.

These run the small fixture project of the functional tests (no database
needed) behind the shipped lighttpd configuration, with real signals.
"""

import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.functional.conftest import PROJECT

from .harness import VENV_BIN, http_get, wait_until

pytestmark = pytest.mark.integration

LOAD_SECONDS = 20.0  # hard bound of every load loop


def fixturesite_argv(socket_path: Path, code_dir: Path, *options) -> list:
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    return [VENV_BIN / "safefcgi", "run", "fixturesite_settings", "--pythonpath", PROJECT,
            "--pythonpath", code_dir, "--socket", socket_path, *as_root, *options]


@pytest.fixture
def code_dir(tmp_path):
    directory = tmp_path / "code"
    directory.mkdir()
    (directory / "fixturesite_code.py").write_text("VERSION = 'first'\n")
    return directory


@pytest.fixture
def site_env():
    return {"PYTHONDONTWRITEBYTECODE": "1"}  # a rewrite in the same second is new code


class Load:
    """Client threads requesting ``path`` until stopped, at most ``count`` each (and
    LOAD_SECONDS): the count is high enough that a fast server outlives a reload."""

    def __init__(self, url: str, path: str, clients: int = 4, count: int = 20000):
        self.url, self.path, self.count = url, path, count
        self.bodies: list[Counter] = [Counter() for _ in range(clients)]
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(LOAD_SECONDS)

    def _run(self, number: int) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        for _ in range(self.count):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = http_get(self.url, self.path, timeout=10)
            except OSError as exc:
                self.failures.append(f"client {number}: {exc!r}")
                continue
            if status != 200:
                self.failures.append(f"client {number}: HTTP {status}")
            else:
                self.bodies[number][body] += 1

    def total(self) -> Counter:
        return sum(self.bodies, Counter())


def sleeping_child(site, seconds: str) -> int:
    pattern = re.compile(rf"child (\d+) sleeps {re.escape(seconds)}$", re.MULTILINE)
    wait_until(lambda: pattern.search(site.server_log()), 10, f"a child to sleep {seconds}")
    return int(pattern.search(site.server_log()).group(1))


def queued_connections(socket_path: Path) -> int:
    """Connections waiting in the listen backlog of a unix socket (Recv-Q in ss)."""
    out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == str(socket_path):
            return int(fields[2])
    return 0


def get_in_thread(url: str, path: str, results: list) -> threading.Thread:
    def run():
        try:
            results.append(http_get(url, path, timeout=15))
        except OSError as exc:
            results.append((None, repr(exc).encode()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_reload_under_load_fails_nothing_and_serves_new_code(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, code_dir, "--maxchildren", "4")
    with Load(site.url, "/version") as load:
        wait_until(lambda: load.total()[b"first"] >= 20, 10, "load on the old code")
        (code_dir / "fixturesite_code.py").write_text("VERSION = 'second, longer'\n")
        site.server.send_signal(signal.SIGHUP)
        wait_until(lambda: all(b[b"second, longer"] >= 10 for b in load.bodies), LOAD_SECONDS,
                   "every client to see the new code")
    assert load.failures == [], site.diagnostics()
    assert set(load.total()) == {b"first", b"second, longer"}
    assert site.server.is_running()


def test_graceful_stop_finishes_every_slow_request(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, code_dir, "--maxchildren", "3")
    results: list = []
    threads = [get_in_thread(site.url, "/sleep?seconds=1.5", results) for _ in range(5)]
    wait_until(lambda: site.server_log().count("sleeps 1.5") == 3, 10, "three busy children")
    # Only what lighttpd already handed to us counts as accepted: wait for both to queue.
    wait_until(lambda: queued_connections(site.socket_path) == 2, 10, "two queued requests")

    site.server.send_signal(signal.SIGTERM)

    for thread in threads:
        thread.join(15)
    assert [status for status, _ in results] == [200] * 5, site.diagnostics()
    assert all(body.startswith(b"slept in") for _, body in results)
    assert site.server.wait(10)


def test_sigkill_of_a_child_under_load_fails_only_its_request(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, code_dir, "--minspare", "2", "--maxspare", "4",
                 "--maxchildren", "4")
    victim: list = []
    victim_thread = get_in_thread(site.url, "/sleep?seconds=5", victim)
    pid = sleeping_child(site, "5")
    with Load(site.url, "/pid", clients=3) as load:
        wait_until(lambda: sum(load.total().values()) >= 30, 10, "load")
        os.kill(pid, signal.SIGKILL)
        served_before = sum(load.total().values())
        wait_until(lambda: sum(load.total().values()) >= served_before + 60, 10,
                   "service to go on after the kill")
    victim_thread.join(15)
    assert victim[0][0] != 200
    assert load.failures == [], site.diagnostics()
    assert f"child {pid} killed by SIGKILL while serving GET /sleep?seconds=5" \
        in site.server_log()


def test_timeout_kills_a_hung_view_and_the_next_request_succeeds(serve, site_env, code_dir):
    site = serve(site_env, fixturesite_argv, code_dir, "--maxchildren", "1", "--timeout", "1")
    started = time.monotonic()
    status, _ = http_get(site.url, "/sleep?seconds=30", timeout=15)
    assert status >= 500
    assert time.monotonic() - started < 10
    assert http_get(site.url, "/hello")[0] == 200
    assert re.search(r"child \d+ busy for 1\.\d s on GET /sleep\?seconds=30 "
                     r"\(over --timeout 1 s\)", site.server_log())

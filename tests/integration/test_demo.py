"""bin/demo, run as a newcomer runs it: the page shows what safefcgi is for.

Both modes: SQLite (no server to install) and --postgres (a throwaway cluster
that must be gone after Ctrl-C). The page must name the child that answered,
show that its connection was opened by that child, the import-time query the
master ran, the fork-time warning, and link to a status page that answers.
"""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.ports import free_tcp_port
from tests.support.waiting import wait_until
from tests.support.webservers import http_get

pytestmark = pytest.mark.integration

START_TIMEOUT = 180  # the first run migrates a database, the second starts PostgreSQL
STOP_TIMEOUT = 30


class Demo:
    """bin/demo in its own process group, its output in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tmp_path / "demo.out"
        env = {**os.environ, "DEMO_PORT": str(self.port), "DEMO_DIR": str(tmp_path / "demo")}
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen([REPO / "bin" / "demo", *args], stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_until_serving(self) -> None:
        def serving() -> bool:
            assert self.process.poll() is None, f"bin/demo exited:\n{self.text()}"
            try:
                return http_get(self.url, "/hello")[0] == 200
            except OSError:
                return False

        wait_until(serving, START_TIMEOUT, "bin/demo to serve")

    def page(self) -> str:
        status, body = http_get(self.url, "/", timeout=10)
        assert status == 200, body
        return body.decode()

    def ctrl_c(self) -> int:
        """What Ctrl-C in the terminal does: SIGINT to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            left = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:20,args", "-g",
                                   str(self.process.pid)], capture_output=True, text=True)
            raise AssertionError(f"bin/demo still runs {STOP_TIMEOUT} s after Ctrl-C:\n"
                                 f"{left.stdout}\n{self.text()}") from None
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


def field(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.DOTALL)
    assert match, f"no #{element_id} on the page:\n{page}"
    return " ".join(html.unescape(match.group(1)).split())


@pytest.fixture
def demo(tmp_path: Path):
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        started.append(Demo(tmp_path, *args))
        started[-1].wait_until_serving()
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.ctrl_c()


def children_and_backends(demo: Demo, rounds: int = 10) -> dict[int, set[str]]:
    """(child pid -> backend pids) seen over rounds of concurrent page loads.

    Slow requests hold some children busy meanwhile, so that others answer.
    """
    seen: dict[int, set[str]] = {}
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(rounds):
            slow = [pool.submit(http_get, demo.url, "/host?sleep=0.3", 10) for _ in range(2)]
            pages = [pool.submit(demo.page) for _ in range(4)]
            for future in pages:
                page = future.result()
                seen.setdefault(int(field(page, "child-pid")), set()).add(
                    field(page, "backend-pid") if 'id="backend-pid"' in page else "")
            for future in slow:
                future.result()
            if len(seen) > 1:
                break
    return seen


def assert_page_shows_the_fork_story(demo: Demo) -> str:
    page = demo.page()
    master = re.search(r"ran in pid <code>(\d+)</code>", page)

    assert master, page
    assert f"its master: pid <code>{master.group(1)}</code>" in page
    assert int(field(page, "child-pid")) != int(master.group(1))
    assert field(page, "connection-owner") == "opened by this child"
    assert "was open at fork time" in field(page, "fork-warning")
    status_link = re.search(r'href="([^"]+)" id="status-link"', page)
    assert status_link, page
    status, body = http_get(demo.url, html.unescape(status_link.group(1)))
    assert status == 200 and b"idle" in body, body[:300]
    return page


def test_demo_on_sqlite_shows_the_child_its_own_connection_and_the_fork_warning(demo):
    running = demo()

    assert_page_shows_the_fork_story(running)
    assert len(children_and_backends(running)) > 1
    assert running.ctrl_c() is not None
    assert not running.group_alive()


def test_demo_on_postgres_shows_each_child_its_own_backend_and_removes_the_cluster(demo):
    running = demo("--postgres")
    page = assert_page_shows_the_fork_story(running)
    import_backend = re.search(r"answered by backend <code>(\d+)</code>", page)

    seen = children_and_backends(running)
    backends = [backend for child_backends in seen.values() for backend in child_backends]

    assert import_backend, page
    assert len(seen) > 1, seen
    assert all(len(child_backends) == 1 for child_backends in seen.values()), seen
    assert len(set(backends)) == len(backends), f"children shared a backend: {seen}"
    assert import_backend.group(1) not in backends
    cluster = re.search(r"starting a throwaway PostgreSQL in (\S+)", running.text())
    assert cluster and Path(cluster.group(1)).is_dir()

    assert running.ctrl_c() is not None
    assert not running.group_alive()
    assert not Path(cluster.group(1)).exists(), running.text()

"""Run real safefcgi processes against a tiny SQLite project, and clean them up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safefcgi.fastcgi import client

PROJECT = Path(__file__).parent / "project"
START_TIMEOUT = 15.0


def root_permission(args) -> list[str]:
    """--allow-root when the tests run as root and the test chose no --user itself."""
    if os.geteuid() == 0 and not any(str(a).startswith("--user") for a in args):
        return ["--allow-root"]
    return []


class RunningServer:
    """A ``safefcgi run`` process in its own process group, with its log in a file."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]):
        self.socket = str(tmp_path / "safefcgi.sock")
        self.log_path = tmp_path / "server.log"
        self.hook_log = tmp_path / "hooks.log"
        self.hook_log.touch()
        full_env = {**os.environ, "FIXTURESITE_HOOK_LOG": str(self.hook_log), **env}
        self.argv = [sys.executable, "-m", "safefcgi", "run", "fixturesite_settings",
                     "--pythonpath", str(PROJECT), *args]
        if not any(a in ("--socket", "--host") or a.startswith(("--socket=", "--host=", "socket="))
                   for a in args):
            self.argv += ["--socket", self.socket]
        self.argv += root_permission(args)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=full_env,
                                            start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_until_serving(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early ({self.process.returncode}):\n"
                                     f"{self.log}")
            try:
                client.request(self.socket, "/pid", timeout=5)
                return  # any whole response means a child is serving
            except (OSError, ConnectionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not answer within {timeout} s:\n{self.log}")

    def get(self, path: str, **kwargs) -> client.Response:
        return client.request(self.socket, path, **kwargs)

    def children(self) -> set[int]:
        """Pids whose parent is the server process."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                             capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def wait_for_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if self.wait_for_exit(10) is None:
                self.kill()
        self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


@pytest.fixture
def start_server(tmp_path):
    """Start safefcgi with extra arguments; everything started is killed afterwards."""
    servers = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True):
        server = RunningServer(tmp_path, list(args), env or {})
        servers.append(server)
        if wait:
            server.wait_until_serving()
        return server

    yield start
    for server in servers:
        server.stop()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll until predicate() is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

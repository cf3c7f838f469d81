"""The servers under test: safefcgi (and stock flup, the baseline) on the test projects.

``RunningServer`` is the functional tests' server: ``safefcgi run`` on the
fixture project, in its own process group, its log in a file. The ``*_argv``
builders give the command lines the integration tests run behind web servers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from safefcgi.fastcgi import client

from .paths import EXAMPLE_DIR, EXAMPLE_SETTINGS, PROJECT, SCRIPTS, VENV_BIN
from .processes import Process, children_of
from .waiting import wait_until

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# PROTOCOL_TESTS_SERVER=flup runs the protocol tests against stock flup6, to show
# which of them pin a flup bug. Options safefcgi has and flup lacks are ignored.
AGAINST_FLUP = os.environ.get("PROTOCOL_TESTS_SERVER") == "flup"


def root_permission(args: Iterable[object]) -> list[str]:
    """--allow-root when the tests run as root and the test chose no --user itself."""
    if os.geteuid() == 0 and not any(str(a).startswith("--user") for a in args):
        return ["--allow-root"]
    return []


def run_safefcgi(*args: str, timeout: float = 20, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m safefcgi ARGS`` to completion, output captured as text."""
    return subprocess.run([sys.executable, "-m", "safefcgi", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def run_fixture_server(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """``safefcgi run`` on the fixture project to completion, with exactly these arguments."""
    return run_safefcgi("run", "fixturesite_settings", "--pythonpath", str(PROJECT), *args,
                        timeout=timeout)


def answers(address) -> bool:
    """True when a server at ``address`` gives a whole response to /pid within 2 s."""
    try:
        return client.request(address, "/pid", timeout=2).status == 200
    except (OSError, ConnectionError):
        return False


class RunningServer:
    """``safefcgi run`` on the fixture project in its own process group, its log in a file."""

    name = "safefcgi"

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]):
        self.socket = str(tmp_path / "safefcgi.sock")
        argv = [sys.executable, "-m", "safefcgi", "run", "fixturesite_settings",
                "--pythonpath", str(PROJECT), *args]
        if not any(a in ("--socket", "--host") or a.startswith(("--socket=", "--host=", "socket="))
                   for a in args):
            argv += ["--socket", self.socket]
        self._launch(tmp_path, argv + root_permission(args), env)

    def _launch(self, tmp_path: Path, argv: list, env: dict[str, str]) -> None:
        self.argv = argv
        self.log_path = tmp_path / "server.log"
        self.hook_log = tmp_path / "hooks.log"
        self.hook_log.touch()
        full_env = {**os.environ, "FIXTURESITE_HOOK_LOG": str(self.hook_log), **env}
        self.group = Process(self.name, argv, self.log_path, env=full_env).start()
        self.process = self.group.popen

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(self._serving, timeout, f"{self.name} to answer on {self.socket}",
                   detail=lambda: self.log)

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"server exited early ({self.process.returncode}):\n"
                                 f"{self.log}")
        try:
            client.request(self.socket, "/pid", timeout=5)
        except (OSError, ConnectionError):
            return False
        return True  # any whole response means a child is serving

    def get(self, path: str, **kwargs) -> client.Response:
        return client.request(self.socket, path, **kwargs)

    def children(self) -> set[int]:
        """Pids whose parent is the server process."""
        return children_of(self.process.pid)

    def wait_for_exit(self, timeout: float) -> int | None:
        """The exit status, or None when the server still runs after ``timeout``."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM to the master as an operator sends it; SIGKILL to the group if it lingers."""
        self.group.stop(signal.SIGTERM, STOP_TIMEOUT, group=False)


class StockFlupServer(RunningServer):
    """Stock flup6 prefork (one child) on the fixture project."""

    name = "stock flup"

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]):
        self.socket = str(tmp_path / "flup.sock")
        self._launch(tmp_path, [sys.executable, str(PROJECT / "stock_flup_fixturesite.py"),
                                self.socket], env)


def start_fixture_server(tmp_path: Path, *args: str) -> RunningServer:
    """A serving server for the protocol tests: safefcgi, or stock flup (AGAINST_FLUP)."""
    server_class = StockFlupServer if AGAINST_FLUP else RunningServer
    server = server_class(tmp_path, list(args), {})
    try:
        server.wait_until_serving()
    except AssertionError:
        server.stop()
        raise
    return server


class LogWatch:
    """The server log lines written since this watch was made."""

    def __init__(self, server: RunningServer):
        self.server = server
        self.start = len(server.log.splitlines())

    def new_lines(self) -> list[str]:
        return self.server.log.splitlines()[self.start:]


def sleeping_child(server, seconds: str) -> int:
    """Wait until a child is inside the fixture project's /sleep?seconds=...; return its pid.

    ``server`` is anything with the server's log text as ``log``.
    """
    pattern = re.compile(rf"child (\d+) sleeps {re.escape(seconds)}$", re.MULTILINE)
    match = wait_until(lambda: pattern.search(server.log), 10, f"a child to sleep {seconds} s",
                       detail=lambda: server.log)
    return int(match.group(1))


def fixturesite_argv(socket_path: Path, *options: str | Path | int) -> list:
    """``safefcgi run`` on the fixture project through the virtualenv's console script."""
    return [VENV_BIN / "safefcgi", "run", "fixturesite_settings", "--pythonpath", PROJECT,
            "--socket", socket_path, *root_permission(options), *options]


def safefcgi_argv(socket_path: Path, method: str, *options: str | int) -> list:
    """``safefcgi run`` on the example project through the virtualenv's console script."""
    return [VENV_BIN / "safefcgi", "run", EXAMPLE_SETTINGS, "--pythonpath", EXAMPLE_DIR,
            "--method", method, "--socket", socket_path, *root_permission(options), *options]


def stock_flup_argv(socket_path: Path, maxchildren: int, maxrequests: int = 0) -> list:
    """Stock flup6 prefork on the example project, as ``manage.py runfcgi method=prefork``."""
    return [sys.executable, SCRIPTS / "stock_flup_server.py", EXAMPLE_SETTINGS,
            "--pythonpath", EXAMPLE_DIR, "--socket", socket_path,
            "--minspare", 1, "--maxspare", maxchildren,
            "--maxchildren", maxchildren, "--maxrequests", maxrequests]

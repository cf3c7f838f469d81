"""Processes the tests start, each in its own process group, and looks at process trees.

Every process is stopped by signalling its whole group, so a forked child can
never outlive a test; every wait is bounded.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .waiting import wait_until

logger = logging.getLogger("tests.support.processes")

STOP_TIMEOUT = 5.0
# PostgreSQL and pgbouncer refuse to run as root; when the tests run as root
# they run as this system user instead.
SERVICE_USER = "postgres"


class HarnessError(RuntimeError):
    """A component of the test setup could not be started."""


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for assertion messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment minus anything that would steer Django, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EXAMPLE_") and key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    env.update(extra)
    return env


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie is not alive for our purposes."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):  # gone, even between open and read
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def children_of(pid: int) -> set[int]:
    """Pids whose parent is ``pid``."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, timeout=30).stdout
    return {int(child) for child in out.split()}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True,
                         text=True, timeout=30).stdout
    parents: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        parents.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies.

    ``kill(-pgid, 0)`` would count zombies too, and orphans stay zombies
    forever in a container whose init does not reap them.
    """
    members = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path) as stat:
                text = stat.read()
        except OSError:  # the process ended while we looked
            continue
        # Fields after the command name, which may itself contain spaces and ')'.
        state, _ppid, group = text[text.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(text.split(maxsplit=1)[0]))
    return members


@dataclass(frozen=True)
class RunAs:
    """The system user a service runs as (None: the user running the tests)."""

    name: str | None

    @classmethod
    def service_user(cls) -> RunAs:
        return cls(SERVICE_USER if os.geteuid() == 0 else None)

    def popen_kwargs(self) -> dict:
        if self.name is None:
            return {}
        entry = pwd.getpwnam(self.name)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Hand ``path``, which the tests created, to this user (whatever the umask was)."""
        if self.name is not None:
            entry = pwd.getpwnam(self.name)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def run_logged(name: str, argv: list, cwd: Path, *, run_as: RunAs = RunAs(None),
               timeout: float = 120) -> None:
    """Run a setup command (initdb, ...) to completion, its output in ``cwd/NAME.log``.

    Fails with the end of that log when the command does.
    """
    log_path = cwd / f"{name}.log"
    with open(log_path, "wb") as log:
        completed = subprocess.run([str(arg) for arg in argv], stdout=log,
                                   stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout,
                                   **run_as.popen_kwargs())
    if completed.returncode != 0:
        raise HarnessError(f"{name} failed:\n{tail(log_path)}")


class Process:
    """A command running in its own process group with stdout and stderr in one log file."""

    def __init__(self, name: str, argv: list, log_path: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 run_as: RunAs = RunAs(None)) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self._run_as = run_as
        self._popen: subprocess.Popen | None = None

    def start(self) -> Process:
        logger.info("starting %s: %s", self.name, " ".join(map(str, self.argv)))
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                [str(arg) for arg in self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self._env is None else dict(self._env),
                cwd=self._cwd,
                start_new_session=True,
                **self._run_as.popen_kwargs(),
            )
        return self

    @property
    def popen(self) -> subprocess.Popen:
        assert self._popen is not None, f"{self.name} was never started"
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def group_is_alive(self) -> bool:
        """True while any process of the group (the leader or a child it forked) runs."""
        return bool(live_group_members(self.pid))

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the leader only, as an operator's ``kill`` would."""
        if self.is_running():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        """Wait for the leader to exit; True if it did within ``timeout``."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT, *,
             group: bool = True) -> None:
        """Signal the whole group (or only the leader), SIGKILL the group after ``timeout``."""
        if self._popen is None:
            return
        if group:
            self.signal_group(signum)
        else:
            self.send_signal(signum)
        if not self.wait(timeout):
            logger.warning("%s ignored signal %s; killing its process group", self.name, signum)
        self.signal_group(signal.SIGKILL)
        self._popen.wait()
        # Children of the leader may take a moment to be reaped by init.
        wait_until(lambda: not self.group_is_alive(), 5, f"{self.name}'s process group to exit")

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

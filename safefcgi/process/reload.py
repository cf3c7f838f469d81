"""Graceful reload (SIGHUP) with freshly imported code, keeping the master's pid.

A process cannot un-import a Django project, so the master re-executes
itself: same interpreter, same command line, same working directory, same
pid (what systemd and the pid file know). Across exec it keeps the listening
socket, the channels of its children, the idle kept-open connections it
watches and the ready queue they go through (see kept.py), whose fds are
marked inheritable and named in one environment variable; the new image
adopts those children as the old generation and retires them once fresh
children are ready. No kept-open connection is closed by a reload.

Before that, a probe process imports the new code with the same command
line. If the probe fails (a syntax error in a view, a broken setting) the
master logs it and does not exec: the old children keep serving.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from safefcgi.process import signals
from safefcgi.process.fds import flush_std_streams

log = logging.getLogger("safefcgi.reload")

HANDOVER_ENV = "SAFEFCGI_HANDOVER"
PROBE_ENV = "SAFEFCGI_RELOAD_PROBE"
EXEC_FAILED = 127


@dataclass
class Handover:
    """What a re-executed master inherits from the image before it."""

    listener_fd: int
    description: str
    unix_path: str | None = None
    unix_inode: int | None = None
    launch_dir: str = "/"
    children: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, channel fd)
    kept: list[tuple[int, int]] = field(default_factory=list)  # idle kept-open: fd, served
    queue: list[int] = field(default_factory=list)  # the ready queue: sending, receiving end

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Handover:
        data = json.loads(text)
        data["children"] = [(int(pid), fd) for pid, fd in data.get("children", [])]
        data["kept"] = [(int(fd), int(served)) for fd, served in data.get("kept", [])]
        return cls(**data)


def take_handover(environ: dict[str, str] | None = None) -> Handover | None:
    """The handover left by the previous image, removed from the environment."""
    env = os.environ if environ is None else environ
    text = env.pop(HANDOVER_ENV, None)
    return Handover.from_json(text) if text else None


def is_probe() -> bool:
    """True in the process that only checks whether the new code imports."""
    return os.environ.get(PROBE_ENV) == "1"


def command_line() -> list[str]:
    """The interpreter's own argv: works for ``python -m safefcgi`` and console scripts."""
    return list(sys.orig_argv)


@dataclass
class Reloader:
    """Starts the probe, and re-executes the master with its handover."""

    launch_dir: str
    listener: socket.socket
    description: str
    unix_path: str | None = None
    unix_inode: int | None = None

    def start_probe(self) -> int:
        """Fork and exec the probe; return its pid (the master reaps it)."""
        env = {**os.environ, PROBE_ENV: "1"}
        env.pop(HANDOVER_ENV, None)
        flush_std_streams()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - replaced by exec at once
            try:
                os.chdir(self.launch_dir)
                os.execve(sys.executable, command_line(), env)
            finally:
                os._exit(EXEC_FAILED)
        return pid

    def exec_master(self, children: list[tuple[int, socket.socket | None]],
                    queued: Iterable[int] = (), kept: list[tuple[int, int]] = (),
                    queue: list[socket.socket] = ()) -> None:
        """Replace this image with a fresh one; returns only if exec failed.

        ``queued``: signals caught but not yet acted on (read once the signals
        are blocked), which would go with this image; they are raised again,
        blocked, so the new image receives them. ``kept`` and ``queue``: the
        idle kept-open connections (fd, requests carried) and the ready queue.
        """
        handover = Handover(
            listener_fd=self.listener.fileno(), description=self.description,
            unix_path=self.unix_path, unix_inode=self.unix_inode,
            launch_dir=self.launch_dir,
            children=[(pid, chan.fileno() if chan is not None else None)
                      for pid, chan in children],
            kept=list(kept), queue=[sock.fileno() for sock in queue],
        )
        inheritable = [self.listener, *queue] + [chan for _, chan in children
                                                 if chan is not None]
        for sock in inheritable:
            sock.set_inheritable(True)
        for fd, _ in kept:
            os.set_inheritable(fd, True)
        env = {**os.environ, HANDOVER_ENV: handover.to_json()}
        env.pop(PROBE_ENV, None)
        log.info("re-executing the master with fresh code (pid %d stays)", os.getpid())
        flush_std_streams()
        previous_dir = os.getcwd()
        # Our handlers do not survive exec, and the new image installs its own only
        # once it runs: blocked until then, a TERM waits for them instead of killing
        # the new image by its default action (see signals.py).
        mask = signals.block_for_exec()
        for signum in sorted(set(queued)):
            os.kill(os.getpid(), signum)
        try:
            os.chdir(self.launch_dir)
            os.execve(sys.executable, command_line(), env)
        except OSError as exc:
            signals.restore_mask(mask)
            log.error("cannot re-execute %s: %s; the old code keeps serving",
                      sys.executable, exc.strerror)
            os.chdir(previous_dir)
            for sock in inheritable:
                sock.set_inheritable(False)
            for fd, _ in kept:
                os.set_inheritable(fd, False)

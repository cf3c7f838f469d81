"""The server process itself: daemonizing, pid file, working directory, log files."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from safefcgi.errors import SafeFCGIError

log = logging.getLogger("safefcgi.process")


def redirect_output(outlog: str | None, errlog: str | None) -> None:
    """Point fds 1 and 2 at the log files (appending), so children inherit them too."""
    for path, stream in ((outlog, sys.stdout), (errlog, sys.stderr)):
        if path is None:
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise SafeFCGIError(f"cannot open log file {path}: {exc.strerror}") from None
        stream.flush()
        os.dup2(fd, stream.fileno())
        os.close(fd)


def daemonize() -> None:
    """Detach from the terminal: fork twice, new session, stdin from /dev/null.

    The intermediate processes leave with os._exit so that nothing they
    inherited (an open database connection, say) is closed on their way out.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    if not _is_redirected(1):
        os.dup2(devnull, 1)
    if not _is_redirected(2):
        os.dup2(devnull, 2)
    os.close(devnull)


def _is_redirected(fd: int) -> bool:
    """True when fd already points at a regular file (an --outlog/--errlog)."""
    try:
        return not os.isatty(fd) and os.path.isfile(f"/proc/self/fd/{fd}")
    except OSError:
        return False


@contextlib.contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Write our pid to ``path``; remove it on exit if it is still ours."""
    if path is None:
        yield
        return
    path = os.path.abspath(path)
    _refuse_live_pidfile(path)
    pid = os.getpid()
    try:
        with open(path, "w") as handle:
            handle.write(f"{pid}\n")
    except OSError as exc:
        raise SafeFCGIError(f"cannot write pid file {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        if os.getpid() == pid:
            remove_pidfile(path)


def remove_pidfile(path: str | None) -> None:
    """Remove the pid file at ``path`` if it names this process."""
    if path is not None and _read_pid(os.path.abspath(path)) == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(os.path.abspath(path))


def check_pidfile(path: str | None) -> None:
    """Fail now, on the terminal, if ``path`` names a live process.

    pidfile() checks again, but by then a --daemonize start has already
    detached and its error would reach only the log.
    """
    if path is not None:
        _refuse_live_pidfile(os.path.abspath(path))


def _refuse_live_pidfile(path: str) -> None:
    other = _read_pid(path)
    if other is None or other == os.getpid():
        return
    try:
        os.kill(other, 0)
    except ProcessLookupError:
        log.info("replacing stale pid file %s (pid %d is gone)", path, other)
        return
    except PermissionError:
        pass
    raise SafeFCGIError(f"pid file {path} names pid {other}, which is still running")


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def change_directory(workdir: str | None) -> None:
    if workdir is None:
        return
    try:
        os.chdir(workdir)
    except OSError as exc:
        raise SafeFCGIError(f"cannot change to working directory {workdir}: "
                            f"{exc.strerror}") from None

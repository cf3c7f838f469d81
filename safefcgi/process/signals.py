"""Signal names for log lines, and the signals that arrive before a server is ready.

A master must react to every signal at every moment of its life, not only
once its loop runs: a TERM that reaches a re-executed master while it still
imports the project (HUP) must stop it cleanly, not kill it by the default
action and leave the socket and the pid file behind. So from start-up on the
signals the server handles are *held*: noted, and handed to the master or
the threaded server once it runs (``take_held``). A second stop signal while
held (or QUIT) cannot wait that long: it raises ``StopNow`` where the process
happens to be, and start-up unwinds, removing what it created.

Across the exec of a reload the signals are blocked instead (a handler does
not survive exec, a blocked signal stays pending): the new image unblocks
them once its own handlers are in (``unblock``).
"""

from __future__ import annotations

import os
import signal
from typing import Any

# What a prefork master acts on (see master.py); threaded mode acts on the stop signals.
STOP_SIGNALS = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
MASTER_SIGNALS = STOP_SIGNALS | {signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU}

_held: list[int] = []
_escalate = True


class StopNow(BaseException):
    """A second stop signal (or QUIT) before the server ran: unwind start-up now.

    A BaseException, so that the project's import (which start-up guards with
    ``except Exception``) cannot swallow it.
    """


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGRTMIN+1``, or ``signal 99``: whatever number the kernel hands us."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        pass
    if signal.SIGRTMIN < signum < signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    return f"signal {signum}"


def wakeup_pipe() -> tuple[int, int]:
    """A pipe the interpreter writes each signal's number to: (read end, write end).

    A wait in select or epoll that watches the read end ends as soon as a
    signal arrives, even one whose handler only noted it. Both ends are
    non-blocking: a burst of signals never blocks the handler, draining
    never blocks the loop.
    """
    read_end, write_end = os.pipe()  # not inherited across exec (PEP 446)
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    return read_end, write_end


def hold(*, escalate: bool = True) -> None:
    """From now on, note the server's signals until a server takes them (``take_held``).

    With ``escalate``, a second stop signal, or QUIT, raises StopNow at once.
    Without it (once the server has stopped), they are only noted: the process
    is already on its way out and removes what it created.
    """
    global _escalate
    _escalate = escalate
    for signum in MASTER_SIGNALS:
        signal.signal(signum, _note)


def take_held() -> list[int]:
    """The signals noted since ``hold``, oldest first; forgotten here."""
    held = list(_held)
    _held.clear()
    return held


def block_for_exec() -> set[int]:
    """Block the server's signals across an exec; returns the mask to restore if it fails."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)


def restore_mask(mask: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def unblock() -> None:
    """Let through what ``block_for_exec`` held back (pending signals arrive now)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)


def _note(signum: int, frame: Any) -> None:
    stop_before = any(s in STOP_SIGNALS for s in _held)
    if signum not in _held:  # once each: a process that never takes them stays bounded
        _held.append(signum)
    if _escalate and signum in STOP_SIGNALS and (stop_before or signum == signal.SIGQUIT):
        raise StopNow(signal_name(signum))

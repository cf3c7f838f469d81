"""systemd integration: socket activation (LISTEN_FDS) and sd_notify, without libsystemd.

Both protocols are a few lines: systemd passes listening sockets from fd 3
on and names our pid in LISTEN_PID; status goes to the datagram socket
named by NOTIFY_SOCKET as ``KEY=value`` lines.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("safefcgi.systemd")

SD_LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def activation_fds(environ: dict[str, str] | None = None) -> list[int]:
    """The fds systemd passed to *this* process; the variables are removed either way.

    Removing them matters: children and a re-executed master must not take
    a passed socket for their own (LISTEN_PID would still match after exec).
    """
    env = os.environ if environ is None else environ
    count, pid = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    for name in ACTIVATION_VARIABLES:
        env.pop(name, None)
    if count is None or pid is None:
        return []
    try:
        if int(pid) != os.getpid():
            return []
        return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    except ValueError:
        log.warning("ignoring malformed LISTEN_FDS=%r / LISTEN_PID=%r", count, pid)
        return []


def notify(*states: str) -> bool:
    """Send ``READY=1``-style lines to systemd; False (and no error) outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", address.lstrip("\0"), exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def reloading() -> bool:
    # MONOTONIC_USEC lets Type=notify-reload units tell this reload from an older one.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")

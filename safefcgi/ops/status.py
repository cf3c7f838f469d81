"""The status page's numbers: kept by the master, rendered as text, JSON or HTML.

Only the master sees the whole pool, but only a child can answer a request.
The child that serves the status path asks the master over its channel and
waits for the answer (see process/statusquery.py); the master publishes
nothing on its own. We chose asking over a snapshot the master would keep in
shared memory because

* a snapshot would have to be rewritten on every idle/busy message (several
  per request, thousands a second under load) to be true, or be up to a tick
  stale; asking costs nothing until someone looks;
* before answering, the master reads every child's channel to the end, so
  everything any child reported before the question was asked is counted:
  the numbers add up even under load;
* the answer travels as a memfd attached to a small message, so a ``?full``
  page of hundreds of children needs no bigger channel messages.

Counting rules: "accepted requests" counts requests handed to the
application (``request`` messages); status and ping requests, answered
before the application, are not counted. "Max children reached" counts the
times every child became busy while the pool could not grow (a connection
arriving then waits in the listen backlog).
"""

from __future__ import annotations

import html
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from safefcgi.ops.metrics import CONTENT_TYPE as OPENMETRICS_TYPE
from safefcgi.ops.metrics import render_openmetrics, wants_openmetrics

# memory: over --max-child-rss, replaced after its request; memory_kill: over
# --max-child-rss-kill, killed at once.
RESTART_REASONS = ("maxrequests", "memory", "memory_kill", "timeout", "crash",
                   "startup_failure")
STATUS_HEADER = "X-Safefcgi"  # marks an answer from safefcgi, not from the site


@dataclass
class PoolStats:
    """What the master counts for the status page, from the children's scoreboards.

    Children write their state on their scoreboard (see scoreboard.py) and the
    master reads them a few times a second: ``observe()`` takes each reading.
    Requests are counted from each child's own served counter, so none is
    missed between readings; the busy figures are as fine as the readings.
    """

    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    served_by_exited: int = 0  # requests of children that are gone
    max_active: int = 0
    max_children_reached: int = 0
    slow_requests: int = 0
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))
    _saturated_by: frozenset[tuple[int, float]] | None = None  # the requests that filled it

    def observe(self, children: Iterable[Any], maxchildren: int) -> None:
        """Take a reading: how many children hold a connection, and is the pool full."""
        busy = [c for c in children if c.ready and not c.idle]
        self.max_active = max(self.max_active, len(busy))
        if len(busy) < maxchildren:
            self._saturated_by = None
            return
        # Full: count it once per set of requests filling it (a new request on
        # a full pool means one more time a request found no free child).
        filled_by = frozenset((c.pid, c.request_since) for c in busy)
        if filled_by != self._saturated_by:
            self.max_children_reached += 1
            self._saturated_by = filled_by

    def accepted(self, children: Iterable[Any]) -> int:
        """Requests handed to the application so far (running ones included)."""
        return self.served_by_exited + sum(c.served + (c.request is not None)
                                           for c in children)

    def child_exited(self, served: int, reason: str | None) -> None:
        self.served_by_exited += served
        if reason is not None:
            self.restarts[reason] += 1


# -- the snapshot -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRow:
    pid: int
    state: str  # starting, idle, busy or exiting
    served: int
    started_seconds: float
    request: str | None
    request_seconds: float | None
    rss_bytes: int | None


def child_state(child: Any) -> str:
    """starting, idle, busy (holds a connection) or exiting, from the master's Child."""
    if not child.ready:
        return "starting"
    if child.channel is None or child.leaving:
        return "exiting"
    if child.idle:
        return "exiting" if child.retiring else "idle"
    return "busy"


def child_row(child: Any, now: float) -> ChildRow:
    request = " ".join(child.request) if child.request else None
    return ChildRow(pid=child.pid, state=child_state(child), served=child.served,
                    started_seconds=round(now - child.started_at, 3), request=request,
                    request_seconds=round(now - child.request_since, 3) if request else None,
                    rss_bytes=rss_bytes(child.pid))


def snapshot(stats: PoolStats, children: Iterable[Any], *, pool: str, method: str,
             limits: Any, listen_queue: tuple[int, int] | None,
             full: bool = False) -> dict[str, Any]:
    """The whole status page as a dict (the JSON format; the others render it)."""
    now = time.monotonic()
    children = list(children)
    states = [child_state(c) for c in children]
    data: dict[str, Any] = {
        "pool": pool,
        "process_manager": method,
        "pid": os.getpid(),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stats.started_at)),
        "start_since": int(now - stats.started_monotonic),
        "start_timestamp": round(stats.started_at, 3),
        "accepted_requests": stats.accepted(children),
        "listen_queue": listen_queue[0] if listen_queue else None,
        "listen_queue_len": listen_queue[1] if listen_queue else None,
        "idle_children": states.count("idle"),
        "active_children": states.count("busy"),
        "starting_children": states.count("starting"),
        "exiting_children": states.count("exiting"),
        "total_children": len(children),
        "max_active_children": stats.max_active,
        "max_children_reached": stats.max_children_reached,
        "slow_requests": stats.slow_requests,
        "restarts": dict(stats.restarts),
        "minspare": limits.minspare,
        "maxspare": limits.maxspare,
        "maxchildren": limits.maxchildren,
    }
    if full:
        rows = sorted((child_row(c, now) for c in children), key=lambda r: r.pid)
        data["children"] = [row.__dict__ for row in rows]
    return data


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# -- the listen queue ---------------------------------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
NO_COOKIE = 0xFFFFFFFF
TCP_INFO_UNACKED = 24  # offset of tcpi_unacked, then tcpi_sacked, in struct tcp_info


def listen_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, backlog size) of a listening socket.

    Linux reports both for a listener: through TCP_INFO for TCP (tcpi_unacked
    and tcpi_sacked hold the accept queue's length and limit), and through a
    sock_diag netlink query (UNIX_DIAG_RQLEN) for a unix socket, which is
    what ``ss -lx`` shows. None where the system does not tell.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return struct.unpack_from("=II", info, TCP_INFO_UNACKED)
        if sock.family == socket.AF_UNIX:
            return _unix_listen_queue(os.fstat(sock.fileno()).st_ino)
    except (OSError, struct.error):
        return None
    return None


def _unix_listen_queue(inode: int) -> tuple[int, int] | None:
    request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode,
                          UDIAG_SHOW_RQLEN, NO_COOKIE, NO_COOKIE)
    header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)
        netlink.sendto(header + request, (0, 0))
        reply = netlink.recv(65536)
    length, kind = struct.unpack_from("=IH", reply, 0)
    if kind == NLMSG_ERROR:
        return None
    offset = 16 + 16  # nlmsghdr, then struct unix_diag_msg
    while offset + 4 <= min(length, len(reply)):
        attr_len, attr_type = struct.unpack_from("=HH", reply, offset)
        if attr_len < 4:
            return None
        if attr_type == UNIX_DIAG_RQLEN:
            return struct.unpack_from("=II", reply, offset + 4)
        offset += (attr_len + 3) & ~3
    return None


# -- rendering ------------------------------------------------------------------------------

LABELS = (
    ("pool", "pool"), ("process_manager", "process manager"), ("pid", "master pid"),
    ("start_time", "start time"), ("start_since", "start since"),
    ("accepted_requests", "accepted requests"), ("listen_queue", "listen queue"),
    ("listen_queue_len", "listen queue len"), ("idle_children", "idle children"),
    ("active_children", "active children"), ("starting_children", "starting children"),
    ("exiting_children", "exiting children"), ("total_children", "total children"),
    ("max_active_children", "max active children"),
    ("max_children_reached", "max children reached"), ("slow_requests", "slow requests"),
)
LABEL_WIDTH = 30
ROW_COLUMNS = ("pid", "state", "served", "started_seconds", "request_seconds", "rss_bytes",
               "request")


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def render_text(data: dict[str, Any]) -> str:
    lines = [f"{label + ':':<{LABEL_WIDTH}}{_shown(data.get(key))}" for key, label in LABELS]
    lines += [f"{'restarts (' + reason + '):':<{LABEL_WIDTH}}{count}"
              for reason, count in data["restarts"].items()]
    lines.append(f"{'pool limits:':<{LABEL_WIDTH}}{data['minspare']}-{data['maxspare']} spare, "
                 f"at most {data['maxchildren']}")
    if "children" in data:
        lines += ["", "  ".join(ROW_COLUMNS)]
        lines += ["  ".join(_shown(row.get(col)) for col in ROW_COLUMNS)
                  for row in data["children"]]
    return "\n".join(lines) + "\n"


def render_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def render_html(data: dict[str, Any]) -> str:
    def cells(values: Iterable[Any], tag: str = "td") -> str:
        return "".join(f"<{tag}>{html.escape(_shown(v))}</{tag}>" for v in values)

    rows = [f"<tr>{cells([label], 'th')}{cells([data.get(key)])}</tr>" for key, label in LABELS]
    rows += [f"<tr>{cells(['restarts (' + reason + ')'], 'th')}{cells([count])}</tr>"
             for reason, count in data["restarts"].items()]
    page = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<title>safefcgi status: {html.escape(str(data['pool']))}</title></head><body>",
        f"<h1>safefcgi status</h1><table>{''.join(rows)}</table>",
    ]
    if "children" in data:
        page.append(f"<h2>children</h2><table><tr>{cells(ROW_COLUMNS, 'th')}</tr>")
        page += [f"<tr>{cells(row.get(col) for col in ROW_COLUMNS)}</tr>"
                 for row in data["children"]]
        page.append("</table>")
    page.append("</body></html>\n")
    return "".join(page)


RENDERERS = {
    "text": (render_text, "text/plain; charset=utf-8"),
    "json": (render_json, "application/json"),
    "html": (render_html, "text/html; charset=utf-8"),
    "openmetrics": (render_openmetrics, OPENMETRICS_TYPE),
}


@dataclass(frozen=True)
class StatusQuery:
    """What the query string asks for: ``?json``, ``?html``, ``?openmetrics``, ``?full``,
    combined with &; or an Accept header naming OpenMetrics, as Prometheus sends."""

    format: str = "text"
    full: bool = False

    @classmethod
    def parse(cls, query: str, accept: str = "") -> StatusQuery:
        words = {word.partition("=")[0] for word in query.split("&") if word}
        if "openmetrics" in words or (not words & {"json", "html"} and accept
                                      and wants_openmetrics(accept)):
            return cls("openmetrics", True)  # per-child memory needs the rows
        fmt = "json" if "json" in words else "html" if "html" in words else "text"
        return cls(fmt, "full" in words)


# -- safefcgi status --------------------------------------------------------------------------


def run_status_command(args: Any) -> int:
    """``safefcgi status``: fetch the status page over FastCGI and print it."""
    from safefcgi.fastcgi.client import request
    from safefcgi.fastcgi.records import ProtocolError

    address = args.socket if args.socket else (args.host, args.port)
    where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
    query = "&".join(word for word, wanted in (("json", args.json), ("full", args.full),
                                               ("openmetrics", args.openmetrics)) if wanted)
    path = f"{args.path}?{query}" if query else args.path
    try:
        response = request(address, path, timeout=args.timeout)
    except (OSError, ConnectionError, ProtocolError) as exc:
        print(f"safefcgi status: error: {where}: {exc}", file=sys.stderr)
        return 1
    if response.headers.get(STATUS_HEADER.lower()) != "status":
        print(f"safefcgi status: error: {where} answered {args.path} with HTTP "
              f"{response.status} but not with its status page: was it started with "
              f"--status-path {args.path}?", file=sys.stderr)
        return 1
    sys.stdout.write(response.body.decode("utf-8", "replace"))
    return 0 if response.status == 200 else 1

"""The status page as OpenMetrics text, for Prometheus and whatever scrapes like it.

Rendered from the same snapshot as the text, JSON and HTML pages (see
status.py), so every format tells the same numbers. Names follow the
OpenMetrics specification and Prometheus' naming conventions: one
``safefcgi_`` prefix, base units in the name with a ``# UNIT`` line
(seconds, bytes), counters exposed as ``<family>_total``, and states or
reasons as labels rather than one metric each, so a dashboard sums or
splits them as it likes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
MEDIA_TYPE = "application/openmetrics-text"
CHILD_STATES = ("idle", "busy", "starting", "exiting")

Sample = tuple[str, dict[str, str], float | int]  # suffix, labels, value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(str(value))}"'
                          for name, value in labels.items()) + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[Sample],
            unit: str | None = None) -> list[str]:
    lines = [f"# TYPE {name} {kind}", f"# HELP {name} {help_text}"]
    if unit is not None:
        lines.append(f"# UNIT {name} {unit}")
    lines += [f"{name}{suffix}{_labels(labels)} {value}" for suffix, labels, value in samples]
    return lines


def _gauge(name: str, help_text: str, value: Any, unit: str | None = None) -> list[str]:
    if value is None:  # unknown here (no listen queue figures off Linux): left out
        return []
    return _family(name, "gauge", help_text, [("", {}, value)], unit)


def _counter(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], int]]
             ) -> list[str]:
    return _family(name, "counter", help_text,
                   [("_total", labels, value) for labels, value in samples])


def render_openmetrics(data: dict[str, Any]) -> str:
    """The snapshot of ``status.snapshot`` (with its per-child rows) as OpenMetrics text."""
    lines = _family("safefcgi_pool", "info", "The pool: its settings module and process "
                    "manager", [("_info", {"pool": data["pool"],
                                           "process_manager": data["process_manager"]}, 1)])
    lines += _gauge("safefcgi_start_time_seconds", "When the master started, in seconds "
                    "since the epoch (counters start from zero then, and after a reload)",
                    data["start_timestamp"], "seconds")
    lines += _counter("safefcgi_accepted_requests", "Requests handed to the application",
                      [({}, data["accepted_requests"])])
    lines += _counter("safefcgi_slow_requests", "Requests that ran longer than "
                      "--slowlog-timeout", [({}, data["slow_requests"])])
    lines += _counter("safefcgi_timed_out_requests", "Requests whose child was killed for "
                      "running longer than --timeout", [({}, data["restarts"]["timeout"])])
    lines += _counter("safefcgi_child_restarts", "Children replaced, by reason (maxrequests, "
                      "memory, memory_kill, timeout, crash, startup_failure)",
                      [({"reason": reason}, count)
                       for reason, count in data["restarts"].items()])
    lines += _counter("safefcgi_max_children_reached", "Times every child was busy while "
                      "the pool could not grow", [({}, data["max_children_reached"])])
    lines += _family("safefcgi_children", "gauge", "Children by state (busy: holding a "
                     "connection)", [("", {"state": state}, data[f"{key}_children"])
                                     for state, key in zip(CHILD_STATES, (
                                         "idle", "active", "starting", "exiting"),
                                         strict=True)])
    lines += _gauge("safefcgi_max_active_children", "Most children busy at once since start",
                    data["max_active_children"])
    lines += _gauge("safefcgi_min_spare_children", "Fewest idle children the pool keeps",
                    data["minspare"])
    lines += _gauge("safefcgi_max_spare_children", "Most idle children the pool keeps",
                    data["maxspare"])
    lines += _gauge("safefcgi_max_children", "Most children the pool may have",
                    data["maxchildren"])
    lines += _gauge("safefcgi_listen_queue", "Connections waiting in the listen queue to "
                    "be accepted", data["listen_queue"])
    lines += _gauge("safefcgi_listen_queue_size", "Connections the listen queue can hold",
                    data["listen_queue_len"])
    rows = [row for row in data.get("children", ()) if row.get("rss_bytes") is not None]
    if rows:
        lines += _family("safefcgi_child_resident_memory_bytes", "gauge",
                         "Resident memory of each child (pages shared with the master "
                         "included)", [("", {"pid": str(row["pid"])}, row["rss_bytes"])
                                       for row in rows], "bytes")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def wants_openmetrics(accept: str) -> bool:
    """True when an Accept header names the OpenMetrics media type (as Prometheus sends)."""
    return any(part.split(";", 1)[0].strip().lower() == MEDIA_TYPE
               for part in accept.split(","))

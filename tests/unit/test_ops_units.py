"""Operability pieces that need no server: counters, rendering, listen queue, log formats."""

import json
import logging
import os
import re
import socket
import sys
import time
from dataclasses import dataclass

import pytest

from safefcgi import logs
from safefcgi.cli import parse_run_arguments
from safefcgi.errors import ConfigError
from safefcgi.logs import LogFile
from safefcgi.ops import slowlog
from safefcgi.ops.accesslog import common_log_line
from safefcgi.ops.status import (
    PoolStats,
    StatusQuery,
    listen_queue,
    render_html,
    render_json,
    render_openmetrics,
    render_text,
    snapshot,
)
from safefcgi.process.pool import PoolLimits


@dataclass
class FakeChild:
    pid: int
    ready: bool = True
    idle: bool = True
    leaving: bool = False
    retiring: bool = False
    channel: object = "open"
    served: int = 0
    started_at: float = 0.0
    request: tuple[str, str] | None = None
    request_since: float = 0.0


# -- counters -----------------------------------------------------------------------------


def test_max_children_reached_counts_each_time_the_pool_fills_up_not_each_reading():
    stats = PoolStats()
    one, two = FakeChild(1, idle=False, request_since=1.0), FakeChild(2, idle=False,
                                                                      request_since=1.0)
    stats.observe([one, two], maxchildren=2)
    stats.observe([one, two], maxchildren=2)  # the same requests, read again: still full
    assert stats.max_children_reached == 1
    one.idle = True
    stats.observe([one, two], maxchildren=2)
    one.idle, one.request_since = False, 2.0  # a new request fills it again
    stats.observe([one, two], maxchildren=2)
    assert stats.max_children_reached == 2
    assert stats.max_active == 2


def test_a_starting_child_is_not_counted_as_busy():
    stats = PoolStats()
    stats.observe([FakeChild(1, ready=False, idle=False)], maxchildren=1)
    assert (stats.max_active, stats.max_children_reached) == (0, 0)


def test_requests_of_exited_children_still_count_and_their_reason_is_counted():
    stats = PoolStats()
    stats.child_exited(40, "timeout")
    stats.child_exited(2, None)  # retired by the pool: not a restart
    assert stats.accepted([FakeChild(3, served=5, request=("GET", "/"))]) == 40 + 2 + 5 + 1
    assert stats.restarts == {"maxrequests": 0, "memory": 0, "memory_kill": 0, "timeout": 1,
                              "crash": 0, "startup_failure": 0}


# -- the snapshot and its formats ----------------------------------------------------------


def a_page(full: bool = True) -> dict:
    now = time.monotonic()
    stats = PoolStats()
    children = [
        FakeChild(os.getpid(), idle=False, served=5, started_at=now - 10,
                  request=("GET", "/a<b>"), request_since=now - 1.5),
        FakeChild(2, served=6), FakeChild(3, ready=False), FakeChild(4, retiring=True),
        FakeChild(5, idle=False, channel=None),
    ]
    return snapshot(stats, children, pool="mysite.settings", method="prefork",
                    limits=PoolLimits(1, 2, 5), listen_queue=(3, 128), full=full)


def test_every_child_is_in_exactly_one_state():
    page = a_page()
    assert (page["active_children"], page["idle_children"], page["starting_children"],
            page["exiting_children"], page["total_children"]) == (1, 1, 1, 2, 5)


def test_full_rows_name_the_running_request_and_memory():
    row = next(r for r in a_page()["children"] if r["pid"] == os.getpid())
    assert row["state"] == "busy" and row["request"] == "GET /a<b>"
    assert 1.4 < row["request_seconds"] < 2 and row["rss_bytes"] > 0
    assert "children" not in a_page(full=False)


def test_text_json_and_html_show_the_same_numbers():
    page = a_page()
    text, html = render_text(page), render_html(page)
    assert re.search(r"^accepted requests: +12$", text, re.MULTILINE)
    assert re.search(r"^listen queue: +3$", text, re.MULTILINE)
    assert re.search(r"^restarts \(maxrequests\): +0$", text, re.MULTILINE)
    assert json.loads(render_json(page))["accepted_requests"] == 12
    assert "<td>12</td>" in html and "GET /a&lt;b&gt;" in html and "/a<b>" not in html


@pytest.mark.parametrize("query, expected", [
    ("", StatusQuery("text", False)), ("json", StatusQuery("json", False)),
    ("full&html", StatusQuery("html", True)), ("json&full", StatusQuery("json", True)),
    ("full=1", StatusQuery("text", True)), ("openmetrics", StatusQuery("openmetrics", True)),
])
def test_status_query_words(query, expected):
    assert StatusQuery.parse(query) == expected


@pytest.mark.parametrize("query, accept, expected", [
    ("", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
     "openmetrics"),
    ("", "text/html,application/xhtml+xml", "text"),
    ("json", "application/openmetrics-text", "json"),  # the query string wins
])
def test_an_accept_header_naming_openmetrics_selects_it(query, accept, expected):
    assert StatusQuery.parse(query, accept).format == expected


# -- OpenMetrics -------------------------------------------------------------------------------


def parsed_openmetrics(page: dict) -> dict:
    """Families by name, as prometheus_client's own OpenMetrics parser reads them."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {family.name: family
            for family in text_string_to_metric_families(render_openmetrics(page))}


def test_openmetrics_text_is_valid_and_carries_the_page_numbers():
    page = a_page()
    page["restarts"]["memory"] = 2
    page["slow_requests"] = 4

    families = parsed_openmetrics(page)

    def value(name, **labels):
        return next(s.value for s in families[name].samples if s.labels == labels
                    and not s.name.endswith("_created"))

    assert families["safefcgi_accepted_requests"].type == "counter"
    assert value("safefcgi_accepted_requests") == 12
    assert value("safefcgi_slow_requests") == 4
    assert value("safefcgi_child_restarts", reason="memory") == 2
    assert value("safefcgi_children", state="busy") == 1
    assert value("safefcgi_children", state="exiting") == 2
    assert value("safefcgi_listen_queue") == 3 and value("safefcgi_listen_queue_size") == 128
    assert value("safefcgi_max_children") == 5
    memory = families["safefcgi_child_resident_memory_bytes"]
    assert memory.unit == "bytes" and memory.type == "gauge"
    assert value("safefcgi_child_resident_memory_bytes", pid=str(os.getpid())) > 1024 ** 2
    assert families["safefcgi_start_time_seconds"].unit == "seconds"
    assert value("safefcgi_pool", pool="mysite.settings", process_manager="prefork") == 1


def test_openmetrics_label_values_are_escaped():
    page = a_page()
    page["pool"] = 'odd "name"\\with\nnewline'
    families = parsed_openmetrics(page)
    assert families["safefcgi_pool"].samples[0].labels["pool"] == page["pool"]


def test_openmetrics_leaves_out_what_the_system_does_not_tell():
    page = a_page(full=False)
    page["listen_queue"] = page["listen_queue_len"] = None
    families = parsed_openmetrics(page)
    assert "safefcgi_listen_queue" not in families
    assert "safefcgi_child_resident_memory_bytes" not in families


# -- the listen queue -----------------------------------------------------------------------


def queue_up(listener: socket.socket, address, family: int, count: int) -> list:
    clients = []
    for _ in range(count):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(address)
        clients.append(client)
    return clients


def test_listen_queue_of_a_unix_socket(tmp_path):
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "q.sock"))
        listener.listen(16)
        clients = queue_up(listener, str(tmp_path / "q.sock"), socket.AF_UNIX, 3)
        assert listen_queue(listener) == (3, 16)
        listener.accept()[0].close()
        assert listen_queue(listener) == (2, 16)
        for client in clients:
            client.close()


def test_listen_queue_of_a_tcp_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        clients = queue_up(listener, listener.getsockname(), socket.AF_INET, 2)
        assert listen_queue(listener) == (2, 8)
        for client in clients:
            client.close()


# -- slow log ---------------------------------------------------------------------------------


def sleeping_view():
    return slow_frame()


def slow_frame():
    return sys._getframe()


def test_slow_log_entry_names_request_and_stack():
    entry = slowlog.format_entry(42, "POST", "/upload", 3.25, 2.0, sleeping_view())
    first, *rest = entry.splitlines()
    assert first.endswith("pid 42 slow request: POST /upload running for 3.250 s "
                          "(--slowlog-timeout 2 s)")
    assert "in sleeping_view" in entry and entry.index("sleeping_view") < entry.index(
        "in slow_frame")
    assert entry.endswith("\n\n")


def test_a_request_is_signalled_once_and_only_after_the_limit():
    assert not slowlog.is_due(100.0, -1.0, 2.0, now=101.0)
    assert slowlog.is_due(100.0, -1.0, 2.0, now=102.5)
    assert not slowlog.is_due(100.0, 100.0, 2.0, now=150.0)  # already signalled


# -- access log and log lines -----------------------------------------------------------------


def test_common_log_format_line():
    environ = {"REMOTE_ADDR": "10.1.2.3", "REQUEST_METHOD": "GET",
               "REQUEST_URI": '/a?q="x"', "SERVER_PROTOCOL": "HTTP/1.1"}
    line = common_log_line(environ, "404 Not Found", 0, 0.0, 1234).decode()
    assert re.fullmatch(r'10\.1\.2\.3 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /a\?q=\\"x\\" HTTP/1\.1" 404 - 1234\n', line), line


def test_a_log_file_is_reopened_at_the_same_fd_number(tmp_path):
    logfile = LogFile(str(tmp_path / "a.log"))
    logfile.open()
    fd = logfile.fd
    logfile.write(b"one\n")
    (tmp_path / "a.log").rename(tmp_path / "a.log.1")
    logfile.reopen()
    logfile.write(b"two\n")
    logfile.close()
    assert logfile.fd == fd
    assert (tmp_path / "a.log.1").read_text() == "one\n"
    assert (tmp_path / "a.log").read_text() == "two\n"


def test_json_log_lines_carry_pid_and_role():
    record = logging.LogRecord("safefcgi.child", logging.WARNING, __file__, 1,
                               "refused %s", ("10.0.0.9",), None)
    logs.set_role("child")
    try:
        logs._RoleFilter().filter(record)
        entry = json.loads(logs.make_formatter("json").format(record))
    finally:
        logs.set_role("master")
    assert entry["role"] == "child" and entry["pid"] == os.getpid()
    assert entry["message"] == "refused 10.0.0.9" and entry["level"] == "WARNING"


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--slowlog", "/tmp/s.log"], "--slowlog needs --slowlog-timeout"),
    (["--status-path", "/x", "--ping-path", "/x"], "must differ"),
    (["--status-path", "status"], "expected a URL path"),
    (["--ping-drain", "5"], "--ping-drain needs --ping-path"),
    (["--method", "threaded", "--status-path", "/s"], "--status-path needs --method=prefork"),
    (["--log-format", "xml"], "expected text or json"),
    (["--log-level", "chatty"], "expected debug or info or warning or error"),
    (["--status-listen", "10.0.0.1:9001"], "loopback only"),
    (["--status-listen", "9001"], "expected a unix socket path"),
    (["--status-listen", "127.0.0.1:99999"], "must be at most 65535"),
    (["--socket", "/run/a.sock", "--status-listen", "/run/a.sock"], "an address of its own"),
    (["--method", "threaded", "--status-listen", "/run/s.sock"], "needs --method=prefork"),
])
def test_conflicting_operability_options_fail_with_a_sentence(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_run_arguments(["mysite.settings", "--socket", "/tmp/x.sock", *args])


def test_operability_options_reach_the_config():
    config = parse_run_arguments(["mysite.settings", "--socket", "/tmp/x.sock",
                                  "--status-path", "/fcgi-status", "--ping-path", "/ping",
                                  "--ping-response", "ok", "--slowlog-timeout", "2.5",
                                  "--access-log", "/tmp/a.log", "--log-format", "JSON"])
    assert (config.status_path, config.ping_path, config.ping_response) == \
        ("/fcgi-status", "/ping", "ok")
    assert config.slowlog_timeout == 2.5 and config.log_format == "json"

"""Slow log, access log, log lines with pid and role, and process titles, on a real server."""

import json
import os
import re
import signal
import subprocess

from safefcgi.process import titles
from tests.support.servers import sleeping_child
from tests.support.threads import in_thread
from tests.support.waiting import wait_until

CLF = re.compile(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                 r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) (?P<micros>\d+)$')


# -- slow log ------------------------------------------------------------------------------

def test_slow_log_holds_the_stack_of_a_sleeping_view(start_server, tmp_path):
    slowlog = tmp_path / "slow.log"
    server = start_server("--slowlog-timeout", "0.5", "--slowlog", str(slowlog),
                          "--status-path", "/fcgi-status")

    response = server.get("/sleep?seconds=1.5")
    server.get("/hello")  # fast: not logged

    pid = int(response.body.split()[-1])
    text = wait_until(lambda: slowlog.exists() and slowlog.read_text(), 10, "the slow log entry")
    assert re.match(rf"\S+ \S+ \S+ pid {pid} slow request: GET /sleep\?seconds=1\.5 "
                    r"running for 0\.[5-9]\d* s \(--slowlog-timeout 0\.5 s\)\n", text), text
    assert re.search(r'fixturesite_urls\.py", line \d+, in sleep\n\s+time\.sleep', text)
    assert "safefcgi/fastcgi/protocol.py" not in text  # the server's own frames are left out
    assert text.count("slow request:") == 1
    page = json.loads(server.get("/fcgi-status?json").body)
    assert page["slow_requests"] == 1
    assert response.body.startswith(b"slept in")  # the request went on


def test_slow_log_without_a_file_goes_to_the_error_log(start_server):
    server = start_server("--slowlog-timeout", "0.3")
    server.get("/sleep?seconds=0.8")
    wait_until(lambda: "slow request: GET /sleep?seconds=0.8" in server.log, 10,
               "the slow request in the error log")
    assert "in sleep" in server.log


def test_slowlog_needs_a_timeout(start_server, tmp_path):
    server = start_server("--slowlog", str(tmp_path / "slow.log"), wait=False)
    assert server.wait_for_exit(10) == 2
    assert "--slowlog needs --slowlog-timeout" in server.log


# -- access log ----------------------------------------------------------------------------

def test_access_log_has_one_common_log_format_line_per_request(start_server, tmp_path):
    access = tmp_path / "access.log"
    server = start_server("--access-log", str(access))

    server.get("/hello")
    server.get("/no-such-page")
    server.get("/sleep?seconds=0.2")

    def ours():  # leave out the requests that waited for the server to start
        lines = [line for line in access.read_text().splitlines() if "GET /pid " not in line]
        return lines if len(lines) >= 3 else None

    lines = wait_until(ours, 10, "our access log lines")
    entries = [CLF.match(line) for line in lines]
    assert all(entries), lines
    # Children write their own lines once a response is sent: two children's
    # lines may land in either order, so compare them as a set.
    by_request = {e["request"]: e for e in entries}
    assert sorted((e["request"], e["status"]) for e in entries) == [
        ("GET /hello HTTP/1.1", "200"), ("GET /no-such-page HTTP/1.1", "404"),
        ("GET /sleep?seconds=0.2 HTTP/1.1", "200")]
    hello, sleep = by_request["GET /hello HTTP/1.1"], by_request["GET /sleep?seconds=0.2 HTTP/1.1"]
    assert hello["size"] == str(len("Hello from the fixture site\n"))
    assert int(sleep["micros"]) >= 200_000 > int(hello["micros"])


def test_sigusr1_reopens_access_and_slow_logs_in_every_child(start_server, tmp_path):
    access, slowlog = tmp_path / "access.log", tmp_path / "slow.log"
    server = start_server("--access-log", str(access), "--slowlog-timeout", "0.3",
                          "--slowlog", str(slowlog), "--maxchildren", "2", "--minspare", "2")
    server.get("/sleep?seconds=0.5")
    wait_until(lambda: slowlog.exists() and "slow request" in slowlog.read_text(), 10,
               "the first slow log entry")
    access.rename(tmp_path / "access.log.1")
    slowlog.rename(tmp_path / "slow.log.1")

    server.process.send_signal(signal.SIGUSR1)
    wait_until(lambda: "log files reopened" in server.log, 10, "the master to reopen its logs")
    # Both children, whichever answers, write to the new files.
    slow = [in_thread(server.get, "/sleep?seconds=0.6") for _ in range(2)]
    for outcome in slow:
        outcome["thread"].join(5)

    wait_until(lambda: slowlog.exists() and slowlog.read_text().count("slow request") == 2, 10,
               "the second slow log entry")
    # The line is written once the response is closed, just after the client has it.
    wait_until(lambda: access.read_text().count("GET /sleep?seconds=0.6") == 2, 10,
               "both requests in the access log")
    assert "seconds=0.6" not in (tmp_path / "access.log.1").read_text()


# -- log lines -------------------------------------------------------------------------------

def test_log_lines_carry_pid_and_role(start_server):
    server = start_server()
    bad_input(server)
    master = server.process.pid
    assert re.search(rf"\[{master}\] \[master\] \[INFO\] safefcgi.server: safefcgi serving",
                     server.log)
    wait_until(lambda: re.search(r"\[(\d+)\] \[child\] \[WARNING\] safefcgi.protocol: "
                                      r"malformed FastCGI input", server.log), 10,
               "the child's malformed-input warning", detail=lambda: server.log)


def test_json_log_format(start_server):
    server = start_server("--log-format", "json")
    bad_input(server)
    wait_until(lambda: "malformed" in server.log, 10, "the malformed-input line")
    entries = [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]
    roles = {entry["role"] for entry in entries}
    assert roles == {"master", "child"}, server.log
    child = next(e for e in entries if e["role"] == "child")
    assert child["level"] == "WARNING" and child["pid"] != server.process.pid
    assert set(child) >= {"time", "pid", "role", "level", "logger", "message"}


def test_log_level_warning_hides_info_lines(start_server):
    server = start_server("--log-level", "warning")
    bad_input(server)
    wait_until(lambda: "malformed FastCGI input" in server.log, 10,
               "the malformed-input line as JSON")
    assert "safefcgi serving" not in server.log


def bad_input(server) -> None:
    """Something a child logs a warning about: a record of an impossible version."""
    from safefcgi.fastcgi import client

    with client.connect(server.socket, timeout=5) as sock:
        sock.sendall(b"\x07" + b"\x00" * 15)
        sock.recv(100)


# -- process titles ----------------------------------------------------------------------------

def process_titles(pids) -> dict[int, str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-p", ",".join(map(str, pids))],
                         capture_output=True, text=True).stdout
    return {int(pid): args for pid, args in (line.split(None, 1) for line in out.splitlines())}


def test_process_titles_show_master_idle_and_busy_children(start_server):
    assert titles.available(), "setproctitle (in the test extra) is not installed"
    server = start_server("--maxchildren", "2", "--minspare", "2")
    slow = in_thread(server.get, "/sleep?seconds=1.5&token=secret")
    busy = sleeping_child(server, "1.5")

    shown = process_titles([server.process.pid, *server.children()])

    assert shown[server.process.pid] == "safefcgi: master [fixturesite_settings]"
    assert shown[busy] == "safefcgi: child busy GET /sleep"  # never the query string
    others = [title for pid, title in shown.items() if pid not in (busy, server.process.pid)]
    assert others == ["safefcgi: child idle"]
    slow["thread"].join(5)
    wait_until(lambda: process_titles([busy]).get(busy) == "safefcgi: child idle", 10,
               "the child's title to say idle")
    assert os.path.exists(server.socket)

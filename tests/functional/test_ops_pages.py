"""Status and ping pages of a real server, and ``safefcgi status``, over its FastCGI socket."""

import json
import os
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.fastcgi import read_response, send_request
from tests.support.ports import free_tcp_port
from tests.support.servers import sleeping_child
from tests.support.threads import in_thread
from tests.support.waiting import wait_until

STATUS = "/fcgi-status"


def status(server, query: str = "json") -> dict:
    response = server.get(f"{STATUS}?{query}")
    assert response.status == 200, response
    return json.loads(response.body)


def status_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safefcgi", "status", *args],
                          capture_output=True, text=True, timeout=30)


def assert_states_add_up(page: dict) -> None:
    states = ("idle_children", "active_children", "starting_children", "exiting_children")
    assert sum(page[name] for name in states) == page["total_children"], page


# -- status --------------------------------------------------------------------------------

def test_status_counts_every_request_handed_to_the_application(start_server):
    server = start_server("--status-path", STATUS, "--maxchildren", "4")
    before = status(server)["accepted_requests"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: server.get("/hello").status, range(120)))

    page = status(server)
    assert answers == [200] * 120
    # Status requests are answered before the application and are not counted.
    assert page["accepted_requests"] - before == 120
    assert 1 <= page["max_active_children"] <= 4
    assert page["active_children"] >= 1  # the child answering this very page
    assert_states_add_up(page)


def test_full_status_shows_the_uri_a_busy_child_runs_and_for_how_long(start_server):
    server = start_server("--status-path", STATUS, "--maxchildren", "3")
    slow = in_thread(server.get, "/sleep?seconds=2")
    pid = sleeping_child(server, "2")
    time.sleep(0.3)

    page = status(server, "json&full")

    row = next(row for row in page["children"] if row["pid"] == pid)
    assert row["state"] == "busy"
    assert row["request"] == "GET /sleep?seconds=2"
    assert 0.2 < row["request_seconds"] < 2
    assert row["rss_bytes"] > 1024 * 1024
    assert len(page["children"]) == page["total_children"]
    slow["thread"].join(5)
    assert slow["value"].body == f"slept in {pid}".encode()


def test_status_in_text_and_html(start_server):
    server = start_server("--status-path", STATUS)

    text = server.get(STATUS)
    html = server.get(f"{STATUS}?html&full")

    assert text.headers["content-type"].startswith("text/plain")
    assert b"\naccepted requests:" in text.body and b"\nlisten queue len:" in text.body
    assert text.headers["cache-control"] == "no-store"
    assert html.headers["content-type"].startswith("text/html")
    assert b"<th>total children</th>" in html.body and b"<th>pid</th>" in html.body


def test_status_path_is_left_to_the_application_when_not_configured(start_server):
    server = start_server()
    assert server.get(STATUS).status == 404


def test_restarts_are_counted_by_reason(start_server):
    server = start_server("--status-path", STATUS, "--maxchildren", "2", "--minspare", "2",
                          "--maxrequests", "2", "--timeout", "1")
    for _ in range(6):  # each child exits at its 2nd request: at least 2 restarts
        assert server.get("/hello").status == 200
    wait_until(lambda: status(server)["restarts"]["maxrequests"] >= 2, 10,
               "two maxrequests restarts")
    # Not the child answering the status page: that one is busy.
    crashed = wait_until(lambda: next((row["pid"] for row in status(server, "json&full")[
        "children"] if row["state"] == "idle"), None), 10, "an idle child")
    os.kill(crashed, signal.SIGKILL)
    wait_until(lambda: status(server)["restarts"]["crash"] == 1, 10, "the crash to be counted")
    stuck = in_thread(server.get, "/sleep?seconds=5")

    restarts = wait_until(lambda: (r := status(server)["restarts"])["timeout"] == 1 and r, 10,
                          "the timeout restart to be counted")

    stuck["thread"].join(5)
    assert "error" in stuck  # killed for --timeout: no END_REQUEST
    assert restarts["timeout"] == 1 and restarts["crash"] == 1
    assert restarts["maxrequests"] >= 2 and restarts["startup_failure"] == 0


def test_max_children_reached_counts_each_time_the_pool_is_full(start_server):
    server = start_server("--status-path", STATUS, "--maxchildren", "1")
    for _ in range(2):
        slow = in_thread(server.get, "/sleep?seconds=0.5")
        slow["thread"].join(5)
    assert status(server)["max_children_reached"] >= 2


# -- ping ------------------------------------------------------------------------------------

def test_ping_answers_its_text_without_reaching_django(start_server):
    server = start_server("--ping-path", "/ping", "--ping-response", "all good",
                          "--access-log", "/dev/null")
    response = server.get("/ping")
    assert (response.status, response.body) == (200, b"all good")
    assert response.headers["x-safefcgi"] == "ping"
    assert server.get("/ping/").status == 404  # only the exact path


def test_ping_waits_in_the_backlog_while_every_child_is_busy_at_maxchildren(start_server):
    # In prefork only a child answers; with all maxchildren busy a ping waits
    # in the listen backlog like any request, which the status page shows.
    server = start_server("--ping-path", "/ping", "--status-path", STATUS,
                          "--maxchildren", "1")
    slow = in_thread(server.get, "/sleep?seconds=2")
    sleeping_child(server, "2")

    ping = send_request(server.socket, "/ping")
    readable, _, _ = select.select([ping], [], [], 1.0)

    assert not readable, "a ping was answered although the only child was busy"
    assert read_response(ping).body == b"pong"
    slow["thread"].join(5)
    assert status(server)["max_children_reached"] >= 1


def test_ping_answers_while_all_children_are_busy_when_the_pool_can_grow(start_server):
    server = start_server("--ping-path", "/ping", "--minspare", "1", "--maxspare", "1",
                          "--maxchildren", "4")
    slow = [in_thread(server.get, "/sleep?seconds=3") for _ in range(2)]
    # Both sleep at once only if the pool grew: otherwise the second waits for the first.
    wait_until(lambda: server.log.count(" sleeps 3") == 2, 2.5,
               "two children sleeping 3 s", detail=lambda: server.log)

    started = time.monotonic()
    response = server.get("/ping", timeout=5)

    assert response.body == b"pong" and time.monotonic() - started < 2
    for outcome in slow:
        outcome["thread"].join(5)


def test_ping_says_stopping_during_the_drain_while_requests_are_still_served(start_server):
    server = start_server("--ping-path", "/ping", "--ping-drain", "2")
    assert server.get("/ping").body == b"pong"

    server.process.send_signal(signal.SIGTERM)
    drained = wait_until(lambda: server.get("/ping").status == 503, 3, "ping to say stopping")

    assert drained
    assert server.get("/ping").body == b"stopping\n"
    assert server.get("/hello").status == 200  # the site itself still answers
    assert os.path.exists(server.socket)
    assert server.wait_for_exit(10) == 0
    assert "ping answers 503 for 2 s" in server.log


def test_a_second_sigterm_skips_the_ping_drain(start_server):
    server = start_server("--ping-path", "/ping", "--ping-drain", "60")
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: server.get("/ping").status == 503, 3, "ping to say stopping")  # draining

    server.process.send_signal(signal.SIGTERM)

    assert server.wait_for_exit(10) == 0


# -- safefcgi status -----------------------------------------------------------------------

def test_status_command_prints_the_page(start_server):
    server = start_server("--status-path", STATUS)

    text = status_command("--socket", server.socket, "--full")
    as_json = status_command("--socket", server.socket, "--json")

    assert text.returncode == 0, text.stderr
    assert "accepted requests:" in text.stdout and "pid  state" in text.stdout
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["pool"] == "fixturesite_settings"


def test_status_command_over_tcp_with_another_path(start_server):
    port = free_tcp_port()
    start_server("--host", "127.0.0.1", "--port", str(port), "--status-path", "/_st",
                 wait=False)
    wait_until(lambda: status_command("--host", "127.0.0.1", "--port", str(port),
                                           "--path", "/_st", "--json").returncode == 0,
               15, "safefcgi status to answer over TCP")


def test_status_command_explains_a_server_without_status_page(start_server):
    server = start_server()
    result = status_command("--socket", server.socket)
    assert result.returncode == 1
    assert "was it started with --status-path /fcgi-status?" in result.stderr


def test_status_command_without_a_server_is_one_error_line(tmp_path):
    result = status_command("--socket", str(tmp_path / "nothing.sock"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "nothing.sock" in result.stderr


def test_threaded_mode_answers_ping_and_logs_access(start_server, tmp_path):
    access = tmp_path / "access.log"
    server = start_server("--method", "threaded", "--ping-path", "/ping", "--access-log",
                          str(access))
    assert server.get("/ping").body == b"pong"
    wait_until(lambda: '"GET /ping HTTP/1.1" 200 4 ' in access.read_text(), 10,
               "the ping request in the access log")

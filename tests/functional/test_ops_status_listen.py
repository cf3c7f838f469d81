"""--status-listen: the master answers the status page while every child is busy."""

import json
import signal
import subprocess
import sys
import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from safefcgi.fastcgi import client
from tests.support.ports import free_tcp_port
from tests.support.threads import in_thread
from tests.support.waiting import wait_until

STATUS = "/fcgi-status"


def test_status_socket_answers_at_once_while_both_children_sleep(start_server, tmp_path):
    status_socket = str(tmp_path / "status.sock")
    server = start_server("--maxchildren", "2", "--minspare", "2", "--maxspare", "2",
                          "--status-listen", status_socket)
    sleepers = [in_thread(server.get, "/sleep?seconds=4") for _ in range(2)]
    wait_until(lambda: server.log.count(" sleeps 4") == 2, 10, "both children asleep",
               detail=lambda: server.log)

    started = time.monotonic()
    response = client.request(status_socket, STATUS + "?json&full", timeout=5)
    took = time.monotonic() - started

    assert response.status == 200 and response.headers["x-safefcgi"] == "status"
    page = json.loads(response.body)
    assert page["active_children"] == 2 and page["idle_children"] == 0
    assert sorted(row["request"] for row in page["children"]) == ["GET /sleep?seconds=4"] * 2
    # Answered by the master: no child is free for seconds. Generous for a busy machine.
    assert took < 1.0, took
    assert all("thread" in s for s in sleepers)
    for sleeper in sleepers:
        sleeper["thread"].join(10)
        assert sleeper["value"].status == 200


def test_status_socket_over_loopback_tcp_serves_safefcgi_status_and_openmetrics(start_server):
    port = free_tcp_port()
    server = start_server("--status-listen", f"127.0.0.1:{port}")
    assert server.get("/hello").status == 200

    def status(*args):
        return subprocess.run([sys.executable, "-m", "safefcgi", "status", "--host",
                               "127.0.0.1", "--port", str(port), *args],
                              capture_output=True, text=True, timeout=30)

    text, metrics = status("--full"), status("--openmetrics")

    assert text.returncode == 0, text.stderr
    assert "accepted requests:" in text.stdout and "pid  state" in text.stdout
    assert metrics.returncode == 0, metrics.stderr
    families = {f.name: f for f in text_string_to_metric_families(metrics.stdout)}
    assert families["safefcgi_accepted_requests"].samples[0].value >= 1
    assert families["safefcgi_child_resident_memory_bytes"].samples


def test_status_socket_keeps_a_kept_open_connection_and_drops_a_silent_one(start_server,
                                                                           tmp_path):
    status_socket = str(tmp_path / "status.sock")
    server = start_server("--status-listen", status_socket)
    silent = client.connect(status_socket)  # sends nothing: must not hold up the master

    with client.Connection(status_socket, 5) as connection:
        first = connection.request(STATUS + "?json", keep_conn=True)
        second = connection.request(STATUS + "?json", keep_conn=True)

    assert json.loads(first.body)["pool"] == json.loads(second.body)["pool"]
    assert server.get("/hello").status == 200
    silent.close()


def test_status_listen_refuses_a_non_loopback_address(tmp_path):
    result = subprocess.run([sys.executable, "-m", "safefcgi", "run", "x.settings",
                             "--socket", str(tmp_path / "s.sock"),
                             "--status-listen", "0.0.0.0:9999"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "loopback only" in result.stderr


def test_status_socket_is_back_after_a_reload(start_server, tmp_path):
    status_socket = str(tmp_path / "status.sock")
    server = start_server("--status-listen", status_socket)
    before = json.loads(client.request(status_socket, STATUS + "?json", timeout=5).body)

    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "fresh children ready" in server.log, 30, "the reload",
               detail=lambda: server.log)

    after = json.loads(client.request(status_socket, STATUS + "?json", timeout=5).body)
    assert after["pid"] == before["pid"] == server.process.pid
    assert after["start_timestamp"] > before["start_timestamp"]  # a new image counts anew

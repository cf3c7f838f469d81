"""OpenMetrics from a real server: the status page and ``safefcgi status --openmetrics``,
read by prometheus_client's own parser."""

import subprocess
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

STATUS = "/fcgi-status"


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict, name: str, **labels) -> float:
    return next(s.value for s in found[name].samples if s.labels == labels)


def test_status_page_answers_openmetrics_to_the_query_and_to_prometheus_accept(start_server):
    server = start_server("--status-path", STATUS, "--maxchildren", "3", "--minspare", "2")
    for _ in range(5):
        assert server.get("/hello").status == 200

    by_query = server.get(f"{STATUS}?openmetrics")
    by_accept = server.get(STATUS, headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})

    for response in (by_query, by_accept):
        assert response.status == 200
        assert response.headers["content-type"].startswith("application/openmetrics-text")
    found = families(by_accept.body.decode())
    assert value(found, "safefcgi_accepted_requests") >= 5
    children = server.children()
    memory = {int(s.labels["pid"]): s.value
              for s in found["safefcgi_child_resident_memory_bytes"].samples}
    assert set(memory) == children and min(memory.values()) > 1024 ** 2
    assert value(found, "safefcgi_children", state="busy") >= 1  # the one answering
    assert "safefcgi_listen_queue_size" in found


def test_status_command_prints_openmetrics(start_server):
    server = start_server("--status-path", STATUS)

    result = subprocess.run([sys.executable, "-m", "safefcgi", "status", "--socket",
                             server.socket, "--openmetrics"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    found = families(result.stdout)
    assert value(found, "safefcgi_child_restarts", reason="memory_kill") == 0
    assert found["safefcgi_max_children"].samples[0].value == 50

"""`safefcgi check` finds what children would inherit, with the line that opened it."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.paths import PROJECT
from tests.support.ports import free_tcp_port


def check(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "safefcgi", "check", "doctorsite_settings", "--pythonpath",
         str(PROJECT), *args], capture_output=True, text=True, timeout=60, cwd=PROJECT,
        env={**os.environ, "DOCTORSITE_DB": str(tmp_path / "db.sqlite3"), **(env or {})})


def line_of(marker: str) -> int:
    text = (PROJECT / "doctorsite_urls.py").read_text().splitlines()
    return next(number for number, line in enumerate(text, 1) if marker in line)


def test_a_clean_project_passes(tmp_path):
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK: nothing is open at fork time in doctorsite_settings."


def test_an_import_time_query_is_found_with_its_file_and_line(tmp_path):
    result = check(tmp_path, env={"DOCTORSITE_IMPORT_QUERY": "1"})
    assert result.returncode == 1
    finding = next(line for line in result.stdout.splitlines() if line.startswith("INHERITED"))
    assert "database connection 'default'" in finding
    assert f"doctorsite_urls.py:{line_of('DOCTOR-QUERY-LINE')} in <module>" in finding


def test_a_client_socket_opened_at_import_is_found(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = check(tmp_path, env={"DOCTORSITE_CACHE_PORT": str(port)})
    assert result.returncode == 1
    assert f"socket to 127.0.0.1:{port}" in result.stdout
    assert f"doctorsite_urls.py:{line_of('DOCTOR-SOCKET-LINE')}" in result.stdout


def test_json_report_for_ci(tmp_path):
    result = check(tmp_path, "--json", env={"DOCTORSITE_IMPORT_QUERY": "1"})
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [f["severity"] for f in report["findings"]] == ["inherited"]
    assert report["findings"][0]["origin"].startswith("doctorsite_urls.py:")


@pytest.mark.parametrize("env, expected", [
    ({"DOCTORSITE_DEBUG": "1"}, "WARNING: DEBUG"),
    ({"DOCTORSITE_LOCMEM_SESSIONS": "1"}, "sessions live in a in-memory cache"),
])
def test_settings_that_make_prefork_unsafe_are_warned_about(tmp_path, env, expected):
    result = check(tmp_path, env=env)
    assert result.returncode == 0  # warnings alone do not fail the check
    assert expected in result.stdout


def test_a_missing_settings_module_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "safefcgi", "check", "nosuch.settings"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert "settings module nosuch.settings not found" in result.stderr


def test_a_cache_client_connected_at_import_is_found(tmp_path):
    """Django's PyMemcacheCache against a real memcached, queried while urls.py imports."""
    port = free_tcp_port()
    memcached = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                                  "-u", "nobody"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        result = check(tmp_path, env={"DOCTORSITE_MEMCACHED": f"127.0.0.1:{port}"})
    finally:
        os.killpg(memcached.pid, signal.SIGKILL)
        memcached.wait()
    assert result.returncode == 1, result.stdout + result.stderr
    finding = next(line for line in result.stdout.splitlines() if line.startswith("INHERITED"))
    assert f"socket to 127.0.0.1:{port}" in finding
    assert f"doctorsite_urls.py:{line_of('DOCTOR-CACHE-LINE')} in <module>" in finding

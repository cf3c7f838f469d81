"""Threads alive in the parent at fork time are named, by ``run`` and by ``check``."""

import os
import subprocess
import sys

from tests.support.paths import PROJECT

THREAD_ENV = {"FIXTURESITE_START_THREAD": "1"}


def start_line() -> int:
    text = (PROJECT / "fixturesite_threads.py").read_text().splitlines()
    return next(number for number, line in enumerate(text, 1) if "THREAD-START-LINE" in line)


def check(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "safefcgi", "check", "fixturesite_settings", "--pythonpath",
         str(PROJECT)], capture_output=True, text=True, timeout=60, cwd=PROJECT,
        env={**os.environ, **env})


def test_check_names_a_thread_the_settings_start_with_its_target_and_line():
    result = check(THREAD_ENV)

    assert result.returncode == 1, result.stdout + result.stderr
    finding = next(line for line in result.stdout.splitlines() if "metrics-flusher" in line)
    assert finding.startswith("INHERITED: thread 'metrics-flusher' "
                              "(target fixturesite_threads.flush_forever)")
    assert f"started at fixturesite_threads.py:{start_line()} in start" in finding


def test_check_passes_without_the_thread():
    result = check({})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "thread" not in result.stdout


def test_run_warns_about_the_thread_before_the_first_fork(start_server):
    server = start_server(env=THREAD_ENV)

    warning = next(line for line in server.log.splitlines() if "metrics-flusher" in line)
    assert "WARNING" in warning
    assert "thread 'metrics-flusher' (target fixturesite_threads.flush_forever)" in warning
    assert "before the first fork" in warning
    first_spawn = server.log.find("prefork master ready")
    assert 0 < server.log.find("metrics-flusher") < first_spawn
    assert server.get("/hello").status == 200


def test_run_is_quiet_without_threads(start_server):
    server = start_server()
    assert "before the first fork" not in server.log

"""What a forked child does with the parent's PostgreSQL connection, with and without safefcgi.

Real PostgreSQL, real fork: the probe script opens a connection, forks, and
reports which server backend each side talked to.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import EXAMPLE_DIR, REPO, SCRIPTS
from tests.support.processes import clean_environment

PROBE = SCRIPTS / "fork_probe.py"

pytestmark = pytest.mark.integration


def run_probe(mode: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, PROBE, mode], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**clean_environment(env), "PYTHONPATH": f"{EXAMPLE_DIR}:{REPO}"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_safefcgi_a_child_shares_and_kills_the_parent_session(postgres):
    report = run_probe("naive", postgres.django_env())
    # The child's query ran in the parent's server session ...
    assert report["child_backend"] == report["parent_backend"]
    # ... and closing it at "request end" terminated that session for the parent too.
    assert report["parent_alive_after_child"] is False
    assert "closed" in report["parent_error"] or "terminat" in report["parent_error"]


def test_child_never_reuses_parent_backend_pid(postgres):
    report = run_probe("safefcgi", postgres.django_env())
    assert "child_error" not in report
    assert report["child_backend"] != report["parent_backend"]
    assert report["parent_alive_after_child"] is True  # the child sent nothing on it


def test_child_never_reuses_the_parent_session_behind_pgbouncer(pgbouncer):
    report = run_probe("safefcgi", {**pgbouncer.django_env()})
    assert "child_error" not in report
    assert report["parent_alive_after_child"] is True


def test_before_fork_closes_a_connection_the_server_already_dropped(postgres):
    script = f"""
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()
from django.db import connection
from safefcgi.forksafety.lifecycle import DjangoForkSafety
import psycopg2
connection.ensure_connection()
backend = connection.connection.get_backend_pid()
killer = psycopg2.connect(host={str(postgres.socket_dir)!r}, port={postgres.port},
                          dbname="example", user="postgres")
killer.autocommit = True
killer.cursor().execute("SELECT pg_terminate_backend(%s)", (backend,))
DjangoForkSafety().before_fork()
assert connection.connection is None
print("closed without raising")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**clean_environment(postgres.django_env()),
             "PYTHONPATH": f"{EXAMPLE_DIR}:{REPO}"},
    )
    assert result.returncode == 0, result.stderr
    assert "closed without raising" in result.stdout
    assert "database connection 'default' was open at fork time" in result.stderr


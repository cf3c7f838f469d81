"""The project's WSGI_APPLICATION (or --wsgi-app) is what serves, as under runserver and runfcgi.

The fixture's wsgi.py wraps Django's handler in a middleware that adds an
``X-Wrapped-By`` header: a response without it was served past the wrapper.
"""

import os
import subprocess
import sys

import pytest

from tests.support.paths import PROJECT
from tests.support.servers import root_permission

WRAPPED = {"FIXTURESITE_WSGI_APPLICATION": "fixturesite_wsgi.application"}


def wrapped_by(response) -> str | None:
    return {name.lower(): value for name, value in response.headers.items()}.get("x-wrapped-by")


def line_of(marker: str) -> int:
    text = (PROJECT / "fixturesite_wsgi.py").read_text().splitlines()
    return next(number for number, line in enumerate(text, 1) if marker in line)


def run_to_completion(command, *args, env=None):
    serving = root_permission(args) if command == "run" else []
    return subprocess.run([sys.executable, "-m", "safefcgi", command, *args,
                           "--pythonpath", str(PROJECT), *serving],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("method", ["prefork", "threaded"])
def test_the_wrapper_wsgi_application_names_serves_every_request(start_server, method):
    server = start_server("--method", method, env=WRAPPED)

    for _ in range(3):
        response = server.get("/hello")
        assert response.status == 200
        assert response.body == b"Hello from the fixture site\n"
        assert wrapped_by(response) == "wsgi.py"
    assert "serving WSGI_APPLICATION fixturesite_wsgi.application" in server.log


def test_without_wsgi_application_django_serves_unwrapped(start_server):
    server = start_server()

    response = server.get("/hello")
    assert response.status == 200
    assert wrapped_by(response) is None


@pytest.mark.parametrize("spelling", [["--wsgi-app", "fixturesite_wsgi:alternative"],
                                      ["wsgi_app=fixturesite_wsgi:alternative"]])
def test_wsgi_app_names_another_callable_than_wsgi_application(start_server, spelling):
    server = start_server(*spelling, env=WRAPPED)

    response = server.get("/hello")
    assert response.status == 200
    assert wrapped_by(response) == "alternative"


def test_fork_safety_applies_to_a_query_made_in_the_wrapped_module(start_server, tmp_path):
    server = start_server("--maxchildren", "2", env={
        **WRAPPED, "FIXTURESITE_WSGI_QUERY": "1", "FIXTURESITE_DB": str(tmp_path / "db.sqlite3")})

    assert wrapped_by(server.get("/hello")) == "wsgi.py"
    assert "database connection 'default' was open at fork time" in server.log


def test_check_finds_the_query_made_in_the_wrapped_module(tmp_path):
    result = run_to_completion("check", "fixturesite_settings", env={
        **WRAPPED, "FIXTURESITE_WSGI_QUERY": "1", "FIXTURESITE_DB": str(tmp_path / "db.sqlite3")})

    assert result.returncode == 1, result.stdout + result.stderr
    finding = next(line for line in result.stdout.splitlines() if line.startswith("INHERITED"))
    assert "database connection 'default'" in finding
    assert f"fixturesite_wsgi.py:{line_of('WSGI-QUERY-LINE')} in <module>" in finding


def test_check_loads_the_callable_wsgi_app_names(tmp_path):
    result = run_to_completion("check", "fixturesite_settings", "--wsgi-app",
                               "fixturesite_wsgi:alternative", env={
                                   "FIXTURESITE_WSGI_QUERY": "1",
                                   "FIXTURESITE_DB": str(tmp_path / "db.sqlite3")})

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"fixturesite_wsgi.py:{line_of('WSGI-QUERY-LINE')}" in result.stdout


@pytest.mark.parametrize("args, env, message", [
    (["--wsgi-app", "nosuchmodule:application"], {},
     "cannot load --wsgi-app nosuchmodule:application: no module named nosuchmodule"),
    (["--wsgi-app", "fixturesite_wsgi:nothing"], {},
     "cannot load --wsgi-app fixturesite_wsgi:nothing: module fixturesite_wsgi has no "
     "attribute 'nothing'"),
    (["--wsgi-app", "fixturesite_wsgi:os"], {},
     "cannot load --wsgi-app fixturesite_wsgi:os: os is a module, not a WSGI callable"),
    ([], {"FIXTURESITE_WSGI_APPLICATION": "fixturesite_wsgi.missing"},
     "cannot load WSGI_APPLICATION fixturesite_wsgi.missing: module fixturesite_wsgi has no "
     "attribute 'missing'"),
])
def test_a_wsgi_application_that_is_not_there_is_one_error_line(tmp_path, args, env, message):
    result = run_to_completion("run", "fixturesite_settings", "--socket",
                               str(tmp_path / "s.sock"), *args, env=env)

    assert result.returncode == 4, result.stderr
    assert message in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s.sock").exists()


@pytest.mark.parametrize("value", ["fixturesite_wsgi", "fixturesite wsgi:app", "mod:"])
def test_a_malformed_wsgi_app_is_a_usage_error(tmp_path, value):
    result = run_to_completion("run", "fixturesite_settings", "--socket",
                               str(tmp_path / "s.sock"), "--wsgi-app", value)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"safefcgi: error: bad value {value!r} for option 'wsgi_app': expected "
        "MODULE:CALLABLE such as mysite.wsgi:application"]

"""Real web servers in front of one running safefcgi: nginx (with and without
fastcgi_keep_conn), lighttpd (as shipped, and without fix-root-scriptname), and
``cgi-fcgi`` from libfcgi-bin, each running the configuration files we ship.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import VENV_BIN
from tests.support.processes import HarnessError, Process, tail
from tests.support.servers import fixturesite_argv
from tests.support.waiting import WaitTimeout, wait_until
from tests.support.webservers import Lighttpd, Nginx

pytestmark = pytest.mark.integration

def start_safefcgi(base_dir: Path, *options: str) -> tuple[Process, Path]:
    base_dir.mkdir(parents=True, exist_ok=True)
    socket_path = base_dir / "fcgi.sock"
    hook_log = base_dir / "hooks.log"
    hook_log.touch()
    process = Process(
        "safefcgi", fixturesite_argv(socket_path, "--maxchildren", "3", *options),
        base_dir / "server.log", env={**os.environ, "FIXTURESITE_HOOK_LOG": str(hook_log)},
    ).start()
    try:
        wait_until(lambda: socket_path.exists() or not process.is_running(), 30,
                   "safefcgi to create its socket")
        if not process.is_running():
            raise HarnessError("safefcgi exited:\n" + tail(process.log_path))
    except (HarnessError, WaitTimeout):
        process.stop()
        raise
    return process, socket_path


@pytest.fixture(scope="module")
def fronts(tmp_path_factory):
    """One safefcgi with every web server in front; one more with --script-name /
    for lighttpd without fix-root-scriptname. Yields {name: (port, safefcgi)}."""
    base = Path(tmp_path_factory.mktemp("web"))
    base.chmod(0o755)
    started = []
    try:
        server, socket_path = start_safefcgi(base / "a")
        started.append(server)
        rooted, rooted_socket = start_safefcgi(base / "b", "--script-name", "/")
        started.append(rooted)
        fronts = {
            "nginx-keep-conn": Nginx(base / "nginx-keep", socket_path, keep_conn=True),
            "nginx": Nginx(base / "nginx", socket_path, keep_conn=False),
            "lighttpd": Lighttpd(base / "lighttpd", socket_path),
            "lighttpd-unfixed-root": Lighttpd(base / "lighttpd-unfixed", rooted_socket,
                                              fix_root_scriptname=False),
        }
        for front in fronts.values():
            started.append(front)  # before start(): a front that fails half-way is stopped too
            front.start()
        yield {name: (front.port, rooted if name.endswith("unfixed-root") else server)
               for name, front in fronts.items()} | {"socket": socket_path, "server": server}
    finally:
        for process in reversed(started):
            process.stop()


FRONTS = ["nginx-keep-conn", "nginx", "lighttpd", "lighttpd-unfixed-root"]


@pytest.fixture(autouse=True)
def no_protocol_problem_logged(fronts):
    """After each test: neither server logged malformed input or an internal error."""
    servers = {id(server): server for _, server in (fronts[name] for name in FRONTS)}
    seen = {key: len(server.log()) for key, server in servers.items()}
    yield
    for key, server in servers.items():
        new = server.log()[seen[key]:]
        assert "malformed" not in new and "internal error" not in new, new


def fetch(port: int, method: str, path: str, body=None, headers=None,
         connection: http.client.HTTPConnection | None = None):
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response, data


@pytest.mark.parametrize("front", FRONTS)
def test_non_ascii_path_and_query_reach_django_intact(fronts, front):
    port, _ = fronts[front]
    response, data = fetch(port, "GET", "/p/echo/caf%C3%A9/%E6%97%A5%E6%9C%AC?q=%C3%BC")
    assert response.status == 200, data
    answer = json.loads(data)
    assert (answer["script_name"], answer["path"]) == ("", "/p/echo/café/日本")
    assert answer["query"] == {"q": "ü"}


@pytest.mark.parametrize("front", FRONTS)
def test_post_body_and_latin1_header_pass_through(fronts, front):
    port, _ = fronts[front]
    response, data = fetch(port, "POST", "/p/echo/form", body=b"a=1&b=%C3%A9",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert json.loads(data)["body"] == "a=1&b=%C3%A9"
    response, _ = fetch(port, "GET", "/latin1")
    assert response.getheader("Content-Disposition").encode("latin-1") == \
        "attachment; filename=café.txt".encode("latin-1")


@pytest.mark.parametrize("front", FRONTS)
def test_upload_and_streaming_download(fronts, front):
    port, _ = fronts[front]
    payload = os.urandom(256) * 40_000  # 10 MB
    response, data = fetch(port, "POST", "/p/raw", body=payload,
                          headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200, data
    assert json.loads(data)["sha256"] == hashlib.sha256(payload).hexdigest()
    response, data = fetch(port, "GET", "/p/stream?count=200&size=50000")
    assert response.status == 200 and data == b"x" * 10_000_000


def test_nginx_keep_conn_carries_several_requests_per_connection(fronts):
    port, _ = fronts["nginx-keep-conn"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    counts = [json.loads(fetch(port, "GET", f"/p/echo/{n}", connection=conn)[1])
              ["connection_requests"] for n in range(12)]
    conn.close()
    assert max(counts) > 1, counts


def test_nginx_without_keep_conn_uses_a_connection_per_request(fronts):
    port, _ = fronts["nginx"]
    counts = {json.loads(fetch(port, "GET", f"/p/echo/{n}")[1])["connection_requests"]
              for n in range(6)}
    assert counts == {1}


def test_cgi_fcgi_against_the_same_server(fronts):
    cgi_fcgi = shutil.which("cgi-fcgi") or "/usr/bin/cgi-fcgi"
    env = {"REQUEST_METHOD": "POST", "REQUEST_URI": "/p/echo/caf%C3%A9?x=1",
           "SERVER_NAME": "localhost", "SERVER_PORT": "80", "HTTP_HOST": "localhost",
           "CONTENT_LENGTH": "5", "CONTENT_TYPE": "text/plain", "SERVER_PROTOCOL": "HTTP/1.1"}
    completed = subprocess.run([cgi_fcgi, "-bind", "-connect", str(fronts["socket"])],
                               input=b"hello", env=env, capture_output=True, timeout=30)
    head, _, body = completed.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200"), completed.stdout[:500]
    answer = json.loads(body)
    assert (answer["path"], answer["query"], answer["body"]) == ("/p/echo/café", {"x": "1"},
                                                                 "hello")


def test_safefcgi_request_against_the_same_server(fronts):
    completed = subprocess.run(
        [VENV_BIN / "safefcgi", "request", "--socket", str(fronts["socket"]),
         "--body-only", "/p/echo/cli?x=2"], capture_output=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["query"] == {"x": "2"}

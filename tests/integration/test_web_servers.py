"""Real web servers in front of one running safefcgi, each running the file we ship in conf/:
nginx (with and without fastcgi_keep_conn), lighttpd (as shipped, and without
fix-root-scriptname), Apache mod_proxy_fcgi (SetHandler and ProxyPass, each with
and without enablereuse), Apache mod_fcgid (which starts a safefcgi of its own),
Caddy, H2O (with and without kept connections), and ``cgi-fcgi`` from libfcgi-bin.

Every front is started once for the module; the tests run the same requests
through each of them.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.paths import VENV_BIN
from tests.support.processes import alive, descendants
from tests.support.servers import RunningServer
from tests.support.waiting import wait_until
from tests.support.webservers import (
    STATIC_FILE,
    STATIC_TEXT,
    ApacheFcgid,
    ApacheProxyFcgi,
    Caddy,
    FrontServer,
    H2o,
    Lighttpd,
    Nginx,
    without_lines,
)

pytestmark = pytest.mark.integration

TICKS = "/p/ticks?count=3&interval=1"
# Three lines a second apart: streamed, each arrives about a second after the
# previous one; buffered, all arrive together at the end.
STREAM_GAP = 0.5


@dataclass(frozen=True)
class Shape:
    """What the shipped file makes a front do, as its comments say."""

    keeps_connections: bool
    streams: bool
    serves_static: bool = True


FRONTS = {
    "nginx-keep-conn": Shape(keeps_connections=True, streams=True),
    "nginx": Shape(keeps_connections=False, streams=False),
    "lighttpd": Shape(keeps_connections=False, streams=True, serves_static=False),
    "lighttpd-unfixed-root": Shape(keeps_connections=False, streams=True, serves_static=False),
    "apache-sethandler": Shape(keeps_connections=False, streams=True),
    "apache-sethandler-keep-conn": Shape(keeps_connections=True, streams=True),
    "apache-proxypass": Shape(keeps_connections=False, streams=True),
    "apache-proxypass-keep-conn": Shape(keeps_connections=True, streams=True),
    "apache-fcgid": Shape(keeps_connections=False, streams=True),
    "caddy": Shape(keeps_connections=False, streams=True),
    "h2o": Shape(keeps_connections=False, streams=True),
    "h2o-keep-conn": Shape(keeps_connections=True, streams=True),
}
# The ProxyFCGISetEnvIf lines of conf/apache-sethandler.conf, which the
# variant "apache-sethandler-unfixed" runs without.
SETHANDLER_FIXUPS = r"^\s*ProxyFCGISetEnvIf "


@dataclass
class Running:
    """A started front: its port, and the log of the safefcgi behind it."""

    front: FrontServer
    safefcgi_log: Callable[[], str]

    @property
    def port(self) -> int:
        return self.front.port


def _make_fronts(base: Path, socket_path: Path, rooted_socket: Path) -> dict[str, FrontServer]:
    def apache(name: str, site_file: str, keep_conn: bool, edit=None) -> ApacheProxyFcgi:
        return ApacheProxyFcgi(base / name, site_file, socket_path, keep_conn, edit)

    return {
        "nginx-keep-conn": Nginx(base / "nginx-keep", socket_path, keep_conn=True),
        "nginx": Nginx(base / "nginx", socket_path, keep_conn=False),
        "lighttpd": Lighttpd(base / "lighttpd", socket_path),
        "lighttpd-unfixed-root": Lighttpd(base / "lighttpd-unfixed", rooted_socket,
                                          fix_root_scriptname=False),
        "apache-sethandler": apache("ap-sh", "apache-sethandler.conf", False),
        "apache-sethandler-keep-conn": apache("ap-sh-keep", "apache-sethandler.conf", True),
        "apache-sethandler-unfixed": apache(
            "ap-sh-unfixed", "apache-sethandler.conf", False,
            lambda text: without_lines(text, SETHANDLER_FIXUPS, 2)),
        "apache-proxypass": apache("ap-pp", "apache-proxypass.conf", False),
        "apache-proxypass-keep-conn": apache("ap-pp-keep", "apache-proxypass.conf", True),
        "apache-fcgid": ApacheFcgid(base / "ap-fcgid"),
        "caddy": Caddy(base / "caddy", socket_path),
        "h2o": H2o(base / "h2o", socket_path, keep_conn=False),
        "h2o-keep-conn": H2o(base / "h2o-keep", socket_path, keep_conn=True),
    }


@pytest.fixture(scope="module")
def fronts(scratch_dir):
    """One safefcgi with every web server in front; one more with --script-name /
    for lighttpd without fix-root-scriptname. Yields {name: Running} plus the
    shared server's "socket"."""
    base = scratch_dir / "web"
    base.mkdir()
    started = []

    def safefcgi(directory: Path, *options: str) -> RunningServer:
        """The fixture project on a unix socket any local user may connect to
        (Apache drops to its own user)."""
        directory.mkdir()
        server = RunningServer(directory, ["--socket-mode", "0666", *options], {})
        started.append(server)
        server.wait_until_serving()
        return server

    try:
        # Children enough for one request through every front at once, plus
        # the connections the keep-conn fronts hold open between requests.
        server = safefcgi(base / "a", "--maxchildren", "24")
        rooted = safefcgi(base / "b", "--maxchildren", "3", "--script-name", "/")
        running = {}
        for name, front in _make_fronts(base, Path(server.socket), Path(rooted.socket)).items():
            started.append(front)  # before start(): a front that fails half-way is stopped too
            front.start()
            behind = rooted if name == "lighttpd-unfixed-root" else server
            running[name] = Running(front, getattr(front, "safefcgi_log", lambda b=behind: b.log))
        yield running | {"socket": server.socket}
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture(autouse=True)
def no_protocol_problem_logged(fronts):
    """After each test: no safefcgi logged malformed input or an internal error."""
    logs = {name: fronts[name].safefcgi_log for name in FRONTS}
    seen = {name: len(log()) for name, log in logs.items()}
    yield
    for name, log in logs.items():
        new = log()[seen[name]:]
        assert "malformed" not in new and "internal error" not in new, (name, new)


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
    port = fronts[front].port
    response, data = fetch(port, "GET", "/p/echo/caf%C3%A9/%E6%97%A5%E6%9C%AC?q=%C3%BC")
    assert response.status == 200, data
    answer = json.loads(data)
    assert (answer["script_name"], answer["path"]) == ("", "/p/echo/café/日本")
    assert answer["path_info"] == "/p/echo/café/日本"
    assert answer["query"] == {"q": "ü"}
    # The prefix Django links with is the site root, not a piece of the path.
    assert answer["reversed"] == quote("/p/echo/café/日本")


@pytest.mark.parametrize("front", FRONTS)
def test_post_body_and_headers_pass_through(fronts, front):
    port = fronts[front].port
    response, data = fetch(port, "POST", "/p/echo/form", body=b"a=1&b=%C3%A9", headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Test": "yes",
        "Authorization": "Bearer token-1"})
    assert response.status == 200, data
    answer = json.loads(data)
    assert (answer["body"], answer["x_test"], answer["authorization"]) == \
        ("a=1&b=%C3%A9", "yes", "Bearer token-1")
    response, _ = fetch(port, "GET", "/latin1")
    assert response.getheader("Content-Disposition").encode("latin-1") == \
        "attachment; filename=café.txt".encode("latin-1")
    assert response.getheader("Status") is None  # the CGI status line is not a header


@pytest.mark.parametrize("front", FRONTS)
def test_upload_and_streaming_download(fronts, front):
    port = fronts[front].port
    payload = os.urandom(256) * 40_000  # 10 MB
    response, data = fetch(port, "POST", "/p/raw", body=payload,
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200, data
    assert json.loads(data)["sha256"] == hashlib.sha256(payload).hexdigest()
    response, data = fetch(port, "GET", "/p/stream?count=200&size=50000")
    assert response.status == 200 and data == b"x" * 10_000_000


@pytest.mark.parametrize("front", [name for name, shape in FRONTS.items() if shape.serves_static])
def test_static_files_come_from_the_web_server(fronts, front):
    response, data = fetch(fronts[front].port, "GET", f"/static/{STATIC_FILE}")
    assert (response.status, data.decode()) == (200, STATIC_TEXT)


def _tick_arrivals(port: int, path: str = TICKS) -> tuple[bytes, list[float]]:
    """Read /p/ticks as it comes: the body, and when each line had arrived (seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        start = time.monotonic()
        conn.request("GET", path)
        response = conn.getresponse()
        body, arrivals = b"", []
        while data := response.read1(65536):
            body += data
            arrivals += [time.monotonic() - start] * (body.count(b"\n") - len(arrivals))
        return body, arrivals
    finally:
        conn.close()


# nginx's per-response switch, which the comment in conf/nginx.conf recommends.
UNBUFFERED_NGINX = ("nginx", TICKS + "&x_accel_buffering=no")


@pytest.fixture(scope="module")
def tick_arrivals(fronts):
    """/p/ticks through every front at the same time (one wait of 2 s for all)."""
    cases = {name: (name, TICKS) for name in FRONTS} | {UNBUFFERED_NGINX: UNBUFFERED_NGINX}
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {case: pool.submit(_tick_arrivals, fronts[name].port, path)
                   for case, (name, path) in cases.items()}
        return {case: future.result() for case, future in futures.items()}


def _assert_ticks(body: bytes, arrivals: list[float], streamed: bool) -> None:
    """Three lines a second apart: a second apart at the client, or all at the end."""
    assert body == b"tick 0\ntick 1\ntick 2\n"
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    if streamed:
        assert min(gaps) >= STREAM_GAP, arrivals
    else:
        assert max(gaps) < STREAM_GAP and arrivals[0] >= 2 - STREAM_GAP, arrivals


@pytest.mark.parametrize("front", FRONTS)
def test_streaming_response_reaches_the_client_as_the_config_says(tick_arrivals, front):
    _assert_ticks(*tick_arrivals[front], streamed=FRONTS[front].streams)


def test_x_accel_buffering_no_streams_through_nginx_without_keep_conn(tick_arrivals):
    _assert_ticks(*tick_arrivals[UNBUFFERED_NGINX], streamed=True)


@pytest.mark.parametrize("front", [name for name, shape in FRONTS.items()
                                   if shape.keeps_connections])
def test_kept_connections_carry_several_requests(fronts, front):
    port = fronts[front].port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    counts = [json.loads(fetch(port, "GET", f"/p/echo/{n}", connection=conn)[1])
              ["connection_requests"] for n in range(12)]
    conn.close()
    assert max(counts) > 1, counts


@pytest.mark.parametrize("front", [name for name, shape in FRONTS.items()
                                   if not shape.keeps_connections])
def test_one_connection_per_request(fronts, front):
    port = fronts[front].port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    counts = {json.loads(fetch(port, "GET", f"/p/echo/{n}", connection=conn)[1])
              ["connection_requests"] for n in range(6)}
    conn.close()
    assert counts == {1}


def test_apache_sethandler_splits_the_path_where_the_filesystem_ends(fronts):
    """Why conf/apache-sethandler.conf rewrites SCRIPT_NAME and PATH_INFO: without
    those lines Apache cuts the path at the first directory missing under the
    DocumentRoot, and Django resolves (and links) only the rest."""
    response, data = fetch(fronts["apache-sethandler-unfixed"].port, "GET", "/x/p/echo/y")
    assert response.status == 200, data
    answer = json.loads(data)
    assert (answer["script_name"], answer["path_info"]) == ("/x", "/p/echo/y")
    assert answer["reversed"] == "/x/p/echo/y"
    response, _ = fetch(fronts["apache-sethandler-unfixed"].port, "GET", "/p/echo/y")
    assert response.status == 404  # Django was asked for /echo/y


def test_mod_fcgid_starts_safefcgi_on_the_socket_it_passes(fronts):
    running = fronts["apache-fcgid"]
    assert fetch(running.port, "GET", "/hello")[0].status == 200
    log = running.safefcgi_log()
    assert "safefcgi serving fixturesite_settings on fd:0 (passed by the web server)" in log


def test_stopping_apache_stops_the_safefcgi_mod_fcgid_started(scratch_dir):
    apache = ApacheFcgid(scratch_dir / "fcgid-stop")
    try:
        apache.start()
        assert fetch(apache.port, "GET", "/hello")[0].status == 200
        tree = descendants(apache.process.pid)
        masters = [line for line in apache.safefcgi_log().splitlines()
                   if "safefcgi serving" in line]
        assert len(masters) == 1, masters
        apache.process.send_signal(signal.SIGTERM)  # to Apache's parent alone
        assert apache.process.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in tree), 10,
                   "every process Apache started to exit")
        assert "all children have exited" in apache.safefcgi_log()
    finally:
        apache.stop()


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

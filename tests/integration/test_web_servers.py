"""Real web servers in front of one running safefcgi: nginx (with and without
fastcgi_keep_conn), lighttpd (as shipped, and without fix-root-scriptname), and
``cgi-fcgi`` from libfcgi-bin, each running the configuration files we ship.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import (
    LIGHTTPD_CONF,
    REPO,
    HarnessError,
    Process,
    free_port,
    tail,
    wait_until,
)
from .lighttpd_conf import render_lighttpd_conf

pytestmark = pytest.mark.integration

PROJECT = REPO / "tests" / "functional" / "project"
NGINX_CONF = REPO / "conf" / "nginx.conf"
SITE_LINE = re.compile(r"^(\s*)(\w+)\s+.*;\s*# site$", re.MULTILINE)
KEEP_CONN_LINE = re.compile(r"^.*# keep-conn\n", re.MULTILINE)


def render_nginx_conf(template: str, values: dict[str, str], keep_conn: bool) -> str:
    """Rewrite the ``# site`` lines of the shipped server block (by directive name)."""
    unused = set(values)

    def replace(match: re.Match) -> str:
        indent, directive = match.group(1), match.group(2)
        unused.discard(directive)
        return f"{indent}{directive} {values[directive]};  # site"

    text = SITE_LINE.sub(replace, template)
    if unused:
        raise HarnessError(f"{NGINX_CONF} has no '# site' line for {sorted(unused)}")
    return text if keep_conn else KEEP_CONN_LINE.sub("", text)


class Nginx:
    """nginx running the shipped server block inside a minimal main configuration."""

    def __init__(self, base_dir: Path, socket_path: Path, keep_conn: bool):
        self.base_dir = base_dir
        self.port = free_port()
        base_dir.mkdir(parents=True, exist_ok=True)
        site = render_nginx_conf(NGINX_CONF.read_text(), {
            "server": f"unix:{socket_path}", "listen": f"127.0.0.1:{self.port}",
            "alias": f"{base_dir}/static/",
        }, keep_conn)
        (base_dir / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(f"  {kind}_temp_path {base_dir}/{kind};"
                         for kind in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"))
        (base_dir / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {base_dir}/nginx.pid;\n"
            f"error_log {base_dir}/error.log;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n{temp}\n  include {base_dir}/site.conf;\n}}\n")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = Process("nginx", [nginx, "-p", base_dir, "-c", base_dir / "nginx.conf"],
                               base_dir / "nginx.log")

    def start(self) -> Nginx:
        self.process.start()
        wait_until(lambda: _listens(self.process, self.port, self.base_dir / "error.log"), 10,
                   "nginx to listen")
        return self

    def stop(self) -> None:
        self.process.stop()


class Lighttpd:
    """lighttpd running conf/lighttpd.conf, optionally without fix-root-scriptname."""

    def __init__(self, base_dir: Path, socket_path: Path, fix_root_scriptname: bool = True):
        self.base_dir = base_dir
        self.port = free_port()
        base_dir.mkdir(parents=True, exist_ok=True)
        (base_dir / "htdocs").mkdir(exist_ok=True)
        text = render_lighttpd_conf(LIGHTTPD_CONF.read_text(), {
            "safefcgi_socket": str(socket_path), "server_bind": "127.0.0.1",
            "server_port": self.port, "document_root": str(base_dir / "htdocs"),
            "error_log": str(base_dir / "error.log"), "pid_file": str(base_dir / "pid"),
            "server_user": "", "server_group": "",
        })
        if not fix_root_scriptname:
            text, count = re.subn(r'^\s*"fix-root-scriptname" => "enable",\n', "", text,
                                  flags=re.MULTILINE)
            assert count == 1, "conf/lighttpd.conf no longer sets fix-root-scriptname"
        (base_dir / "lighttpd.conf").write_text(text)
        lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
        self.process = Process("lighttpd", [lighttpd, "-D", "-f", base_dir / "lighttpd.conf"],
                               base_dir / "lighttpd.log")

    def start(self) -> Lighttpd:
        self.process.start()
        wait_until(lambda: _listens(self.process, self.port, self.base_dir / "error.log"), 10,
                   "lighttpd to listen")
        return self

    def stop(self) -> None:
        self.process.stop()


def _listens(process: Process, port: int, error_log: Path) -> bool:
    if not process.is_running():
        raise HarnessError(f"{process.name} exited:\n{tail(process.log_path)}\n"
                           f"{tail(error_log)}")
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
    except OSError:
        return False
    return True


def start_safefcgi(base_dir: Path, *options: str) -> tuple[Process, Path]:
    base_dir.mkdir(parents=True, exist_ok=True)
    socket_path = base_dir / "fcgi.sock"
    hook_log = base_dir / "hooks.log"
    hook_log.touch()
    process = Process(
        "safefcgi",
        [Path(sys.executable).parent / "safefcgi", "run", "fixturesite_settings",
         "--pythonpath", PROJECT, "--socket", socket_path, "--maxchildren", "3", *options,
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        base_dir / "server.log", env={**os.environ, "FIXTURESITE_HOOK_LOG": str(hook_log)},
    ).start()
    try:
        wait_until(lambda: socket_path.exists() or not process.is_running(), 30,
                   "safefcgi to create its socket")
        if not process.is_running():
            raise HarnessError("safefcgi exited:\n" + tail(process.log_path))
    except HarnessError:
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
        [Path(sys.executable).parent / "safefcgi", "request", "--socket", str(fronts["socket"]),
         "--body-only", "/p/echo/cli?x=2"], capture_output=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["query"] == {"x": "2"}

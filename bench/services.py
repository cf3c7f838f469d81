"""The processes a benchmark run starts: PostgreSQL, the backends, one nginx.

Each backend listens on its own unix socket; nginx has one loopback port per
contender and passes requests on with fastcgi_pass (or proxy_pass for
gunicorn). Every process runs in its own process group, so stopping one
stops its children too (tests/support/processes.Process).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.paths import EXAMPLE_DIR, REPO, VENV_BIN
from tests.support.ports import free_tcp_port
from tests.support.postgres import PostgresCluster
from tests.support.processes import Process, clean_environment, tail
from tests.support.waiting import wait_until
from tests.support.webservers import http_get

BENCH_DIR = REPO / "bench"
SITE_DIR = BENCH_DIR / "site"
LAUNCHERS = BENCH_DIR / "launchers"
NGINX_WORKERS = 2
START_TIMEOUT = 60.0

DJANGO_SETTINGS = "benchsite.settings"
DJANGO_WSGI = "benchsite.wsgi:application"
PLAIN_WSGI = "benchsite.plain:application"


@dataclass
class Contender:
    """One server under test: how to start it and how nginx reaches it."""

    name: str
    argv: list
    socket: Path
    protocol: str = "fastcgi"  # or "http" (nginx proxy_pass), "uwsgi" (nginx uwsgi_pass)
    keepalive: int = 0  # >0: nginx fastcgi_keep_conn with an upstream keepalive of this many
    env: dict = field(default_factory=dict)
    port: int = 0
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, log_dir: Path) -> None:
        if self.socket.exists():
            self.socket.unlink()
        self.process = Process(self.name, self.argv, log_dir / f"{self.name}.log",
                               env=clean_environment(self.env), cwd=REPO).start()

    def wait_for_socket(self) -> None:
        def ready() -> bool:
            if not self.process.is_running():
                raise RuntimeError(f"{self.name} exited:\n{tail(self.process.log_path)}")
            return self.socket.exists()

        wait_until(ready, START_TIMEOUT, f"{self.name} to create {self.socket}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None


def _as_root() -> list[str]:
    return ["--allow-root"] if os.geteuid() == 0 else []


def safefcgi(name: str, socket: Path, children: int, env: dict, *, plain: bool = False,
             threaded: bool = False, keepalive: int = 0, threads: int = 16,
             lazy: bool = False) -> Contender:
    if threaded:
        pool = ["--method", "threaded", "--minspare", "4", "--maxspare", str(threads),
                "--maxthreads", str(threads)]
    else:
        pool = ["--minspare", str(children), "--maxspare", str(children),
                "--maxchildren", str(children)]
    common = ["--pythonpath", SITE_DIR, "--pythonpath", EXAMPLE_DIR, "--socket", socket,
              *pool, *_as_root(), *(["--lazy"] if lazy else [])]
    if plain:
        argv = [sys.executable, LAUNCHERS / "safefcgi_plain.py", *common]
    else:
        argv = [VENV_BIN / "safefcgi", "run", DJANGO_SETTINGS, *common]
    return Contender(name, argv, socket, keepalive=keepalive, env=env)


def flup(name: str, socket: Path, children: int, env: dict, *, plain: bool = False) -> Contender:
    app = ["--app", PLAIN_WSGI] if plain else ["--settings", DJANGO_SETTINGS]
    argv = [sys.executable, LAUNCHERS / "flup_server.py", *app, "--socket", socket,
            "--children", children]
    return Contender(name, argv, socket, env={**env, "PYTHONPATH": f"{SITE_DIR}:{EXAMPLE_DIR}"})


def uwsgi(name: str, socket: Path, children: int, env: dict, *, plain: bool = False) -> Contender:
    argv = [VENV_BIN / "uwsgi", "--fastcgi-socket", socket, "--master", "--processes", children,
            "--home", VENV_BIN.parent, "--pythonpath", SITE_DIR, "--pythonpath", EXAMPLE_DIR,
            "--module", PLAIN_WSGI if plain else DJANGO_WSGI, "--need-app",
            "--disable-logging", "--die-on-term", "--buffer-size", "32768",
            # Its default backlog (100) turns a burst of 256 connections into 502s.
            "--listen", "1024"]
    return Contender(name, argv, socket, env=env)


def gunicorn(name: str, socket: Path, children: int, env: dict, *,
             plain: bool = False, protocol: str = "http") -> Contender:
    """gunicorn's sync workers; ``protocol`` "uwsgi" speaks uWSGI's binary protocol."""
    argv = [VENV_BIN / "gunicorn", "--workers", children, "--worker-class", "sync",
            "--bind", f"unix:{socket}", "--pythonpath", f"{SITE_DIR},{EXAMPLE_DIR}",
            "--protocol", protocol, "--log-level", "warning",
            PLAIN_WSGI if plain else DJANGO_WSGI]
    return Contender(name, argv, socket, protocol=protocol, env=env)


# -- nginx -----------------------------------------------------------------------------


def fastcgi_params() -> str:
    """The fastcgi_param lines of the shipped conf/nginx.conf: what users will run."""
    lines = (REPO / "conf" / "nginx.conf").read_text().splitlines()
    return "\n".join("        " + line.strip() for line in lines
                     if re.match(r"\s*fastcgi_param\s", line))


UWSGI_PARAMS = "/etc/nginx/uwsgi_params"  # shipped with every Debian nginx

NGINX_MAIN = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    fastcgi_temp_path {dir}/fastcgi;
    proxy_temp_path {dir}/proxy;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 200m;
    # A 1 MiB response stays in memory instead of going through a temp file.
    fastcgi_buffers 32 64k;
    proxy_buffers 32 64k;
    uwsgi_buffers 32 64k;
    fastcgi_read_timeout 60s;
    proxy_read_timeout 60s;
    uwsgi_read_timeout 60s;
{servers}
}}
"""

FASTCGI_SERVER = """\
    upstream {name} {{
        server unix:{socket};
        {keepalive}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            fastcgi_pass {name};
            {keep_conn}
{params}
        }}
    }}
"""

HTTP_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://unix:{socket}:;
            proxy_set_header Host $host;
        }}
    }}
"""


UWSGI_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            uwsgi_pass unix:{socket};
            include {params};
        }}
    }}
"""


class Nginx:
    """One nginx (two workers, as many as cores) with a port per contender."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir / "nginx"
        self.process: Process | None = None

    def render(self, contenders: list[Contender]) -> str:
        servers = []
        for contender in contenders:
            if contender.protocol == "http":
                servers.append(HTTP_SERVER.format(port=contender.port, socket=contender.socket))
                continue
            if contender.protocol == "uwsgi":
                servers.append(UWSGI_SERVER.format(port=contender.port, socket=contender.socket,
                                                   params=UWSGI_PARAMS))
                continue
            keep = contender.keepalive
            servers.append(FASTCGI_SERVER.format(
                name=re.sub(r"\W", "_", contender.name), socket=contender.socket,
                port=contender.port, params=fastcgi_params(),
                keepalive=f"keepalive {keep};" if keep else "",
                keep_conn="fastcgi_keep_conn on;" if keep else ""))
        user = "user root root;" if os.geteuid() == 0 else ""
        return NGINX_MAIN.format(workers=NGINX_WORKERS, dir=self.base_dir, user=user,
                                 servers="".join(servers))

    def start(self, contenders: list[Contender]) -> None:
        for contender in contenders:
            if not contender.port:
                contender.port = free_tcp_port()
        if self.base_dir.exists():
            shutil.rmtree(self.base_dir)
        self.base_dir.mkdir(parents=True)
        conf = self.base_dir / "nginx.conf"
        conf.write_text(self.render(contenders))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = Process("nginx", [nginx, "-c", conf, "-p", self.base_dir],
                               self.base_dir / "nginx.log").start()
        for contender in contenders:
            wait_until(lambda c=contender: self._answers(c), START_TIMEOUT,
                       f"{contender.name} to answer through nginx")

    def _answers(self, contender: Contender) -> bool:
        if not self.process.is_running():
            raise RuntimeError("nginx exited:\n" + tail(self.process.log_path)
                               + tail(self.base_dir / "nginx-error.log"))
        if contender.process is not None and not contender.process.is_running():
            raise RuntimeError(f"{contender.name} exited:\n{tail(contender.process.log_path)}")
        try:
            status, _ = http_get(contender.url, "/bench/hello", timeout=10)
        except OSError:
            return False
        return status == 200

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def upload(port: int, path: str, size: int, chunk: bytes, timeout: float = 120.0
           ) -> tuple[int, bytes]:
    """POST ``size`` bytes made of ``chunk`` repeated, streamed (never built whole)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        sent = 0
        while sent < size:
            piece = chunk[:size - sent]
            conn.send(piece)
            sent += len(piece)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_postgres(base_dir: Path) -> PostgresCluster:
    directory = base_dir / "postgres"
    directory.mkdir(parents=True, exist_ok=True)
    return PostgresCluster(directory).start()


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)

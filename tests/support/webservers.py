"""Web servers in front of the server under test, running the configuration files we ship.

Only the lines the shipped files mark for a site (lighttpd's ``var.`` lines,
nginx's ``# site`` and ``# app host`` lines) are rewritten; everything else is
the file users copy.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .lighttpd_conf import render_lighttpd_conf
from .paths import CONF, REPO
from .ports import free_tcp_port
from .processes import HarnessError, Process, clean_environment, tail
from .waiting import wait_until

LIGHTTPD_CONF = CONF / "lighttpd.conf"
NGINX_CONF = CONF / "nginx.conf"
SITE_LINE = re.compile(r"^(\s*)(\w+)\s+.*;\s*# site$", re.MULTILINE)
KEEP_CONN_LINE = re.compile(r"^.*# keep-conn\n", re.MULTILINE)
APP_HOST_LINE = re.compile(r"^(\s*server\s+)\S+(.*;\s*# app host)$", re.MULTILINE)
FIX_ROOT_SCRIPTNAME_LINE = re.compile(r'^\s*"fix-root-scriptname" => "enable",\n', re.MULTILINE)


def lighttpd_binary() -> str:
    return shutil.which("lighttpd") or "/usr/sbin/lighttpd"


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def http_get(url: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def listens(process: Process, port: int, error_log: Path) -> bool:
    """True once ``process`` accepts connections on ``port``; fail with its logs if it exited."""
    if not process.is_running():
        raise HarnessError(f"{process.name} exited:\n{tail(process.log_path)}\n"
                           f"{tail(error_log)}")
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
    except OSError:
        return False
    return True


def render_nginx_conf(template: str, values: Mapping[str, str], keep_conn: bool) -> str:
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


def render_nginx_cluster_conf(template: str, listen: str, app_hosts: Sequence[str]) -> str:
    """Rewrite the ``# site`` listen line and the ``# app host`` server addresses, in order."""
    addresses = iter(app_hosts)
    text, listens_found = SITE_LINE.subn(
        lambda m: f"{m.group(1)}{m.group(2)} {listen};  # site", template)

    def replace(match: re.Match) -> str:
        address = next(addresses, None)
        if address is None:
            raise HarnessError("the nginx cluster config names more app hosts than the test has")
        return f"{match.group(1)}{address}{match.group(2)}"

    text, servers = APP_HOST_LINE.subn(replace, text)
    if listens_found != 1 or servers != len(app_hosts):
        raise HarnessError(f"nginx cluster config: expected one '# site' line and "
                           f"{len(app_hosts)} '# app host' lines, found {listens_found} and "
                           f"{servers}")
    return text


def nginx_argv(base_dir: Path, site: str, worker_connections: int = 64) -> list:
    """nginx in the foreground with ``site`` (a server block) inside a minimal main config."""
    (base_dir / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"  {kind}_temp_path {base_dir}/{kind};"
                     for kind in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"))
    (base_dir / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {base_dir}/nginx.pid;\n"
        f"error_log {base_dir}/error.log;\nevents {{ worker_connections {worker_connections}; }}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {base_dir}/site.conf;\n}}\n")
    return [nginx_binary(), "-p", base_dir, "-c", base_dir / "nginx.conf"]


class FrontServer:
    """A web server in its own process group, listening on ``port`` once started."""

    process: Process
    port: int
    error_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FrontServer:
        self.process.start()
        wait_until(lambda: listens(self.process, self.port, self.error_log), 10,
                   f"{self.process.name} to listen on port {self.port}")
        return self

    def stop(self) -> None:
        self.process.stop()


class Nginx(FrontServer):
    """nginx running the shipped server block (conf/nginx.conf) on a free loopback port."""

    def __init__(self, base_dir: Path, socket_path: Path, keep_conn: bool):
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.port = free_tcp_port()
        self.error_log = base_dir / "error.log"
        site = render_nginx_conf(NGINX_CONF.read_text(), {
            "server": f"unix:{socket_path}", "listen": f"127.0.0.1:{self.port}",
            "alias": f"{base_dir}/static/",
        }, keep_conn)
        self.process = Process("nginx", nginx_argv(base_dir, site), base_dir / "nginx.log")


class Lighttpd(FrontServer):
    """lighttpd running conf/lighttpd.conf pointed at ``socket_path``, on a free loopback port.

    ``fix_root_scriptname=False`` drops that one line, as a site mounted at a
    prefix would.
    """

    def __init__(self, base_dir: Path, socket_path: Path, fix_root_scriptname: bool = True):
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.port = free_tcp_port()
        self.error_log = base_dir / "lighttpd-error.log"
        docroot = base_dir / "htdocs"
        docroot.mkdir(exist_ok=True)
        text = render_lighttpd_conf(LIGHTTPD_CONF.read_text(), {
            "safefcgi_socket": str(socket_path),
            "server_bind": "127.0.0.1",
            "server_port": self.port,
            "document_root": str(docroot),
            "error_log": str(self.error_log),
            "pid_file": str(base_dir / "lighttpd.pid"),
            # Stay the user running the tests: the server under test, also
            # started by that user, creates the socket with its umask.
            "server_user": "",
            "server_group": "",
        })
        if not fix_root_scriptname:
            text, count = FIX_ROOT_SCRIPTNAME_LINE.subn("", text)
            assert count == 1, "conf/lighttpd.conf no longer sets fix-root-scriptname"
        conf = base_dir / "lighttpd.conf"
        conf.write_text(text)
        self.process = Process("lighttpd", [lighttpd_binary(), "-D", "-f", conf],
                               base_dir / "lighttpd.log")


class Site:
    """A FastCGI server under test with lighttpd in front of it."""

    def __init__(self, base_dir: Path, env: Mapping[str, str],
                 argv_factory: Callable[..., list], *args: str | int | Path) -> None:
        """``argv_factory(socket_path, *args)`` builds the server's command line."""
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.socket_path = base_dir / "fcgi.sock"
        self.server = Process(
            "server", argv_factory(self.socket_path, *args), base_dir / "server.log",
            env=clean_environment(env), cwd=REPO,
        )
        self.lighttpd = Lighttpd(base_dir, self.socket_path)

    @property
    def url(self) -> str:
        return self.lighttpd.url

    @property
    def log(self) -> str:
        """The server's log (not lighttpd's)."""
        return self.server.log()

    def start(self) -> Site:
        self.server.start()
        wait_until(self._socket_exists, 30, f"the server to create {self.socket_path}")
        self.lighttpd.start()
        wait_until(self._serves_hello, 30, "the site to answer /hello",
                   detail=self.diagnostics)
        return self

    def stop(self) -> None:
        self.lighttpd.stop()
        self.server.stop(timeout=3)

    def lighttpd_error_log(self) -> str:
        path = Path(self.lighttpd.error_log)
        return path.read_text() if path.exists() else ""

    def diagnostics(self) -> str:
        """Log tails to append to an assertion message."""
        return (f"--- server log\n{tail(self.server.log_path)}\n"
                f"--- lighttpd error log\n{tail(self.lighttpd.error_log, 15)}")

    def _socket_exists(self) -> bool:
        if not self.server.is_running():
            raise HarnessError("the server exited:\n" + tail(self.server.log_path))
        return self.socket_path.exists()

    def _serves_hello(self) -> bool:
        try:
            status, _ = http_get(self.url, "/hello")
        except OSError:
            return False
        return status == 200

"""Web servers in front of the server under test, running the configuration files we ship.

Only the lines a shipped file marks for a site are rewritten: lighttpd's
``var.`` lines, ``Define`` lines for Apache, the ``# site`` (and nginx's
``# app host``) lines elsewhere; everything else is the file users copy.  Each
server gets a minimal main configuration of its own where it needs one (pid
file, logs and temporary files in its ``base_dir``, one port on 127.0.0.1) and
runs in the foreground in its own process group, started by the user running
the tests.
"""

from __future__ import annotations

import http.client
import os
import pwd
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .conf_lines import rewrite_named_lines
from .lighttpd_conf import render_lighttpd_conf
from .paths import CONF, PROJECT, REPO, VENV_BIN
from .ports import free_tcp_port
from .processes import HarnessError, Process, clean_environment, tail
from .waiting import wait_until

LIGHTTPD_CONF = CONF / "lighttpd.conf"
NGINX_CONF = CONF / "nginx.conf"
SITE_LINE = re.compile(r"^(\s*)(\w+)\s+.*;\s*# site$", re.MULTILINE)
APP_HOST_LINE = re.compile(r"^(\s*server\s+)\S+(.*;\s*# app host)$", re.MULTILINE)
DEFINE_LINE = re.compile(r"^Define\s+(\w+)\s+.*$", re.MULTILINE)
SITE_MARK = "# site"
KEEP_CONN_MARK = "# keep-conn"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
# The user Apache's children run as when the tests run as root (Apache refuses
# to serve as root): it must be able to reach safefcgi's socket.
APACHE_USER = "www-data"
START_TIMEOUT = 15
STATIC_FILE = "hello.txt"
STATIC_TEXT = "a static file, served by the web server itself\n"


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


# --------------------------------------------------------------------------- rendering


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
    return set_keep_conn(text, keep_conn)


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


def render_site_values(template: str, values: Mapping[str, str]) -> str:
    """Replace whole words on the lines ending in ``# site``: ``{shipped: ours}``.

    Words elsewhere in the file never change, and every shipped value must be
    found on a marked line (so a renamed path in conf/ fails loudly here).
    """
    unused = set(values)

    def replace_words(body: str) -> str:
        def word(match: re.Match) -> str:
            unused.discard(match.group(0))
            return values.get(match.group(0), match.group(0))

        return re.sub(r"\S+", word, body)

    lines = []
    for line in template.splitlines(keepends=True):
        body, mark, rest = line.partition(SITE_MARK)
        if mark and not rest.strip():
            line = replace_words(body) + mark + rest
        lines.append(line)
    if unused:
        raise HarnessError(f"no '{SITE_MARK}' line holds {sorted(unused)}")
    return "".join(lines)


def set_keep_conn(text: str, keep_conn: bool) -> str:
    """Lines ending in ``# keep-conn``: uncommented when on, removed when off."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.rstrip().endswith(KEEP_CONN_MARK):
            if not keep_conn:
                continue
            indent = line[:len(line) - len(line.lstrip())]
            line = indent + line.lstrip().removeprefix("#").lstrip()
        lines.append(line)
    return "".join(lines)


def render_apache_defines(template: str, values: Mapping[str, str]) -> str:
    """Rewrite the ``Define NAME value`` lines named in ``values``, and nothing else."""
    text, unused = rewrite_named_lines(template, DEFINE_LINE, values, _render_define)
    if unused:
        raise HarnessError(f"no Define line for {sorted(unused)}")
    return text


def _render_define(name: str, value: str) -> str:
    return f'Define {name} "{value}"' if " " in value else f"Define {name} {value}"


def apache_define(template: str, name: str) -> str:
    """The value a shipped Apache file gives ``name`` in its Define line."""
    match = re.search(rf"^Define\s+{name}\s+(.*)$", template, re.MULTILINE)
    if match is None:
        raise HarnessError(f"no Define line for {name}")
    return match.group(1).strip().strip('"')


def without_lines(text: str, pattern: str, count: int) -> str:
    """``text`` minus the ``count`` lines matching ``pattern`` (a variant of a shipped file)."""
    text, found = re.subn(rf"^[^\n]*{pattern}[^\n]*\n", "", text, flags=re.MULTILINE)
    if found != count:
        raise HarnessError(f"expected {count} lines matching {pattern!r}, found {found}")
    return text


def static_dir(base_dir: Path) -> Path:
    """The directory a front serves /static/ from, with one file in it."""
    static = base_dir / "static"
    static.mkdir(parents=True, exist_ok=True)
    (static / STATIC_FILE).write_text(STATIC_TEXT)
    return static


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


# --------------------------------------------------------------------------- fronts


class FrontServer:
    """A web server on 127.0.0.1:``port``, its files and logs in ``base_dir``.

    A subclass writes its configuration in ``__init__`` and names its command
    in ``argv()``; nothing runs before ``start()``.
    """

    name = "front"

    def __init__(self, base_dir: Path):
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.port = free_tcp_port()
        self.error_log = base_dir / f"{self.name}-error.log"
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def start(self) -> FrontServer:
        self.process = Process(self.name, self.argv(), self.base_dir / f"{self.name}.log",
                               env=self.environment(), cwd=self.base_dir).start()
        wait_until(self._listens, START_TIMEOUT, f"{self.name} to listen on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def diagnostics(self) -> str:
        return f"{tail(self.process.log_path)}\n{tail(self.error_log)}"

    def _listens(self) -> bool:
        if not self.process.is_running():
            raise HarnessError(f"{self.name} exited:\n{self.diagnostics()}")
        try:
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=1).connect()
        except OSError:
            return False
        return True


class Nginx(FrontServer):
    """nginx running the shipped server block (conf/nginx.conf) inside a minimal main config."""

    name = "nginx"

    def __init__(self, base_dir: Path, socket_path: Path, keep_conn: bool):
        super().__init__(base_dir)
        self.error_log = base_dir / "error.log"  # where nginx_argv puts it
        site = render_nginx_conf(NGINX_CONF.read_text(), {
            "server": f"unix:{socket_path}", "listen": f"127.0.0.1:{self.port}",
            "alias": f"{static_dir(base_dir)}/",
        }, keep_conn)
        self._argv = nginx_argv(base_dir, site)

    def argv(self) -> list:
        return self._argv


class Lighttpd(FrontServer):
    """lighttpd running conf/lighttpd.conf pointed at ``socket_path``.

    ``fix_root_scriptname=False`` drops that one line, as a site mounted at a
    prefix would.
    """

    name = "lighttpd"

    def __init__(self, base_dir: Path, socket_path: Path, fix_root_scriptname: bool = True):
        super().__init__(base_dir)
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
            text = without_lines(text, '"fix-root-scriptname" => "enable",', 1)
        self.conf = base_dir / "lighttpd.conf"
        self.conf.write_text(text)

    def argv(self) -> list:
        return [lighttpd_binary(), "-D", "-f", self.conf]


class Apache(FrontServer):
    """Apache running a shipped site file (conf/apache-*.conf) inside a minimal apache2.conf.

    The main file holds what Debian's apache2.conf and ports.conf hold (the
    MPM, the user, Listen, a document root, and access denied to the rest of
    the filesystem), kept small: one Apache process with 8 threads.
    """

    name = "apache2"
    modules = ("mpm_event", "authz_core", "alias", "mime", "proxy", "proxy_fcgi")

    def __init__(self, base_dir: Path, site_file: str, defines: Mapping[str, str],
                 edit: Callable[[str], str] | None = None):
        """``edit(text)``, if given, changes the rendered site file (a variant under test)."""
        super().__init__(base_dir)
        docroot = base_dir / "htdocs"
        docroot.mkdir(exist_ok=True)
        site = render_apache_defines((CONF / site_file).read_text(), {
            "SAFEFCGI_VHOST": f"127.0.0.1:{self.port}", **defines})
        (base_dir / "site.conf").write_text(edit(site) if edit else site)
        loads = "".join(f"LoadModule {module}_module {APACHE_MODULES}/mod_{module}.so\n"
                        for module in self.modules)
        user = (f"User {APACHE_USER}\nGroup {APACHE_USER}\n" if os.geteuid() == 0 else "")
        (base_dir / "apache2.conf").write_text(
            f"ServerRoot {base_dir}\nServerName localhost\nDefaultRuntimeDir {base_dir}\n"
            f"PidFile {base_dir}/apache2.pid\nErrorLog {self.error_log}\nLogLevel warn\n"
            f"{loads}{user}"
            "StartServers 1\nServerLimit 1\nThreadsPerChild 8\nMaxRequestWorkers 8\n"
            "MinSpareThreads 1\nMaxSpareThreads 16\n"
            "TypesConfig /etc/mime.types\n"
            f"Listen 127.0.0.1:{self.port}\n"
            f"DocumentRoot {docroot}\n"
            "<Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n"
            f"<Directory {docroot}>\n    Require all granted\n</Directory>\n"
            f"{self.main_extra()}"
            f"Include {base_dir}/site.conf\n")

    def main_extra(self) -> str:
        return ""

    def argv(self) -> list:
        apache = shutil.which("apache2") or "/usr/sbin/apache2"
        return [apache, "-f", self.base_dir / "apache2.conf", "-DFOREGROUND"]


class ApacheProxyFcgi(Apache):
    """conf/apache-sethandler.conf or conf/apache-proxypass.conf against a running safefcgi."""

    def __init__(self, base_dir: Path, site_file: str, socket_path: Path, keep_conn: bool,
                 edit: Callable[[str], str] | None = None):
        super().__init__(base_dir, site_file, {
            "SAFEFCGI_SOCKET": str(socket_path),
            "SAFEFCGI_KEEP_CONN": "on" if keep_conn else "off",
            "SAFEFCGI_STATIC": str(static_dir(base_dir)),
        }, edit)


class ApacheFcgid(Apache):
    """conf/apache-fcgid.conf: Apache (mod_fcgid) starts safefcgi itself, as its own user."""

    modules = ("mpm_event", "authz_core", "alias", "mime", "fcgid")

    def __init__(self, base_dir: Path):
        self.hook_log = base_dir / "hooks.log"
        base_dir.mkdir(parents=True, exist_ok=True)
        self.hook_log.touch()
        self.hook_log.chmod(0o666)  # written by safefcgi's children, running as Apache's user
        # The shipped command with this machine's paths and project: its
        # options stay as shipped.
        shipped = apache_define((CONF / "apache-fcgid.conf").read_text(), "SAFEFCGI_COMMAND")
        ours = {"/srv/mysite/venv/bin/safefcgi": str(VENV_BIN / "safefcgi"),
                "mysite.settings": "fixturesite_settings", "/srv/mysite": str(PROJECT)}
        command = " ".join(ours.get(word, word) for word in shipped.split())
        if not set(ours.values()) <= set(command.split()):
            raise HarnessError(f"unexpected SAFEFCGI_COMMAND in apache-fcgid.conf: {shipped}")
        super().__init__(base_dir, "apache-fcgid.conf", {
            "SAFEFCGI_COMMAND": command, "SAFEFCGI_STATIC": str(static_dir(base_dir))})

    def main_extra(self) -> str:
        # What a Debian fcgid.conf would move out of /var/lib/apache2, plus the
        # environment the fixture project's views want.
        return (f"FcgidIPCDir {self.base_dir}/fcgid\n"
                f"FcgidProcessTableFile {self.base_dir}/fcgid_shm\n"
                f"FcgidInitialEnv FIXTURESITE_HOOK_LOG {self.hook_log}\n")

    def safefcgi_log(self) -> str:
        """safefcgi's standard error goes to Apache's error log under mod_fcgid."""
        return self.error_log.read_text(errors="replace")


class Caddy(FrontServer):
    """Caddy running conf/Caddyfile, imported by a Caddyfile of ours with global options."""

    name = "caddy"

    def __init__(self, base_dir: Path, socket_path: Path):
        super().__init__(base_dir)
        site = render_site_values((CONF / "Caddyfile").read_text(), {
            "example.com": f"http://127.0.0.1:{self.port}",
            "unix//run/safefcgi/safefcgi.sock": f"unix/{socket_path}",
            "/var/www/static": str(static_dir(base_dir)),
        })
        (base_dir / "site.caddy").write_text(site)
        # No admin endpoint (it would take port 2019), and every listener on
        # loopback only: Caddy binds all interfaces for an address like 127.0.0.1:port.
        (base_dir / "Caddyfile").write_text(
            "{\n\tadmin off\n\tdefault_bind 127.0.0.1\n"
            f"\tstorage file_system {base_dir}/data\n}}\n"
            f"import {base_dir}/site.caddy\n")

    def argv(self) -> list:
        caddy = shutil.which("caddy") or "/usr/bin/caddy"
        return [caddy, "run", "--config", self.base_dir / "Caddyfile", "--adapter", "caddyfile"]

    def environment(self) -> dict[str, str]:
        # Caddy saves the loaded configuration under $XDG_CONFIG_HOME.
        home = str(self.base_dir / "home")
        return {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home}


class H2o(FrontServer):
    """H2O running conf/h2o.conf (a whole h2o configuration file)."""

    name = "h2o"

    def __init__(self, base_dir: Path, socket_path: Path, keep_conn: bool):
        super().__init__(base_dir)
        text = render_site_values((CONF / "h2o.conf").read_text(), {
            # Stay the user that started h2o (root here): the files below are ours.
            "debian-h2o": pwd.getpwuid(os.geteuid()).pw_name,
            "80": str(self.port),
            "/run/h2o-safefcgi.pid": str(base_dir / "h2o.pid"),
            "/var/log/h2o/safefcgi-error.log": str(self.error_log),
            "/var/www/static": str(static_dir(base_dir)),
            "/run/safefcgi/safefcgi.sock": str(socket_path),
        })
        (base_dir / "h2o.conf").write_text(set_keep_conn(text, keep_conn))

    def argv(self) -> list:
        h2o = shutil.which("h2o") or "/usr/sbin/h2o"
        return [h2o, "-c", self.base_dir / "h2o.conf"]


# --------------------------------------------------------------------------- site


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

"""Hosts for the scale-out tests: network namespaces on a private switch.

Each host is a network namespace with one veth link to a bridge that lives
in a "switch" namespace of its own, so nothing is added to the namespace the
tests run in: no address, no route, no interface.  The hosts get addresses
from 10.231.0.0/24 and fd00:231::/64 on those links only and have no default
route, so their traffic cannot leave the switch.  Programs run on a host
through ``ip netns exec``; the tests never connect to these addresses from
outside a host.

Namespace names start with ``PREFIX`` and carry the pid of the test run, so
``remove_stale_namespaces()`` can delete what a killed run left behind
without touching a concurrent run's hosts.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from .lighttpd_conf import render_lighttpd_conf
from .paths import CONF, EXAMPLE_DIR, EXAMPLE_SETTINGS, REPO, SCRIPTS, VENV_BIN
from .postgres import DATABASE_USER, PgBouncer, PostgresCluster
from .processes import STOP_TIMEOUT, HarnessError, Process, RunAs, clean_environment, tail
from .servers import root_permission
from .waiting import wait_until
from .webservers import lighttpd_binary, nginx_argv, render_nginx_cluster_conf

logger = logging.getLogger("tests.support.netns")

PREFIX = "sfcgi-sc-"
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
SUBNET4 = "10.231.0"
SUBNET6 = "fd00:231:"
SWITCH = "switch"
BRIDGE = "br0"
LINK = "eth0"  # a host's only interface besides lo
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-\w+$")


class NetnsError(RuntimeError):
    """An ip(8) command failed while building or removing the network."""


def unavailable_reason() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the suite as root)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one ip(8) command; on failure raise with its message."""
    completed = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and completed.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {completed.stderr.strip()}")
    return completed


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (first word of each ``ip netns list`` line)."""
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def kill_namespace_processes(namespace: str) -> None:
    """SIGKILL whatever still runs inside ``namespace`` (only ever our own test processes)."""
    completed = ip("netns", "pids", namespace, check=False)
    for word in completed.stdout.split():
        try:
            os.kill(int(word), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_namespace(namespace: str) -> None:
    kill_namespace_processes(namespace)
    ip("netns", "delete", namespace, check=False)


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces of earlier runs whose test process is gone; return their names."""
    removed = []
    for namespace in list_namespaces():
        match = _OWNED.match(namespace)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        logger.warning("removing network namespace %s left by an earlier run", namespace)
        delete_namespace(namespace)
        removed.append(namespace)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Host:
    """One machine of the test network: a namespace with one address of each family."""

    role: str
    namespace: str
    number: int  # the last part of both addresses

    @property
    def ipv4(self) -> str:
        return f"{SUBNET4}.{self.number}"

    @property
    def ipv6(self) -> str:
        return f"{SUBNET6}:{self.number}"

    def argv(self, argv: Sequence[object], run_as: RunAs | None = None) -> list[str]:
        """``argv`` run on this host, as ``run_as`` when given.

        ``ip netns exec`` replaces itself with the command, so the pid of the
        process started with this argv is the command's own pid.  setpriv
        drops to the user after entering the namespace, which needs root.
        """
        prefix = [IP, "netns", "exec", self.namespace]
        if run_as is not None and run_as.name is not None:
            entry = pwd.getpwnam(run_as.name)
            prefix += ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                       "--clear-groups"]
        return prefix + [str(arg) for arg in argv]

    def run(self, argv: Sequence[object], timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` on this host to completion, output captured as text."""
        return subprocess.run(self.argv(argv), capture_output=True, text=True,
                              timeout=timeout, **kwargs)


@dataclass
class Network:
    """Hosts joined by one bridge; ``create()`` builds it and ``destroy()`` removes it all."""

    hosts: dict[str, Host] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-")
    _created: list[str] = field(default_factory=list)

    def create(self, roles: dict[str, int]) -> Network:
        """One host per ``role: number`` (the number is each address's last part)."""
        switch = self._add_namespace(SWITCH)
        ip("-n", switch, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", switch, "link", "set", BRIDGE, "up")
        for role, number in roles.items():
            self.hosts[role] = self._add_host(switch, role, number)
        return self

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def destroy(self) -> None:
        """Kill what still runs on the hosts and delete every namespace (links go with them)."""
        for namespace in reversed(self._created):
            delete_namespace(namespace)
        self._created.clear()
        self.hosts.clear()

    def _add_namespace(self, role: str) -> str:
        namespace = f"{self.tag}{role}"
        ip("netns", "add", namespace)
        self._created.append(namespace)
        return namespace

    def _add_host(self, switch: str, role: str, number: int) -> Host:
        host = Host(role, self._add_namespace(role), number)
        port = f"p-{role}"[:15]  # the switch's end of the cable; interface names are short
        ip("-n", switch, "link", "add", port, "type", "veth",
           "peer", "name", LINK, "netns", host.namespace)
        ip("-n", switch, "link", "set", port, "master", BRIDGE, "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        ip("-n", host.namespace, "addr", "add", f"{host.ipv4}/24", "dev", LINK)
        # nodad: the address is usable at once instead of after duplicate detection.
        ip("-n", host.namespace, "addr", "add", f"{host.ipv6}/64", "dev", LINK, "nodad")
        ip("-n", host.namespace, "link", "set", LINK, "up")
        return host


# --------------------------------------------------------------------------- services on hosts
#
# Each service is a support Process whose argv starts with ``ip netns exec``;
# it runs in its own process group like every other test process, and the
# namespace teardown kills whatever a failed test left behind.

CLIENT = SCRIPTS / "netns_client.py"
LIGHTTPD_CLUSTER_CONF = CONF / "lighttpd-cluster.conf"
NGINX_CLUSTER_CONF = CONF / "nginx-cluster.conf"
APP_PORT = 9000
WEB_PORT = 8080


def run_client(host: Host, *args: object, timeout: float = 90) -> list[dict]:
    """Run netns_client.py on ``host``; return the JSON documents it printed."""
    completed = host.run([sys.executable, CLIENT, *args], timeout=timeout)
    if completed.returncode not in (0, 1) or not completed.stdout.strip():
        raise HarnessError(f"netns_client.py {args[0]} on {host.role} failed "
                           f"({completed.returncode}):\n{completed.stderr[-3000:]}")
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


class BackgroundClient:
    """netns_client.py COMMAND running on ``host`` while the test acts; it prints JSON lines.

    The client bounds its own run (its --seconds); the waits here are bounded too.
    """

    def __init__(self, host: Host, command: str, *args: object) -> None:
        self.command = command
        self._process = subprocess.Popen(host.argv([sys.executable, CLIENT, command, *args]),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float, what: str) -> None:
        """Return once the client printed a document for which ``predicate`` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            if predicate(json.loads(line)):
                return
        self._process.kill()
        raise HarnessError(f"netns_client.py {self.command} never saw {what}:\n"
                           f"{self._process.stderr.read()[-2000:]}")

    def final(self, key: str, timeout: float) -> dict:
        """The last document, which holds ``key``, once the client has finished."""
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise
        documents = [json.loads(line) for line in out.splitlines() if line.strip()]
        if not documents or key not in documents[-1]:
            raise HarnessError(f"netns_client.py {self.command} failed:\n{err[-3000:]}")
        return documents[-1]


def address_text(address: str, port: int) -> str:
    """host:port as web servers write it, with brackets around an IPv6 address."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class AppHost:
    """``safefcgi run`` on TCP on one application host, with the example project."""

    def __init__(self, host: Host, base_dir: Path, env: Mapping[str, str],
                 allowed: Sequence[str] | None, *options: str | int) -> None:
        """``allowed`` goes to --allowed-clients; None leaves the filter to ``env``."""
        base_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.log_path = base_dir / "safefcgi.log"
        self._env = clean_environment({**env, "EXAMPLE_APP_HOST": host.role})
        allow = ["--allowed-clients", ",".join(allowed)] if allowed is not None else []
        # "::" accepts IPv4 (as mapped addresses) and IPv6 on one socket.
        self._argv = host.argv([
            VENV_BIN / "safefcgi", "run", EXAMPLE_SETTINGS, "--pythonpath", EXAMPLE_DIR,
            "--method", "prefork", "--host", "::", "--port", APP_PORT, *allow,
            *root_permission(options), *options])
        self.process: Process | None = None
        self._log_offset = 0

    def start(self) -> AppHost:
        return self.launch().wait_serving()

    def launch(self) -> AppHost:
        """Start safefcgi without waiting for it (several hosts boot side by side)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = Process(f"safefcgi on {self.host.role}", self._argv, self.log_path,
                               env=self._env, cwd=REPO).start()
        return self

    def wait_serving(self) -> AppHost:
        wait_until(self._serving, 30, f"safefcgi on {self.host.role} to listen")
        return self

    def terminate(self, timeout: float = 15) -> float:
        """A graceful stop as an operator asks for it: SIGTERM to the master only.

        Returns the monotonic time once every process of the host has exited.
        """
        self.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not self.process.group_is_alive(), timeout,
                   f"safefcgi on {self.host.role} to stop gracefully")
        gone_at = time.monotonic()
        self.process.stop()  # reaps the leader
        return gone_at

    def is_running(self) -> bool:
        return self.process is not None and self.process.group_is_alive()

    def kill(self) -> float:
        """SIGKILL the master and every child at once: the host dies mid-request.

        Returns the monotonic time once every process of the host is gone:
        until then the kernel still queues connections on its listening socket
        (and resets them when the last process dies), so any request that
        started before that moment may have reached the dying host.
        """
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop(signal.SIGKILL)
        return time.monotonic()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the whole group (a graceful stop), SIGKILL after ``timeout``."""
        if self.process is not None:
            self.process.stop(signal.SIGTERM, timeout)

    def log(self) -> str:
        return tail(self.log_path)

    def _serving(self) -> bool:
        if not self.process.is_running():
            raise HarnessError(f"safefcgi on {self.host.role} exited:\n{self.log()}")
        # The listening socket is bound before this line is logged.
        return "safefcgi serving" in self.log_since_start()

    def log_since_start(self) -> str:
        """What this host logged since it was last started."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")


class NetworkPgBouncer(PgBouncer):
    """The support pgbouncer, run on the database host and listening on its address.

    PostgreSQL itself (the support cluster) listens on no TCP address at
    all: pgbouncer reaches it through its unix socket, as on a database
    host that runs both.
    """

    def __init__(self, base_dir: Path, cluster: PostgresCluster, host: Host) -> None:
        super().__init__(base_dir, cluster)
        self.host = host

    def extra_settings(self) -> list[str]:
        return [f"listen_addr = {self.host.ipv4}", f"admin_users = {DATABASE_USER}"]

    def make_process(self, argv: list) -> Process:
        return Process("pgbouncer", self.host.argv(argv, self.run_as),
                       self.base_dir / "pgbouncer.log", cwd=self.base_dir)

    def django_env(self) -> dict[str, str]:
        return {**super().django_env(), "EXAMPLE_PGHOST": self.host.ipv4}

    def client_addresses(self) -> set[str]:
        """Addresses of the clients connected right now (the admin console's SHOW CLIENTS).

        Asked through pgbouncer's unix socket, which is not a network address.
        """
        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, dbname="pgbouncer",
                                user=DATABASE_USER)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SHOW CLIENTS")
                column = [item[0] for item in cursor.description].index("addr")
                return {row[column] for row in cursor.fetchall()}
        finally:
            conn.close()


class WebServer:
    """lighttpd or nginx on the web host, from the shipped cluster configuration."""

    def __init__(self, kind: str, host: Host, base_dir: Path,
                 app_hosts: Sequence[str]) -> None:
        """``app_hosts``: each application host's address, as the config should name it."""
        base_dir.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.host = host
        self.base_dir = base_dir
        self.port = WEB_PORT
        argv = self._lighttpd(app_hosts) if kind == "lighttpd" else self._nginx(app_hosts)
        self.process = Process(kind, host.argv(argv), base_dir / f"{kind}.log")

    def start(self) -> WebServer:
        self.process.start()
        [ready] = run_client(self.host, "wait", self.port, "/hello", 15)
        if not ready["ready"]:
            raise HarnessError(f"{self.kind} never answered /hello ({ready['last']}):\n"
                               f"{self.diagnostics()}")
        return self

    def stop(self) -> None:
        self.process.stop()

    def diagnostics(self) -> str:
        return (f"--- {self.kind} log\n{tail(self.process.log_path, 10)}\n"
                f"--- {self.kind} error log\n{tail(self.base_dir / 'error.log', 20)}")

    def _lighttpd(self, app_hosts: Sequence[str]) -> list:
        (self.base_dir / "htdocs").mkdir(exist_ok=True)
        values: dict[str, str | int] = {
            f"app_host_{number}": address for number, address in enumerate(app_hosts, 1)}
        values.update({
            "app_port": APP_PORT, "server_bind": "127.0.0.1", "server_port": self.port,
            "document_root": str(self.base_dir / "htdocs"),
            "error_log": str(self.base_dir / "error.log"),
            "pid_file": str(self.base_dir / "lighttpd.pid"),
            "server_user": "", "server_group": "",
        })
        conf = self.base_dir / "lighttpd.conf"
        conf.write_text(render_lighttpd_conf(LIGHTTPD_CLUSTER_CONF.read_text(), values))
        return [lighttpd_binary(), "-D", "-f", conf]

    def _nginx(self, app_hosts: Sequence[str]) -> list:
        site = render_nginx_cluster_conf(
            NGINX_CLUSTER_CONF.read_text(), f"127.0.0.1:{self.port}",
            [address_text(address, APP_PORT) for address in app_hosts])
        return nginx_argv(self.base_dir, site, worker_connections=256)

"""Real processes for the integration tests: PostgreSQL, pgbouncer, lighttpd, FastCGI servers.

Every process runs in its own process group and is stopped by signalling the
whole group, so a forked child can never outlive a test.  Everything listens
on unix sockets in a private temporary directory or on 127.0.0.1, and every
wait and every load loop is bounded in time.
"""

from __future__ import annotations

import glob
import http.client
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from .lighttpd_conf import render_lighttpd_conf

logger = logging.getLogger("tests.integration.harness")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO / "example"
EXAMPLE_SETTINGS = "mysite.settings"
LIGHTTPD_CONF = REPO / "conf" / "lighttpd.conf"
STOCK_FLUP_SERVER = Path(__file__).with_name("stock_flup_server.py")
# The console scripts of the virtualenv that runs the tests.
VENV_BIN = Path(sys.executable).parent

DATABASE = "example"
DATABASE_USER = "postgres"
POSTGRES_PORT = 5432
PGBOUNCER_PORT = 6432
# PostgreSQL and pgbouncer refuse to run as root; when the tests run as root
# they run as this system user instead.
SERVICE_USER = "postgres"

STOP_TIMEOUT = 5.0


class HarnessError(RuntimeError):
    """A component of the test setup could not be started."""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for assertion messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment minus anything that would steer Django, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EXAMPLE_") and key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class RunAs:
    """The system user a service runs as (None: the user running the tests)."""

    name: str | None

    @classmethod
    def service_user(cls) -> RunAs:
        return cls(SERVICE_USER if os.geteuid() == 0 else None)

    def popen_kwargs(self) -> dict:
        if self.name is None:
            return {}
        entry = pwd.getpwnam(self.name)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Hand ``path``, which the tests created, to this user (whatever the umask was)."""
        if self.name is not None:
            entry = pwd.getpwnam(self.name)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies.

    ``kill(-pgid, 0)`` would count zombies too, and orphans stay zombies
    forever in a container whose init does not reap them.
    """
    members = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path) as stat:
                text = stat.read()
        except OSError:  # the process ended while we looked
            continue
        # Fields after the command name, which may itself contain spaces and ')'.
        state, _ppid, group = text[text.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(text.split(maxsplit=1)[0]))
    return members


class Process:
    """A command running in its own process group with stdout and stderr in one log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 run_as: RunAs = RunAs(None)) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self._run_as = run_as
        self._popen: subprocess.Popen | None = None

    def start(self) -> Process:
        logger.info("starting %s: %s", self.name, " ".join(map(str, self.argv)))
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                [str(arg) for arg in self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self._env is None else dict(self._env),
                cwd=self._cwd,
                start_new_session=True,
                **self._run_as.popen_kwargs(),
            )
        return self

    @property
    def pid(self) -> int:
        assert self._popen is not None, f"{self.name} was never started"
        return self._popen.pid

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def group_is_alive(self) -> bool:
        """True while any process of the group (the leader or a child it forked) runs."""
        return bool(live_group_members(self.pid))

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the leader only, as an operator's ``kill`` would."""
        if self.is_running():
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        """Wait for the leader to exit; True if it did within ``timeout``."""
        assert self._popen is not None
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
        """Signal the whole group, then SIGKILL whatever is left after ``timeout``."""
        if self._popen is None:
            return
        self._signal_group(signum)
        if not self.wait(timeout):
            logger.warning("%s ignored signal %s; killing its process group", self.name, signum)
        self._signal_group(signal.SIGKILL)
        self._popen.wait()
        # Children of the leader may take a moment to be reaped by init.
        wait_until(lambda: not self.group_is_alive(), 5, f"{self.name}'s process group to exit")

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The newest Debian PostgreSQL installation's bin directory."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin")
    if not candidates:
        raise HarnessError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
    return Path(max(candidates, key=lambda path: int(Path(path).parent.name)))


class PostgresCluster:
    """A throwaway PostgreSQL cluster reachable only through a unix socket in ``base_dir``."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "sock"
        self.port = POSTGRES_PORT
        self.run_as = RunAs.service_user()
        self._process: Process | None = None

    def start(self) -> PostgresCluster:
        bin_dir = postgres_bin_dir()
        for directory in (self.base_dir, self.socket_dir):
            directory.mkdir(exist_ok=True)
            self.run_as.give(directory)
        self._run(
            "initdb",
            [bin_dir / "initdb", "-D", self.data_dir, "-U", DATABASE_USER, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        )
        self._process = Process(
            "postgres",
            [bin_dir / "postgres", "-D", self.data_dir, "-p", self.port,
             "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "max_connections=200",
             # Durability is worth nothing in a cluster that is deleted afterwards.
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            self.base_dir / "postgres.log",
            cwd=self.base_dir,
            run_as=self.run_as,
        ).start()
        wait_until(self._accepts_connections, 30, "PostgreSQL to accept connections")
        self.execute("CREATE DATABASE " + DATABASE, dbname="postgres")
        return self

    def stop(self) -> None:
        if self._process is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: it ends sessions and exits cleanly.
            self._process.stop(signal.SIGINT, timeout=15)

    def connect(self, dbname: str = DATABASE):
        return psycopg2.connect(
            host=str(self.socket_dir), port=self.port, dbname=dbname, user=DATABASE_USER
        )

    def execute(self, sql: str, params: tuple = (), dbname: str = DATABASE) -> list[tuple]:
        """Run one statement in autocommit mode and return its rows (if any)."""
        conn = self.connect(dbname)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            conn.close()

    def django_env(self) -> dict[str, str]:
        return {
            "EXAMPLE_DB": "postgres",
            "EXAMPLE_PGHOST": str(self.socket_dir),
            "EXAMPLE_PGPORT": str(self.port),
            "EXAMPLE_PGDATABASE": DATABASE,
            "EXAMPLE_PGUSER": DATABASE_USER,
        }

    def _accepts_connections(self) -> bool:
        if not self._process.is_running():
            raise HarnessError("PostgreSQL exited:\n" + tail(self._process.log_path))
        try:
            self.connect("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _run(self, name: str, argv: list) -> None:
        log_path = self.base_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            completed = subprocess.run(
                [str(arg) for arg in argv], stdout=log, stderr=subprocess.STDOUT,
                cwd=self.base_dir, timeout=120, **self.run_as.popen_kwargs(),
            )
        if completed.returncode != 0:
            raise HarnessError(f"{name} failed:\n{tail(log_path)}")


class PgBouncer:
    """pgbouncer in transaction pooling mode in front of ``cluster``, on its own unix socket."""

    def __init__(self, base_dir: Path, cluster: PostgresCluster) -> None:
        self.base_dir = base_dir
        self.socket_dir = base_dir / "sock"
        self.port = PGBOUNCER_PORT
        self.cluster = cluster
        self.run_as = RunAs.service_user()
        self._process: Process | None = None

    def start(self) -> PgBouncer:
        for directory in (self.base_dir, self.socket_dir):
            directory.mkdir(exist_ok=True)
            self.run_as.give(directory)
        userlist = self.base_dir / "userlist.txt"
        userlist.write_text(f'"{DATABASE_USER}" ""\n')
        ini = self.base_dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{DATABASE} = host={self.cluster.socket_dir} port={self.cluster.port}"
            f" dbname={DATABASE} user={DATABASE_USER}\n"
            "[pgbouncer]\n"
            + "".join(f"{line}\n" for line in self.extra_settings())
            + f"unix_socket_dir = {self.socket_dir}\n"
            f"listen_port = {self.port}\n"
            "auth_type = trust\n"
            f"auth_file = {userlist}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 200\n"
            "default_pool_size = 10\n"
        )
        for path in (userlist, ini):
            self.run_as.give(path)
        self._process = self.make_process(
            [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", ini]).start()
        wait_until(self._accepts_connections, 30, "pgbouncer to accept connections")
        return self

    def extra_settings(self) -> list[str]:
        """More [pgbouncer] lines, for a subclass that listens elsewhere."""
        return []

    def make_process(self, argv: list) -> Process:
        return Process("pgbouncer", argv, self.base_dir / "pgbouncer.log",
                       cwd=self.base_dir, run_as=self.run_as)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(signal.SIGINT)

    def django_env(self) -> dict[str, str]:
        return {
            **self.cluster.django_env(),
            "EXAMPLE_PGHOST": str(self.socket_dir),
            "EXAMPLE_PGPORT": str(self.port),
            "EXAMPLE_PGBOUNCER": "1",
        }

    def _accepts_connections(self) -> bool:
        if not self._process.is_running():
            raise HarnessError("pgbouncer exited:\n" + tail(self._process.log_path))
        try:
            psycopg2.connect(
                host=str(self.socket_dir), port=self.port, dbname=DATABASE, user=DATABASE_USER
            ).close()
        except psycopg2.OperationalError:
            return False
        return True


def run_django_command(args: list[str], env: Mapping[str, str], log_path: Path) -> None:
    """Run a management command of the example project, failing loudly with its output."""
    argv = [sys.executable, "-m", "django", *args,
            "--settings", EXAMPLE_SETTINGS, "--pythonpath", str(EXAMPLE_DIR)]
    with open(log_path, "ab") as log:
        completed = subprocess.run(
            argv, env=clean_environment(env), stdout=log, stderr=subprocess.STDOUT, timeout=300
        )
    if completed.returncode != 0:
        raise HarnessError(f"{' '.join(args)} failed:\n{tail(log_path)}")


# --------------------------------------------------------------------------- lighttpd


class Lighttpd:
    """lighttpd running ``conf/lighttpd.conf`` with its var lines pointed at ``socket_path``."""

    def __init__(self, base_dir: Path, socket_path: Path) -> None:
        self.base_dir = base_dir
        self.socket_path = socket_path
        self.port = free_port()
        self._process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Lighttpd:
        docroot = self.base_dir / "htdocs"
        docroot.mkdir(exist_ok=True)
        conf = self.base_dir / "lighttpd.conf"
        conf.write_text(render_lighttpd_conf(LIGHTTPD_CONF.read_text(), {
            "safefcgi_socket": str(self.socket_path),
            "server_bind": "127.0.0.1",
            "server_port": self.port,
            "document_root": str(docroot),
            "error_log": str(self.base_dir / "lighttpd-error.log"),
            "pid_file": str(self.base_dir / "lighttpd.pid"),
            # Stay the user running the tests: the server under test, also
            # started by that user, creates the socket with its umask.
            "server_user": "",
            "server_group": "",
        }))
        lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
        self._process = Process(
            "lighttpd", [lighttpd, "-D", "-f", conf], self.base_dir / "lighttpd.log"
        ).start()
        wait_until(self._listens, 10, "lighttpd to listen")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def _listens(self) -> bool:
        if not self._process.is_running():
            raise HarnessError(
                "lighttpd exited:\n" + tail(self._process.log_path)
                + "\n" + tail(self.base_dir / "lighttpd-error.log")
            )
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True


def http_get(url: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- servers under test


def stock_flup_argv(socket_path: Path, maxchildren: int, maxrequests: int = 0) -> list:
    """Stock flup6 prefork, started the way ``manage.py runfcgi method=prefork`` did."""
    return [sys.executable, STOCK_FLUP_SERVER, EXAMPLE_SETTINGS,
            "--pythonpath", EXAMPLE_DIR, "--socket", socket_path,
            "--minspare", 1, "--maxspare", maxchildren,
            "--maxchildren", maxchildren, "--maxrequests", maxrequests]


def safefcgi_argv(socket_path: Path, method: str, *options: str | int) -> list:
    """``safefcgi run`` through the console script installed in the test virtualenv."""
    # Children refuse to serve as root without --allow-root (or a --user).
    as_root = ["--allow-root"] if os.geteuid() == 0 and "--user" not in options else []
    return [VENV_BIN / "safefcgi", "run", EXAMPLE_SETTINGS, "--pythonpath", EXAMPLE_DIR,
            "--method", method, "--socket", socket_path, *as_root, *options]


class Site:
    """A FastCGI server under test with lighttpd in front of it."""

    def __init__(self, base_dir: Path, env: Mapping[str, str],
                 argv_factory: Callable[..., list], *args: str | int) -> None:
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

    def start(self) -> Site:
        self.server.start()
        wait_until(self._socket_exists, 30, f"the server to create {self.socket_path}")
        self.lighttpd.start()
        wait_until(self._serves_hello, 30, "the site to answer /hello")
        return self

    def stop(self) -> None:
        self.lighttpd.stop()
        self.server.stop(timeout=3)

    def server_log(self) -> str:
        return self.server.log()

    def lighttpd_error_log(self) -> str:
        path = self.base_dir / "lighttpd-error.log"
        return path.read_text() if path.exists() else ""

    def diagnostics(self) -> str:
        """Log tails to append to an assertion message."""
        return (f"--- server log\n{tail(self.server.log_path)}\n"
                f"--- lighttpd error log\n{tail(self.base_dir / 'lighttpd-error.log', 15)}")

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

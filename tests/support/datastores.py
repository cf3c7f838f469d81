"""Throwaway MariaDB and Redis servers for the driver tests, on unix sockets in a temp dir.

Like PostgresCluster in postgres.py: the server runs in its own process group
as a service user when the tests run as root, keeps its data in ``base_dir``
and is stopped by signalling the group.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import MySQLdb
import redis

from .postgres import DATABASE
from .processes import HarnessError, Process, RunAs, run_logged, tail
from .waiting import wait_until

# mariadbd refuses to run as root; the Debian package creates this user.
MARIADB_USER = "mysql"


def _run_as(name: str) -> RunAs:
    """``name`` when the tests run as root, else the user running the tests."""
    return RunAs(name) if RunAs.service_user().name is not None else RunAs(None)


class MariaDB:
    """A MariaDB server with an empty ``example`` database, reachable only through its socket."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_path = base_dir / "mysqld.sock"
        self.run_as = _run_as(MARIADB_USER)
        self._process: Process | None = None

    def start(self) -> MariaDB:
        self.base_dir.mkdir(exist_ok=True)
        self.run_as.give(self.base_dir)
        install_db = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
        run_logged("install-db", [
            install_db, "--no-defaults", f"--datadir={self.data_dir}",
            *self._user_option(), "--auth-root-authentication-method=normal",
            "--skip-test-db", "--skip-name-resolve",
        ], self.base_dir)
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self._process = Process(
            "mariadb",
            [mariadbd, "--no-defaults", f"--datadir={self.data_dir}",
             f"--socket={self.socket_path}", "--skip-networking", *self._user_option(),
             f"--pid-file={self.base_dir / 'mariadb.pid'}", "--max-connections=200",
             # Durability is worth nothing in a server that is deleted afterwards.
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
             "--innodb-buffer-pool-size=64M", "--skip-log-bin"],
            self.base_dir / "mariadb.log",
            cwd=self.base_dir,
            run_as=self.run_as,
        ).start()
        wait_until(self._accepts_connections, 60, "MariaDB to accept connections")
        self.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4", database=None)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(signal.SIGTERM, timeout=15)

    def connect(self, database: str | None = DATABASE):
        kwargs = {"database": database} if database else {}
        return MySQLdb.connect(unix_socket=str(self.socket_path), user="root", **kwargs)

    def execute(self, sql: str, params: tuple = (), database: str | None = DATABASE) -> list:
        """Run one statement with autocommit on and return its rows (if any)."""
        conn = self.connect(database)
        try:
            conn.autocommit(True)
            cursor = conn.cursor()
            cursor.execute(sql, params or None)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def django_env(self) -> dict[str, str]:
        return {"EXAMPLE_DB": "mysql", "EXAMPLE_MYSQL_SOCKET": str(self.socket_path),
                "EXAMPLE_MYSQL_DATABASE": DATABASE}

    def _user_option(self) -> list[str]:
        return [f"--user={self.run_as.name}"] if self.run_as.name else []

    def _accepts_connections(self) -> bool:
        if not self._process.is_running():
            raise HarnessError("MariaDB exited:\n" + tail(self._process.log_path))
        try:
            self.connect(None).close()
        except MySQLdb.OperationalError:
            return False
        return True


class Redis:
    """A Redis server without persistence, reachable only through its socket."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.socket_path = base_dir / "redis.sock"
        self._process: Process | None = None

    def start(self) -> Redis:
        self.base_dir.mkdir(exist_ok=True)
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._process = Process(
            "redis",
            [server, "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.base_dir,
             "--daemonize", "no", "--maxclients", "1000"],
            self.base_dir / "redis.log",
            cwd=self.base_dir,
        ).start()
        wait_until(self._accepts_connections, 30, "Redis to accept connections")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path))

    def django_env(self) -> dict[str, str]:
        return {"EXAMPLE_REDIS_SOCKET": str(self.socket_path)}

    def _accepts_connections(self) -> bool:
        if not self._process.is_running():
            raise HarnessError("Redis exited:\n" + tail(self._process.log_path))
        try:
            with self.client() as client:
                client.ping()
        except redis.ConnectionError:
            return False
        return True

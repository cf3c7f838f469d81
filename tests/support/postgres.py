"""A throwaway PostgreSQL cluster and pgbouncer, reachable only through unix sockets.

Both run as the ``postgres`` user when the tests run as root (they refuse
root), in their own process groups, with data and sockets in a directory the
tests chose.
"""

from __future__ import annotations

import glob
import shutil
import signal
from pathlib import Path

import psycopg2

from .processes import HarnessError, Process, RunAs, run_logged, tail
from .waiting import wait_until

DATABASE = "example"
DATABASE_USER = "postgres"
POSTGRES_PORT = 5432
PGBOUNCER_PORT = 6432



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
        run_logged(
            "initdb",
            [bin_dir / "initdb", "-D", self.data_dir, "-U", DATABASE_USER, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            self.base_dir, run_as=self.run_as,
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

    def django_env(self, driver: str = "psycopg2") -> dict[str, str]:
        """Settings environment for this cluster through ``driver`` (psycopg2 or psycopg)."""
        return {
            "EXAMPLE_DB": "postgres",
            "EXAMPLE_PG_DRIVER": driver,
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

"""Fixtures for the integration tests: one PostgreSQL cluster (and pgbouncer, MariaDB,
Redis, a SQLite database in WAL mode, when a test asks) per run, one FastCGI server plus
lighttpd per test."""

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.datastores import MariaDB, Redis
from tests.support.example import PRODUCTION_HABITS, prepare_example_database
from tests.support.postgres import PgBouncer, PostgresCluster
from tests.support.webservers import Site

_test_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    """A private directory for sockets, data and logs.

    Not pytest's tmp_path: that lives in a directory only its owner may enter,
    and PostgreSQL runs as another user when the tests run as root.
    """
    path = Path(tempfile.mkdtemp(prefix="safefcgi-it-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(scratch_dir: Path) -> Iterator[PostgresCluster]:
    """A migrated example database with the users of ACCOUNTS."""
    cluster = PostgresCluster(scratch_dir / "postgres")
    try:
        cluster.start()
        prepare_example_database(cluster.django_env(), scratch_dir / "django-setup.log")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def mariadb(scratch_dir: Path) -> Iterator[MariaDB]:
    """A migrated example database on MariaDB with the users of ACCOUNTS."""
    server = MariaDB(scratch_dir / "mariadb")
    try:
        server.start()
        prepare_example_database(server.django_env(), scratch_dir / "django-setup-mariadb.log")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(scratch_dir: Path) -> Iterator[Redis]:
    server = Redis(scratch_dir / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_wal_env(scratch_dir: Path) -> dict[str, str]:
    """Settings environment: a migrated example database in SQLite's WAL mode."""
    directory = scratch_dir / "sqlite"
    directory.mkdir()
    env = {"EXAMPLE_DB": "sqlite", "EXAMPLE_SQLITE_PATH": str(directory / "example.sqlite3"),
           "EXAMPLE_SQLITE_WAL": "1"}
    prepare_example_database(env, scratch_dir / "django-setup-sqlite.log")
    return env


@pytest.fixture(scope="session")
def pgbouncer(scratch_dir: Path, postgres: PostgresCluster) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(scratch_dir / "pgbouncer", postgres)
    try:
        yield bouncer.start()
    finally:
        bouncer.stop()


@pytest.fixture
def direct_env(postgres: PostgresCluster) -> dict[str, str]:
    """Settings environment: PostgreSQL directly, production habits on."""
    return {**postgres.django_env(), **PRODUCTION_HABITS}


@pytest.fixture
def pooled_env(pgbouncer: PgBouncer) -> dict[str, str]:
    """Settings environment: PostgreSQL through pgbouncer, production habits on."""
    return {**pgbouncer.django_env(), **PRODUCTION_HABITS}


@pytest.fixture
def serve(scratch_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Site]]:
    """Start a FastCGI server behind lighttpd: ``serve(env, argv_factory, *args)``.

    ``argv_factory(socket_path, *args)`` builds the server's command line
    (see ``tests.support.servers``).  Everything started is
    stopped when the test ends.
    """
    sites: list[Site] = []
    # Short names: a unix socket path must fit in 107 bytes.
    test_dir = scratch_dir / f"t{next(_test_numbers)}"
    test_dir.mkdir()
    (test_dir / "test-name").write_text(request.node.nodeid + "\n")

    def start(env: dict[str, str], argv_factory: Callable[..., list], *args) -> Site:
        site = Site(test_dir / f"site{len(sites)}", env, argv_factory, *args)
        sites.append(site)
        return site.start()

    yield start
    for site in sites:
        site.stop()

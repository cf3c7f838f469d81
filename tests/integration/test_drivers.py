"""Fork safety on the drivers and caches projects use besides psycopg2.

psycopg 3, psycopg 3 with Django's own connection pool, MariaDB through
mysqlclient, SQLite in WAL mode, and Redis as Django's cache and session store:
each store is a real server (or file) of this test run, each site touches it
while the project is imported, as production sites do by accident. Stock flup6
serves each one first, to show what it breaks (or, where the driver guards
itself, what the children still share); then safefcgi must answer every
request right.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.example import ACCOUNTS
from tests.support.load import Client, LoadResult, run_load
from tests.support.servers import safefcgi_argv, stock_flup_argv
from tests.support.webservers import Site

pytestmark = pytest.mark.integration

CHILDREN = 4
# Each client logs in first, and a login hashes a password (over a second of
# CPU on a busy machine with Django 6.1): four clients keep four children busy.
CLIENTS = 4
REQUESTS = 300
# Persistent connections and a query while the project is imported.
HABITS = {"EXAMPLE_CONN_MAX_AGE": "60", "EXAMPLE_IMPORT_TIME_QUERY": "1"}


@dataclass(frozen=True)
class Scenario:
    """A site configuration, the requests that exercise it, and how to read its writes back."""

    env: dict[str, str]
    stored_keys: Callable[[list[str]], set[str]]
    operations: tuple[str, ...] = Client.OPERATIONS


def psycopg(request) -> Scenario:
    postgres = request.getfixturevalue("postgres")
    return Scenario({**postgres.django_env("psycopg"), **HABITS}, postgres_keys(postgres))


def psycopg_pool(request) -> Scenario:
    # Django's pool and persistent connections exclude each other: the pool
    # keeps the connections, opened in the parent by the import-time query.
    postgres = request.getfixturevalue("postgres")
    env = {**postgres.django_env("psycopg"), "EXAMPLE_PG_POOL": "1",
           "EXAMPLE_IMPORT_TIME_QUERY": "1"}
    return Scenario(env, postgres_keys(postgres))


def mysqlclient(request) -> Scenario:
    mariadb = request.getfixturevalue("mariadb")

    def stored(keys: list[str]) -> set[str]:
        marks = ", ".join(["%s"] * len(keys))
        rows = mariadb.execute(f"SELECT `key` FROM notes_note WHERE `key` IN ({marks})",
                               tuple(keys))
        return {key for (key,) in rows}

    return Scenario({**mariadb.django_env(), **HABITS}, stored)


def sqlite_wal(request) -> Scenario:
    env = request.getfixturevalue("sqlite_wal_env")

    def stored(keys: list[str]) -> set[str]:
        with sqlite3.connect(env["EXAMPLE_SQLITE_PATH"], timeout=30) as conn:
            marks = ", ".join(["?"] * len(keys))
            rows = conn.execute(f"SELECT key FROM notes_note WHERE key IN ({marks})", keys)
            return {key for (key,) in rows}

    return Scenario({**env, **HABITS}, stored)


def redis_cache(request) -> Scenario:
    # The database is PostgreSQL through psycopg2, untouched at import time:
    # the only thing the parent opens is the cache's connection.
    postgres = request.getfixturevalue("postgres")
    redis_server = request.getfixturevalue("redis_server")
    env = {**postgres.django_env(), **redis_server.django_env(),
           "EXAMPLE_CONN_MAX_AGE": "60", "EXAMPLE_IMPORT_TIME_SESSION": "1"}
    return Scenario(env, postgres_keys(postgres), ("whoami", "cache", "query", "write"))


def postgres_keys(postgres) -> Callable[[list[str]], set[str]]:
    def stored(keys: list[str]) -> set[str]:
        rows = postgres.execute("SELECT key FROM notes_note WHERE key = ANY(%s)", (keys,))
        return {key for (key,) in rows}
    return stored


SCENARIOS = {function.__name__: function
             for function in (psycopg, psycopg_pool, mysqlclient, sqlite_wal, redis_cache)}


@pytest.fixture
def scenario(request) -> Scenario:
    return SCENARIOS[request.param](request)


def lost_writes(scenario: Scenario, result: LoadResult) -> set[str]:
    """Keys the server confirmed with a 200 that are not in the database."""
    if not result.written:
        return set()
    return result.written - scenario.stored_keys(sorted(result.written))


def shared_between_children(by_child: dict[int, set[int]]) -> dict[int, list[int]]:
    """Server-side session ids that answered for more than one server process."""
    children_by_id: dict[int, list[int]] = {}
    for child, ids in by_child.items():
        for session_id in ids:
            children_by_id.setdefault(session_id, []).append(child)
    return {session_id: kids for session_id, kids in children_by_id.items() if len(kids) > 1}


def flup_load(site: Site, scenario: Scenario) -> LoadResult:
    """Load stock flup6 until it fails: bounded rounds, stopping at the first errors."""
    total = LoadResult()
    for _ in range(3):
        result = run_load(site.url, ACCOUNTS, clients=CLIENTS, requests=200, seconds=30,
                          request_timeout=5, stop_after_errors=10,
                          operations=scenario.operations)
        total.merge(result)
        total.elapsed += result.elapsed
        if result.errors or lost_writes(scenario, result):
            break
    return total


@pytest.mark.parametrize("scenario", ["psycopg", "psycopg_pool", "mysqlclient"],
                         indirect=True)
def test_stock_flup_children_break_each_others_connection(serve, scenario):
    site = serve(scenario.env, stock_flup_argv, CHILDREN)

    result = flup_load(site, scenario)

    assert result.errors or lost_writes(scenario, result), (
        "stock flup6 served an import-time connection to its children without a single "
        "wrong answer, so this test cannot tell a broken server from a working one:\n"
        + result.summary())


@pytest.mark.parametrize("scenario", ["sqlite_wal"], indirect=True)
def test_stock_flup_children_use_the_masters_sqlite_connection(serve, scenario):
    # SQLite in WAL mode shows no wrong answer under this load: each child
    # takes its own locks. What flup6 does is what SQLite's documentation
    # forbids, carrying an open connection across fork(): every child queries
    # through the connection its master opened (the same open file, the same
    # page cache and lock bookkeeping copied into every child).
    site = serve(scenario.env, stock_flup_argv, CHILDREN)

    result = run_load(site.url, ACCOUNTS, clients=CLIENTS, requests=REQUESTS,
                      operations=scenario.operations)

    master = site.server.pid
    assert len(result.openers_by_child) > 1, result.summary()
    assert {child: {master} for child in result.openers_by_child} == result.openers_by_child


@pytest.mark.parametrize("scenario", ["redis_cache"], indirect=True)
def test_stock_flup_children_reconnect_to_redis_by_themselves(serve, scenario, redis_server):
    # redis-py guards itself: its connection pool compares its pid with the
    # process's and drops (without a byte sent) the connections of another
    # process. Under stock flup6 the cache object built in the master is used
    # by every child, but the sockets are the child's own: no failure to show.
    site = serve(scenario.env, stock_flup_argv, CHILDREN)

    result = run_load(site.url, ACCOUNTS, clients=CLIENTS, requests=REQUESTS,
                      operations=scenario.operations)

    assert not result.errors, result.summary() + "\n" + site.diagnostics()
    assert len(result.cache_clients_by_child) > 1, result.summary()
    assert shared_between_children(result.cache_clients_by_child) == {}


@pytest.mark.parametrize("scenario", list(SCENARIOS), indirect=True)
def test_safefcgi_children_each_open_their_own_connection(serve, scenario):
    site = serve(scenario.env, safefcgi_argv, "prefork", "--maxchildren", CHILDREN)

    result = run_load(site.url, ACCOUNTS, clients=CLIENTS, requests=REQUESTS,
                      operations=scenario.operations)

    assert not result.errors, result.summary() + "\n" + site.diagnostics()
    assert result.requests >= REQUESTS + CLIENTS, result.summary()
    assert not lost_writes(scenario, result), result.summary()
    assert len(result.children) > 1, "the load never reached a second child:\n" + result.summary()
    assert shared_between_children(result.backends_by_child) == {}
    assert shared_between_children(result.cache_clients_by_child) == {}
    assert all(openers == {child} for child, openers in result.openers_by_child.items()), \
        result.openers_by_child

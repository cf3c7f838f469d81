"""Several safefcgi hosts behind lighttpd and nginx, on real networks made of namespaces.

Three application hosts, a web host, a database host (pgbouncer) and an
outsider, each a network namespace on one private switch (see tests/support/netns.py).
Each application host runs ``safefcgi run`` on TCP, allowing only the web
host; the web host runs the shipped conf/lighttpd-cluster.conf or
conf/nginx-cluster.conf.  Every client runs on a host: the load comes from
the web host, the intruder from the outsider.  The web host also stands in
for a balancer's health check, polling one host's --ping-path over FastCGI
while that host stops gracefully.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.example import ACCOUNTS, PASSWORD, PRODUCTION_HABITS
from tests.support.netns import (
    APP_PORT,
    SUBNET4,
    WEB_PORT,
    AppHost,
    BackgroundClient,
    Network,
    NetworkPgBouncer,
    WebServer,
    remove_stale_namespaces,
    run_client,
    unavailable_reason,
)
from tests.support.postgres import PostgresCluster

_SKIP = unavailable_reason()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

HOSTS = {"web": 1, "app1": 11, "app2": 12, "app3": 13, "db": 20, "outside": 99}
APPS = ("app1", "app2", "app3")
CHILDREN = 3  # per application host
THREADS = 6  # concurrent clients of the web tier
SLOW = 0.05  # seconds each /host request takes, so that some are in flight at any time
PING_PATH = "/fcgi-ping"
PING_DRAIN = 1.0  # seconds a host answers ping "stopping" before its graceful stop


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def network() -> Iterator[Network]:
    """The hosts; removed at the end even if a test failed (and left over ones first)."""
    remove_stale_namespaces()
    net = Network()
    try:
        yield net.create(HOSTS)
    finally:
        net.destroy()


@pytest.fixture(scope="module")
def db_pool(scratch_dir: Path, postgres: PostgresCluster,
            network: Network) -> Iterator[NetworkPgBouncer]:
    bouncer = NetworkPgBouncer(scratch_dir / "netns-pgbouncer", postgres, network["db"])
    try:
        yield bouncer.start()
    finally:
        bouncer.stop()


@pytest.fixture(scope="module")
def app_hosts(scratch_dir: Path, network: Network,
              db_pool: NetworkPgBouncer) -> Iterator[dict[str, AppHost]]:
    """safefcgi on each application host, each allowing the web host in its own spelling.

    app1 names the web host's two addresses, app2 networks holding them (the
    outsider is on the same switch but outside both), app3 leaves the list to
    FCGI_WEB_SERVER_ADDRS.
    """
    web = network["web"]
    env = {**db_pool.django_env(), **PRODUCTION_HABITS}
    allowed = {"app1": [web.ipv4, web.ipv6],
               "app2": [f"{SUBNET4}.0/29", f"{web.ipv6}/126"],
               "app3": None}
    hosts = {
        role: AppHost(network[role], scratch_dir / f"netns-{role}",
                      env if allowed[role] is not None else
                      {**env, "FCGI_WEB_SERVER_ADDRS": f"{web.ipv6}, {web.ipv4}"},
                      allowed[role], "--maxchildren", CHILDREN, "--minspare", 1,
                      "--maxspare", CHILDREN, "--ping-path", PING_PATH,
                      "--ping-drain", PING_DRAIN)
        for role in APPS
    }
    try:
        for host in hosts.values():
            host.launch()
        for host in hosts.values():
            host.wait_serving()
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()


@pytest.fixture
def cluster(app_hosts: dict[str, AppHost]) -> dict[str, AppHost]:
    """Every application host serving at the start of the test (one a test stopped restarts)."""
    stopped = [host for host in app_hosts.values() if not host.is_running()]
    for host in stopped:
        host.launch()
    for host in stopped:
        host.wait_serving()
    return app_hosts


@pytest.fixture(params=["lighttpd", "nginx"])
def web(request: pytest.FixtureRequest, scratch_dir: Path, network: Network,
        cluster: dict[str, AppHost]) -> Iterator[WebServer]:
    """The web tier, from the shipped cluster config; app3 is reached over IPv6."""
    addresses = [network["app1"].ipv4, network["app2"].ipv4, network["app3"].ipv6]
    base = scratch_dir / f"netns-{request.param}-{request.node.name[:40]}"
    server = WebServer(request.param, network["web"], base, addresses)
    try:
        yield server.start()
    finally:
        server.stop()


# --------------------------------------------------------------------------- load


def phases(polls: list[list]) -> list[str]:
    """The states the ping went through, each once, in order."""
    return [state for index, (_, _, state, _) in enumerate(polls)
            if index == 0 or polls[index - 1][2] != state]


def start_spread(network: Network, requests: int, *options: object) -> BackgroundClient:
    """Clients on the web host asking /host back to back, while the test acts on a host."""
    load = BackgroundClient(network["web"], "spread", WEB_PORT, "--threads", THREADS,
                            "--requests", requests, "--seconds", 40, *options)
    load.wait_for(lambda document: document.get("done", 0) >= 60, 30, "60 requests done")
    return load


def rows_of(load: BackgroundClient) -> list[list]:
    """[start, end, host, error] for every request, once the clients have finished."""
    final = load.final("results", 90)
    assert final["unfinished"] == 0, "load threads overran their deadline"
    return final["results"]


def spread(network: Network, requests: int, *options: object) -> list[list]:
    return rows_of(BackgroundClient(network["web"], "spread", WEB_PORT, "--threads", THREADS,
                                    "--requests", requests, "--seconds", 40, *options))


def served(rows: list[list]) -> Counter:
    return Counter(row[2] for row in rows if row[3] is None)


def failures(rows: list[list]) -> list[list]:
    return [row for row in rows if row[3] is not None]


def report(rows: list[list], web: WebServer, *hosts: AppHost) -> str:
    lines = [f"{len(rows)} requests, served by {dict(served(rows))}, "
             f"{len(failures(rows))} failed"]
    lines += [f"  {row}" for row in failures(rows)[:10]]
    lines.append(web.diagnostics())
    lines += [f"--- {host.host.role} log\n{host.log()}" for host in hosts]
    return "\n".join(lines)


# --------------------------------------------------------------------------- tests


def answered_by(probe: dict) -> str | None:
    try:
        return json.loads(probe["body"])["host"]
    except (KeyError, ValueError):
        return None


def test_every_app_host_refuses_a_client_missing_from_its_allowlist(network, cluster):
    addresses = [address for role in APPS
                 for address in (network[role].ipv4, network[role].ipv6)]
    refused = run_client(network["outside"], "fastcgi", APP_PORT, "/host", *addresses)
    answered = run_client(network["web"], "fastcgi", APP_PORT, "/host", *addresses)

    # The outsider's connection is closed without a byte of answer ...
    assert [(probe["outcome"], probe["bytes"]) for probe in refused] == \
        [("closed", 0)] * len(addresses), refused
    # ... while the web host, over IPv4 and IPv6, is served by the same hosts.
    assert [(probe["outcome"], probe.get("status"), answered_by(probe)) for probe in answered] \
        == [("answered", 200, role) for role in APPS for _family in ("IPv4", "IPv6")], answered
    for role in APPS:
        log = cluster[role].log_since_start()
        refusals = [line for line in log.splitlines() if "refused a connection" in line]
        # One line per refused connection, naming the intruder's address.
        assert len(refusals) == 2, log
        for address in (network["outside"].ipv4, network["outside"].ipv6):
            assert any(f"refused a connection from {address}: not allowed" in line
                       for line in refusals), refusals


def test_requests_are_spread_over_every_app_host(network, web):
    rows = spread(network, 120, "--sleep", SLOW)

    assert not failures(rows), report(rows, web)
    assert set(served(rows)) == set(APPS), report(rows, web)


def test_sigkill_of_an_app_host_loses_only_requests_in_flight_there(network, web, cluster):
    victim = cluster["app2"]
    load = start_spread(network, 240, "--sleep", SLOW)
    gone_at = victim.kill()
    rows = rows_of(load)
    report_text = report(rows, web, victim)

    lost = failures(rows)
    # Only requests that reached the host before it was gone can be lost: at most
    # one per client, since each client has one request in flight at a time.
    assert all(row[0] < gone_at for row in lost), report_text
    assert len(lost) <= THREADS, report_text
    before = served([row for row in rows if row[1] < gone_at])
    after = served([row for row in rows if row[0] > gone_at])
    assert before["app2"] > 0, report_text
    assert set(after) == {"app1", "app3"} and sum(after.values()) >= 100, report_text

    # Back up: the web server finds the host again on its own.
    victim.start()
    rows = spread(network, 600, "--sleep", SLOW, "--until", "app2")
    assert not failures(rows), report(rows, web, victim)
    assert served(rows)["app2"] >= 5, report(rows, web, victim)


def test_graceful_stop_drains_ping_first_and_loses_no_request(network, web, cluster):
    victim = cluster["app3"]
    # A balancer's health check of the host, from the web host.
    ping = BackgroundClient(network["web"], "ping", network["app3"].ipv4, APP_PORT, PING_PATH,
                            "--interval", 0.05, "--seconds", 30)
    ping.wait_for(lambda document: document.get("state") == "pong", 15, "pong")
    load = start_spread(network, 960, "--sleep", SLOW)
    signalled_at = time.monotonic()
    gone_at = victim.terminate()
    rows = rows_of(load)
    polls = ping.final("polls", 40)["polls"]
    report_text = (report(rows, web, victim) + "\nping polls:\n"
                   + "\n".join(f"  {poll}" for poll in polls))

    # The health check a balancer sees: pong while the host is up, "stopping"
    # during the drain, then refused connections once the host has stopped ...
    assert phases(polls) == ["pong", "stopping", "refused"], report_text
    stopping = [poll for poll in polls if poll[2] == "stopping"]
    refused = [poll for poll in polls if poll[2] == "refused"]
    assert stopping[0][1] > signalled_at, report_text
    assert refused[0][1] > signalled_at + PING_DRAIN, report_text
    # ... and while it said "stopping", the host still served ordinary requests
    # that reached it through the web server.
    draining = served([row for row in rows
                       if stopping[0][1] < row[0] and row[1] < stopping[-1][0]])
    assert draining["app3"] > 0, report_text

    # Not one request failed during the whole graceful stop.
    assert not failures(rows), report_text
    assert served([row for row in rows if row[1] < signalled_at])["app3"] > 0, report_text
    after = served([row for row in rows if row[0] > gone_at])
    assert set(after) == {"app1", "app2"} and sum(after.values()) >= 50, report_text

    victim.start()
    rows = spread(network, 600, "--sleep", SLOW, "--until", "app3")
    assert not failures(rows), report(rows, web, victim)
    assert served(rows)["app3"] >= 5, report(rows, web, victim)


def host_of(pid: int, cluster: dict[str, AppHost]) -> str | None:
    """Which application host a server process belongs to (its process group's leader)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except FileNotFoundError:
        return None
    group = int(text[text.rindex(")") + 2:].split()[2])
    return next((role for role, host in cluster.items() if host.process.pid == group), None)


def test_seed_scenario_across_app_hosts_through_pgbouncer(network, web, cluster, db_pool,
                                                          postgres):
    [result] = run_client(network["web"], "seed", WEB_PORT,
                          "--users", ",".join(account.username for account in ACCOUNTS),
                          "--password", PASSWORD, "--clients", THREADS, "--requests", 600,
                          timeout=120)
    diagnostics = result["summary"] + "\n" + web.diagnostics()

    assert not result["errors"], diagnostics
    assert result["requests"] >= 600 + THREADS, diagnostics
    rows = postgres.execute("SELECT key FROM notes_note WHERE key = ANY(%s)",
                            (result["written"],))
    assert len(rows) == len(result["written"]) > 0, "confirmed writes missing in the database"
    # Every host served logged-in users, and each reached the database through pgbouncer
    # on the db host's address.
    hosts = {host_of(pid, cluster) for pid in result["children"]}
    assert hosts == set(APPS), (hosts, diagnostics)
    assert {network[role].ipv4 for role in APPS} <= db_pool.client_addresses()

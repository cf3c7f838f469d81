"""Several safefcgi hosts behind lighttpd and nginx, on real networks made of namespaces.

Three application hosts, a web host, a database host (pgbouncer) and an
outsider, each a network namespace on one private switch (see netns.py).
Each application host runs ``safefcgi run`` on TCP, allowing only the web
host; the web host runs the shipped conf/lighttpd-cluster.conf or
conf/nginx-cluster.conf.  Every client runs on a host: the load comes from
the web host, the intruder from the outsider.  The web host also stands in
for a balancer's health check, polling one host's --ping-path over FastCGI
while that host stops gracefully.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ACCOUNTS, PASSWORD, PRODUCTION_HABITS
from .harness import HarnessError, PostgresCluster
from .netns import (
    APP_PORT,
    CLIENT,
    SUBNET4,
    WEB_PORT,
    AppHost,
    Network,
    NetworkPgBouncer,
    WebServer,
    remove_stale_namespaces,
    run_client,
    unavailable_reason,
)

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


class Spread:
    """netns_client.py spread on the web host, running while the test acts on a host."""

    def __init__(self, network: Network, *args: object) -> None:
        self._process = subprocess.Popen(
            network["web"].argv([sys.executable, CLIENT, "spread", *args]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(self, done: int, timeout: float = 30) -> None:
        """Return once ``done`` requests have completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            if json.loads(line).get("done", 0) >= done:
                return
        self._process.kill()
        raise HarnessError(f"the load client never completed {done} requests:\n"
                           f"{self._process.stderr.read()[-2000:]}")

    def rows(self, timeout: float = 90) -> list[list]:
        """[start, end, host, error] for every request, once the client has finished."""
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise
        documents = [json.loads(line) for line in out.splitlines() if line.strip()]
        final = documents[-1] if documents else {}
        if "results" not in final:
            raise HarnessError(f"the load client failed:\n{err[-3000:]}")
        assert final["unfinished"] == 0, "load threads overran their deadline"
        return final["results"]


class PingPoll:
    """netns_client.py ping on the web host: a balancer's health check of one app host."""

    def __init__(self, network: Network, app: str) -> None:
        self._process = subprocess.Popen(
            network["web"].argv([sys.executable, CLIENT, "ping", network[app].ipv4, APP_PORT,
                                 PING_PATH, "--interval", 0.05, "--seconds", 30]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for_pong(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            if json.loads(line).get("state") == "pong":
                return
        self._process.kill()
        raise HarnessError(f"the ping poller never saw pong:\n"
                           f"{self._process.stderr.read()[-2000:]}")

    def rows(self, timeout: float = 40) -> list[list]:
        """[start, end, state, detail] for every poll, once the poller has stopped."""
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise
        documents = [json.loads(line) for line in out.splitlines() if line.strip()]
        if not documents or "polls" not in documents[-1]:
            raise HarnessError(f"the ping poller failed:\n{err[-3000:]}")
        return documents[-1]["polls"]


def phases(polls: list[list]) -> list[str]:
    """The states the ping went through, each once, in order."""
    return [state for index, (_, _, state, _) in enumerate(polls)
            if index == 0 or polls[index - 1][2] != state]


def spread(network: Network, requests: int, *options: object) -> list[list]:
    return Spread(network, WEB_PORT, "--threads", THREADS, "--requests", requests,
                  "--seconds", 40, *options).rows()


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
    load = Spread(network, WEB_PORT, "--threads", THREADS, "--requests", 240,
                  "--seconds", 40, "--sleep", SLOW)
    load.wait_for(60)
    gone_at = victim.kill()
    rows = load.rows()
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
    ping = PingPoll(network, "app3")
    load = Spread(network, WEB_PORT, "--threads", THREADS, "--requests", 960,
                  "--seconds", 40, "--sleep", SLOW)
    ping.wait_for_pong()
    load.wait_for(60)
    signalled_at = time.monotonic()
    gone_at = victim.terminate()
    rows = load.rows()
    polls = ping.rows()
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

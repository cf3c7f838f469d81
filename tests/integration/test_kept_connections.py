"""Kept-open FastCGI connections against a small pool: 2 children, 32 connections.

nginx runs the shipped server block with its upstream ``keepalive`` raised to
32; Apache runs the shipped conf/apache-proxypass.conf (mod_proxy_fcgi) with
``enablereuse=on`` and 32 threads. 32 HTTP clients make the web server open
(and keep) 32 connections to safefcgi, then send a mix of GET and POST while
a few slow views run. No request may fail, and none may wait for a slow view
it did not share a connection with: one child is always free for it.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import HarnessError, Process, alive, tail
from tests.support.servers import fixturesite_argv
from tests.support.waiting import wait_until
from tests.support.webservers import ApacheProxyFcgi, Nginx

pytestmark = pytest.mark.integration

CONNECTIONS = 32
SLOW_SECONDS = 1.5
# A fast request answered while a child was idle takes milliseconds; held behind a
# slow view it takes SLOW_SECONDS. The bound leaves room for a machine shared with
# other test runs, and stays well below the slow view.
FAST_LIMIT_SECONDS = 0.8
SEED = int(os.environ.get("SAFEFCGI_TEST_SEED", random.randrange(2**32)))


def nginx_keeping(base: Path, socket_path: Path, keepalive: int) -> Nginx:
    """The shipped nginx block, with room for ``keepalive`` idle connections per worker."""
    nginx = Nginx(base, socket_path, keep_conn=True)
    site = base / "site.conf"
    text = site.read_text()
    assert "    keepalive 4;" in text, "conf/nginx.conf no longer keeps 4 connections"
    site.write_text(text.replace("    keepalive 4;", f"    keepalive {keepalive};"))
    main = base / "nginx.conf"
    main.write_text(main.read_text().replace("worker_connections 64;",
                                             "worker_connections 512;"))
    return nginx


class KeepingApache(ApacheProxyFcgi):
    """conf/apache-proxypass.conf with enablereuse=on, one Apache process of 32 threads.

    Apache keeps up to ThreadsPerChild connections per process: 32 here.
    """

    def __init__(self, base_dir: Path, socket_path: Path, threads: int):
        super().__init__(base_dir, "apache-proxypass.conf", socket_path, keep_conn=True)
        main = base_dir / "apache2.conf"
        text = main.read_text()
        assert "ThreadsPerChild 8\nMaxRequestWorkers 8\n" in text
        main.write_text(text.replace("ThreadsPerChild 8\nMaxRequestWorkers 8\n",
                                     f"ThreadsPerChild {threads}\n"
                                     f"MaxRequestWorkers {threads}\n"))


def start_safefcgi(base_dir: Path, *options: str) -> Process:
    """The fixture site behind a unix socket others may connect to (Apache's workers)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    socket_path = base_dir / "fcgi.sock"
    hook_log = base_dir / "hooks.log"
    hook_log.touch()
    process = Process("safefcgi", fixturesite_argv(socket_path, "--socket-mode", "0666",
                                                   *options),
                      base_dir / "server.log",
                      env={**os.environ, "FIXTURESITE_HOOK_LOG": str(hook_log)}).start()
    try:
        wait_until(lambda: socket_path.exists() or not process.is_running(), 30,
                   "safefcgi to create its socket")
        if not process.is_running():
            raise HarnessError("safefcgi exited:\n" + tail(process.log_path))
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture(params=["nginx", "apache"])
def site(request):
    """safefcgi with 2 children behind a web server keeping up to 32 connections open."""
    print(f"seed {SEED} (set SAFEFCGI_TEST_SEED to repeat)")
    # Apache's workers run as www-data: the socket's directories must let them in
    # (pytest's own temporary directory is private to root).
    tmp_path = Path(tempfile.mkdtemp(prefix="safefcgi-kept-"))
    tmp_path.chmod(0o755)
    if not os.environ.get("SAFEFCGI_KEEP_TMP"):
        request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    server = start_safefcgi(tmp_path / "safefcgi", "--maxchildren", "2", "--minspare", "2",
                            "--maxspare", "2", "--script-name", "/")
    socket_path = tmp_path / "safefcgi" / "fcgi.sock"
    front = None
    try:
        if request.param == "nginx":
            front = nginx_keeping(tmp_path / "nginx", socket_path, CONNECTIONS)
        else:
            front = KeepingApache(tmp_path / "apache", socket_path, CONNECTIONS)
        front.start()
        yield Site(front.port, server, front)
    finally:
        if front is not None:
            front.stop()
        server.stop()
    log = server.log()
    assert "malformed" not in log and "internal error" not in log, log[-3000:]


@dataclass
class Site:
    port: int
    server: Process
    front: Nginx | KeepingApache

    def check_no_errors(self, outcomes: list[Outcome]) -> None:
        errors = [(o.method, o.path, o.error) for o in outcomes if o.error]
        assert errors == [], (f"{len(errors)} failed of {len(outcomes)}: {errors[:5]}\n"
                              f"{tail(self.front.error_log, 10)}\n"
                              f"{_without_sleeps(self.server.log())}")


def _without_sleeps(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if " sleeps " not in line)[-6000:]


@dataclass
class Outcome:
    method: str
    path: str
    seconds: float
    error: str | None = None
    answer: dict = field(default_factory=dict)


class Client:
    """One browser: its own HTTP keep-alive connection to the web server."""

    def __init__(self, port: int, number: int):
        self.port = port
        self.number = number
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: bytes | None = None) -> Outcome:
        started = time.monotonic()
        headers = {"Content-Type": "text/plain"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            return Outcome(method, path, time.monotonic() - started, f"{exc!r}")
        seconds = time.monotonic() - started
        if response.status != 200:
            return Outcome(method, path, seconds, f"status {response.status}: {data[:200]!r}")
        if path.startswith("/p/echo"):
            answer = json.loads(data)
            if answer["method"] != method or answer["body"] != (body or b"").decode():
                return Outcome(method, path, seconds, f"wrong answer {answer}")
            return Outcome(method, path, seconds, answer=answer)
        return Outcome(method, path, seconds)

    def mixed(self, rng: random.Random, n: int) -> Outcome:
        if rng.random() < 0.5:
            return self.call("GET", f"/p/echo/{self.number}/{n}")
        body = f"client {self.number} request {n} ".encode() * rng.randint(1, 400)
        return self.call("POST", f"/p/echo/{self.number}/{n}", body)


def run_clients(port: int, seconds: float, slow_views: int,
                during: callable = None) -> tuple[list[Outcome], list[Outcome]]:
    """32 clients; client 0 runs ``slow_views`` slow views in a row, the others mixed
    GET/POST with short random pauses, until ``seconds`` have passed (and the slow
    ones are done). Returns (fast outcomes, slow outcomes)."""
    clients = [Client(port, n) for n in range(CONNECTIONS)]
    # Open every connection at once: each request needs its own upstream connection,
    # so the web server opens CONNECTIONS of them and keeps them.
    barrier = threading.Barrier(CONNECTIONS)
    fast: list[Outcome] = []
    slow: list[Outcome] = []
    deadline = time.monotonic() + seconds

    def slow_client(client: Client) -> None:
        barrier.wait()
        for _ in range(slow_views):
            slow.append(client.call("GET", f"/sleep?seconds={SLOW_SECONDS}"))

    def fast_client(client: Client) -> None:
        rng = random.Random(SEED + client.number)
        barrier.wait()
        n = 0
        while time.monotonic() < deadline:
            fast.append(client.mixed(rng, n))
            n += 1
            time.sleep(rng.uniform(0.05, 0.3))

    threads = [threading.Thread(target=slow_client if c.number == 0 else fast_client,
                                args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    if during is not None:
        during()
    for thread in threads:
        thread.join(seconds + 60)
    for client in clients:
        client.conn.close()
    return fast, slow


def warm_up(port: int) -> None:
    """Make the web server open CONNECTIONS connections at once (each request its own)."""
    clients = [Client(port, n) for n in range(CONNECTIONS)]
    outcomes: list[Outcome] = []
    threads = [threading.Thread(target=lambda c=c: outcomes.append(
        c.call("GET", "/sleep?seconds=0.05"))) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for client in clients:
        client.conn.close()
    assert [o.error for o in outcomes if o.error] == []
    assert len(outcomes) == CONNECTIONS


def test_requests_on_any_kept_connection_never_wait_behind_a_slow_view(site):
    port = site.port
    warm_up(port)
    fast, slow = run_clients(port, seconds=4.0, slow_views=3)
    site.check_no_errors(fast + slow)
    assert len(slow) == 3 and min(o.seconds for o in slow) >= SLOW_SECONDS
    assert len(fast) > 200, len(fast)
    assert {o.method for o in fast} == {"GET", "POST"}
    # The web server did keep its connections: later requests came on used ones.
    assert max(o.answer["connection_requests"] for o in fast) > 5
    waited = sorted((o.seconds for o in fast), reverse=True)
    assert waited[0] < FAST_LIMIT_SECONDS, \
        f"a request waited {waited[0]:.3f} s while a child was idle (top: {waited[:5]})"


def test_sighup_with_kept_connections_fails_no_request(site):
    port, server = site.port, site.server
    warm_up(port)
    before = {o.answer["pid"] for o in run_clients(port, seconds=1.0, slow_views=0)[0]}

    def reload_twice() -> None:
        time.sleep(1.0)
        server.send_signal(signal.SIGHUP)
        time.sleep(2.5)
        server.send_signal(signal.SIGHUP)

    fast, slow = run_clients(port, seconds=6.0, slow_views=2, during=reload_twice)
    site.check_no_errors(fast + slow)
    # On a busy machine a reload can outlast the load: wait for the old children.
    wait_until(lambda: not any(alive(pid) for pid in before), 30,
               "the children from before the reload to exit")
    after = {o.answer["pid"] for o in run_clients(port, seconds=1.0, slow_views=0)[0]}
    assert after and not after & before, "the children were not replaced"
    assert "closed" not in "".join(line for line in server.log().splitlines()
                                   if "kept-open" in line)


def test_graceful_stop_serves_what_was_sent_on_kept_connections(site):
    port, server = site.port, site.server
    warm_up(port)
    outcomes: list[Outcome] = []
    clients = [Client(port, n) for n in range(6)]
    threads = [threading.Thread(target=lambda c=c: outcomes.append(
        c.call("GET", f"/sleep?seconds={SLOW_SECONDS}"))) for c in clients]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # two run, four wait on their kept connections
    server.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert server.wait(30), "safefcgi did not stop"
    site.check_no_errors(outcomes)
    assert len(outcomes) == 6

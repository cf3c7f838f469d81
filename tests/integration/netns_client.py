"""Clients the scale-out tests run *on* a test host, through ``ip netns exec``.

The tests never connect to the hosts' addresses themselves: they run this
script inside a host's namespace and read the JSON it prints.  Every loop
is bounded in count and in time.

    netns_client.py wait PORT PATH SECONDS
    netns_client.py spread PORT --threads N --requests N --seconds S [--sleep S]
                           [--until HOST --until-count N]
    netns_client.py seed PORT --users a,b --password P --clients N --requests N
    netns_client.py fastcgi PORT PATH ADDRESS...
    netns_client.py ping ADDRESS PORT PATH [--response TEXT] [--interval S]
                         [--seconds S] [--polls N] [--until-refused N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safefcgi.fastcgi import client as fastcgi  # noqa: E402
from tests.support.fastcgi import whole_request  # noqa: E402
from tests.support.load import Account, run_load  # noqa: E402
from tests.support.webservers import http_get  # noqa: E402


def emit(document: dict) -> None:
    print(json.dumps(document), flush=True)


def wait(args: argparse.Namespace) -> int:
    """Poll until the web server answers ``path`` with 200, for at most ``seconds``."""
    deadline = time.monotonic() + args.seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = http_get(f"http://127.0.0.1:{args.port}", args.path, 2)
            if status == 200:
                emit({"ready": True})
                return 0
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, http.client.HTTPException) as error:
            last = repr(error)
        time.sleep(0.1)
    emit({"ready": False, "last": last})
    return 1


class Spreader:
    """Threads asking /host back to back; every request is one [start, end, host, error] row.

    Times are CLOCK_MONOTONIC, which all namespaces share, so the test can
    tell which requests were in flight when it signalled a server.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: list[list] = []
        self.lock = threading.Lock()
        self.remaining = args.requests
        self.until_seen = 0
        self.deadline = time.monotonic() + args.seconds

    def take(self) -> bool:
        with self.lock:
            if self.remaining <= 0 or time.monotonic() > self.deadline:
                return False
            self.remaining -= 1
            return True

    def record(self, row: list) -> None:
        with self.lock:
            self.rows.append(row)
            done = len(self.rows)
            if row[2] is not None and row[2] == self.args.until:
                self.until_seen += 1
                if self.until_seen >= self.args.until_count:
                    self.remaining = 0  # the host we waited for is serving: enough
        if done % self.args.progress == 0:
            emit({"done": done})

    def worker(self) -> None:
        conn = None
        path = f"/host?sleep={self.args.sleep}"
        while self.take():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.args.port,
                                                  timeout=self.args.timeout)
            start = time.monotonic()
            host, error = None, None
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    host = json.loads(body)["host"]
                else:
                    error = f"HTTP {response.status}: {body[:120]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                error = repr(exc)
            if error is not None or response.will_close:
                conn.close()
                conn = None
            self.record([start, time.monotonic(), host, error])
        if conn is not None:
            conn.close()

    def run(self) -> int:
        threads = [threading.Thread(target=self.worker, daemon=True)
                   for _ in range(self.args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(self.deadline - time.monotonic(), 0) + self.args.timeout + 1)
        with self.lock:
            emit({"results": self.rows, "unfinished": sum(t.is_alive() for t in threads)})
        return 0


def seed(args: argparse.Namespace) -> int:
    """The seed scenario's logged-in clients (tests/support/load.py) against the web tier."""
    accounts = [Account(name, args.password) for name in args.users.split(",")]
    result = run_load(f"http://127.0.0.1:{args.port}", accounts, clients=args.clients,
                      requests=args.requests, seconds=args.seconds)
    emit({"requests": result.requests, "errors": result.errors,
          "statuses": {str(k): v for k, v in result.statuses.items()},
          "children": sorted(pid for pid in result.children if pid is not None),
          "written": sorted(result.written),
          "backends_by_child": {str(k): sorted(v) for k, v in
                                result.backends_by_child.items()},
          "summary": result.summary()})
    return 0


def probe_fastcgi(args: argparse.Namespace) -> int:
    """One FastCGI request straight to each application host, as a web server sends it.

    Prints, per address, whether the host answered (with the response) or
    closed the connection, and how many bytes it sent before closing.
    """
    for address in args.addresses:
        emit({"address": address, **_probe(address, args.port, args.path)})
    return 0


def _probe(address: str, port: int, path: str) -> dict:
    try:
        sock = fastcgi.connect((address, port), timeout=5)
    except OSError as error:
        return {"outcome": "unreachable", "error": repr(error)}
    received = b""
    try:
        sock.sendall(whole_request(path))
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our request unread: the kernel answers with a reset
    except OSError as error:
        return {"outcome": "error", "error": repr(error), "bytes": len(received)}
    finally:
        sock.close()
    reader = fastcgi.RecordReader()
    reader.feed(received)
    records = list(reader.records())
    if not any(item.type == fastcgi.END_REQUEST for item in records):
        return {"outcome": "closed", "bytes": len(received)}
    response = fastcgi.parse_response(records)
    return {"outcome": "answered", "status": response.status,
            "body": response.body.decode("latin-1")}


class PingPoller:
    """A balancer's health check: one FastCGI request for the ping path, again and again.

    Each poll is a new connection, as a balancer makes it, and becomes one
    [start, end, state, detail] row; ``state`` is "pong" (200 with the
    expected answer), "stopping" (503 "stopping"), "refused" (the connection
    was refused) or "other".  A line is printed whenever the state changes,
    so the test can wait for the host to say "pong" before it acts.  Stops
    after --until-refused refusals in a row, --polls polls or --seconds.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: list[list] = []

    def run(self) -> int:
        deadline = time.monotonic() + self.args.seconds
        refused_in_a_row = 0
        while len(self.rows) < self.args.polls and time.monotonic() < deadline:
            start = time.monotonic()
            state, detail = self.classify(_probe(self.args.address, self.args.port,
                                                 self.args.path))
            if not self.rows or self.rows[-1][2] != state:
                emit({"state": state})
            self.rows.append([start, time.monotonic(), state, detail])
            refused_in_a_row = refused_in_a_row + 1 if state == "refused" else 0
            if refused_in_a_row >= self.args.until_refused:
                break
            time.sleep(self.args.interval)
        emit({"polls": self.rows})
        return 0

    def classify(self, probe: dict) -> tuple[str, str]:
        if probe["outcome"] == "answered":
            answer = (probe["status"], probe["body"])
            if answer == (200, self.args.response):
                return "pong", ""
            if answer == (503, "stopping\n"):
                return "stopping", ""
            return "other", f"HTTP {probe['status']}: {probe['body'][:120]!r}"
        if "ConnectionRefusedError" in probe.get("error", ""):
            return "refused", ""
        return "other", f"{probe['outcome']}: {probe.get('error', '')}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="netns_client.py")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("wait")
    command.add_argument("port", type=int)
    command.add_argument("path")
    command.add_argument("seconds", type=float)
    command.set_defaults(run=wait)
    command = commands.add_parser("spread")
    command.add_argument("port", type=int)
    command.add_argument("--threads", type=int, default=6)
    command.add_argument("--requests", type=int, default=300)
    command.add_argument("--seconds", type=float, default=30)
    command.add_argument("--sleep", type=float, default=0.0)
    command.add_argument("--timeout", type=float, default=10)
    command.add_argument("--progress", type=int, default=10)
    command.add_argument("--until", help="stop once this host answered --until-count times")
    command.add_argument("--until-count", type=int, default=5)
    command.set_defaults(run=lambda args: Spreader(args).run())
    command = commands.add_parser("seed")
    command.add_argument("port", type=int)
    command.add_argument("--users", required=True)
    command.add_argument("--password", required=True)
    command.add_argument("--clients", type=int, default=6)
    command.add_argument("--requests", type=int, default=600)
    command.add_argument("--seconds", type=float, default=60)
    command.set_defaults(run=seed)
    command = commands.add_parser("fastcgi")
    command.add_argument("port", type=int)
    command.add_argument("path")
    command.add_argument("addresses", nargs="+")
    command.set_defaults(run=probe_fastcgi)
    command = commands.add_parser("ping")
    command.add_argument("address")
    command.add_argument("port", type=int)
    command.add_argument("path")
    command.add_argument("--response", default="pong")
    command.add_argument("--interval", type=float, default=0.05)
    command.add_argument("--seconds", type=float, default=30)
    command.add_argument("--polls", type=int, default=1000)
    command.add_argument("--until-refused", type=int, default=3)
    command.set_defaults(run=lambda args: PingPoller(args).run())
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

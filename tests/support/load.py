"""Load for the integration tests: logged-in browsers that check every answer, and plain GETs.

Each client keeps its own keep-alive connection and cookie jar and knows what
only a correct server can answer it: its own username and session nonce, the
random token it sent, the key it wrote.  Anything else is recorded as an
error, never raised, so one run reports everything that went wrong.  Request
counts, per-request timeouts and the whole run are bounded.
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from .webservers import http_get


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass
class LoadResult:
    """What a load run saw; every unexpected answer is one line in ``errors``."""

    requests: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    written: set[str] = field(default_factory=set)
    children: set[int] = field(default_factory=set)
    backends_by_child: dict[int, set[int]] = field(default_factory=dict)
    # Server processes that answered over a database connection another process opened.
    openers_by_child: dict[int, set[int]] = field(default_factory=dict)
    cache_clients_by_child: dict[int, set[int]] = field(default_factory=dict)
    elapsed: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.errors.extend(other.errors)
        self.statuses.update(other.statuses)
        self.written |= other.written
        self.children |= other.children
        for mine, theirs in ((self.backends_by_child, other.backends_by_child),
                             (self.openers_by_child, other.openers_by_child),
                             (self.cache_clients_by_child, other.cache_clients_by_child)):
            for child, values in theirs.items():
                mine.setdefault(child, set()).update(values)

    def summary(self, limit: int = 15) -> str:
        lines = [f"{self.requests} requests in {self.elapsed:.1f}s,"
                 f" statuses {dict(self.statuses)}, {len(self.children)} server processes,"
                 f" {len(self.errors)} errors"]
        lines += self.errors[:limit]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more")
        return "\n".join(lines)


# A kept-alive connection idle for longer than this is replaced before the next request.
# The web server closes idle ones on its own clock (lighttpd: server.max-keep-alive-idle,
# 5 s by default), and a request sent as it does so meets a closed connection that the
# server never read from: a browser retries it, this client would count it as an error.
# A client sits idle that long while the others log in on a busy machine (each login
# hashes a password).
KEEP_ALIVE_IDLE_LIMIT = 2.0


class UnexpectedAnswer(Exception):
    """A response that a correct server could not have sent to this client."""


class Client:
    """One browser-like HTTP client: its own keep-alive connection and cookie jar."""

    OPERATIONS = ("whoami", "query", "write")

    def __init__(self, url: str, account: Account, number: int, key_prefix: str,
                 timeout: float, operations: tuple[str, ...] = OPERATIONS) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._address = (host, int(port))
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._conn_requests = 0  # answered on the current connection
        self._conn_last_used = 0.0
        self.account = account
        self.name = f"client{number}({account.username})"
        self.nonce = secrets.token_hex(8)
        self.cookies: dict[str, str] = {}
        self._key_prefix = f"{key_prefix}-{number}-"
        self._sequence = 0
        self.operations = operations
        self.result = LoadResult()

    def log_in(self) -> bool:
        """Log in with a fresh session; False (and an error recorded) if that failed."""
        return self._step("login", self.login)

    def run(self, count: int, deadline: float, stop: threading.Event) -> None:
        """Make up to ``count`` requests cycling through OPERATIONS."""
        try:
            for index in range(count):
                if stop.is_set():
                    return
                if time.monotonic() > deadline:
                    self.result.errors.append(
                        f"{self.name}: deadline reached after {index} of {count} requests")
                    return
                operation = self.operations[index % len(self.operations)]
                self._step(operation, getattr(self, operation))
        finally:
            self._close()

    def login(self) -> None:
        answer = self._call("POST", "/login", {
            "username": self.account.username, "password": self.account.password,
            "nonce": self.nonce,
        })
        self._expect(answer, "user", self.account.username)

    def whoami(self) -> None:
        answer = self._call("GET", "/whoami")
        self._expect(answer, "user", self.account.username)
        self._expect(answer, "nonce", self.nonce)

    def query(self) -> None:
        token = secrets.token_hex(8)
        answer = self._call("GET", "/query?" + urlencode({"token": token}))
        self._expect(answer, "token", token)
        self._record(self.result.backends_by_child, answer, "backend")
        self._record(self.result.openers_by_child, answer, "opened_by")

    def cache(self) -> None:
        token = secrets.token_hex(8)
        answer = self._call("GET", "/cache?" + urlencode({"token": token}))
        self._expect(answer, "token", token)
        self._record(self.result.cache_clients_by_child, answer, "client")

    @staticmethod
    def _record(by_child: dict[int, set[int]], answer: dict, name: str) -> None:
        if answer.get(name) is not None:
            by_child.setdefault(answer["pid"], set()).add(answer[name])

    def write(self) -> None:
        self._sequence += 1
        key = f"{self._key_prefix}{self._sequence}"
        answer = self._call("POST", "/write", {"key": key})
        # The server committed the row before answering, whatever the body says.
        self.result.written.add(key)
        self._expect(answer, "key", key)

    def _step(self, operation: str, action: Callable[[], None]) -> bool:
        self.result.requests += 1
        try:
            action()
        except UnexpectedAnswer as error:
            self.result.errors.append(f"{self.name} {operation}: {error}")
            return False
        except (OSError, http.client.HTTPException) as error:
            self.result.errors.append(
                f"{self.name} {operation}: {error!r}{self._connection_age()}")
            self._close()
            return False
        return True

    def _call(self, method: str, path: str, form: Mapping[str, str] | None = None) -> dict:
        status, body = self._send(method, path, form)
        self.result.statuses[status] += 1
        if status != 200:
            raise UnexpectedAnswer(f"HTTP {status}: {body[:200]!r}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise UnexpectedAnswer(f"not JSON: {body[:200]!r}") from None
        self.result.children.add(answer.get("pid"))
        return answer

    def _connection_age(self) -> str:
        """Which connection a transport error met: fresh, or kept alive (and idle how long)."""
        if not self._conn_requests:
            return " (on a new connection)"
        idle = time.monotonic() - self._conn_last_used
        return (f" (on a connection kept alive after {self._conn_requests} requests,"
                f" idle for {idle:.1f} s)")

    def _send(self, method: str, path: str, form: Mapping[str, str] | None) -> tuple[int, bytes]:
        if self._conn is not None and \
                time.monotonic() - self._conn_last_used > KEEP_ALIVE_IDLE_LIMIT:
            self._close()
        if self._conn is None:
            self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
            self._conn_requests = 0
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in
                                          self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read()
        self._conn_requests += 1
        self._conn_last_used = time.monotonic()
        self._store_cookies(response.headers.get_all("Set-Cookie") or [])
        return response.status, data

    def _store_cookies(self, headers: Iterable[str]) -> None:
        for header in headers:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)

    @staticmethod
    def _expect(answer: dict, name: str, expected: str) -> None:
        if answer.get(name) != expected:
            raise UnexpectedAnswer(f"expected {name}={expected!r}, got {answer!r}")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_load(url: str, accounts: list[Account], *, clients: int = 8, requests: int = 2000,
             seconds: float = 120.0, request_timeout: float = 10.0,
             stop_after_errors: int | None = None,
             operations: tuple[str, ...] = Client.OPERATIONS) -> LoadResult:
    """Run ``clients`` concurrent logged-in clients for ``requests`` requests in total.

    Client ``n`` logs in as ``accounts[n % len(accounts)]``, so several clients
    share a user but each has a session of its own.  The clients log in one
    after the other, like users arriving over the day, and then all make
    requests at once.  The run ends when all requests are made, after
    ``seconds`` (which counts as an error), or once ``stop_after_errors``
    errors were seen.  Each client cycles through ``operations`` (methods of
    ``Client``).
    """
    # Write keys are unique across runs against the same database.
    key_prefix = secrets.token_hex(6)
    per_client = -(-requests // clients)
    start = time.monotonic()
    deadline = start + seconds
    stop = threading.Event()
    workers = [Client(url, accounts[n % len(accounts)], n, key_prefix, request_timeout,
                      operations)
               for n in range(clients)]

    def too_many_errors() -> bool:
        return bool(stop_after_errors) and \
            sum(len(worker.result.errors) for worker in workers) >= stop_after_errors

    logged_in = []
    for worker in workers:
        if too_many_errors():
            break
        if time.monotonic() > deadline:
            worker.result.errors.append(f"{worker.name}: deadline reached before logging in")
            break
        if worker.log_in():
            logged_in.append(worker)
    threads = [threading.Thread(target=worker.run, args=(per_client, deadline, stop),
                                name=worker.name, daemon=True)
               for worker in logged_in]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if too_many_errors():
            stop.set()
        # A client can overrun the deadline by at most one request timeout.
        if time.monotonic() > deadline + request_timeout + 5:
            break
        time.sleep(0.05)
    stop.set()
    result = LoadResult()
    for worker in workers:
        result.merge(worker.result)
    result.elapsed = time.monotonic() - start
    if any(thread.is_alive() for thread in threads):
        result.errors.append("some clients were still running after the deadline")
    return result


class BackgroundLoad:
    """Client threads GETting ``path`` until stopped: at most ``count`` requests each and
    ``seconds`` in all. Each client counts the bodies it got; failures are lines."""

    def __init__(self, url: str, path: str, clients: int = 4, count: int = 20000,
                 seconds: float = 20.0) -> None:
        self.url, self.path, self.count, self.seconds = url, path, count, seconds
        self.bodies: list[Counter] = [Counter() for _ in range(clients)]
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(clients)]

    def __enter__(self) -> BackgroundLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self.finish()

    def finish(self) -> None:
        """Wait for every client to make its requests (bounded by ``seconds``)."""
        for thread in self._threads:
            thread.join(self.seconds + 5)

    def _run(self, number: int) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.count):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, body = http_get(self.url, self.path, timeout=10)
            except OSError as exc:
                self.failures.append(f"client {number}: {exc!r}")
                continue
            if status != 200:
                self.failures.append(f"client {number}: HTTP {status}")
            else:
                self.bodies[number][body] += 1

    def total(self) -> Counter:
        return sum(self.bodies, Counter())

    def served(self) -> int:
        return sum(self.total().values())

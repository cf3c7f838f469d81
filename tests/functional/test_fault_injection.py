"""Seeded fault injection: mixed load while a random fault hits the server every 1-2 s.

The faults are what a prefork master meets in production: reloads and pool
resizes from the operator, children killed (SIGKILL, a real-time signal),
frozen and thawed (SIGSTOP, SIGCONT), a child left without file descriptors,
a child that exits during its after-fork hook. At the end the master must
be alive and no bigger than at the start, every failed request must be
explained by a killed child, and a TERM must stop everything cleanly.

SAFEFCGI_FAULT_SECONDS sets how long faults are injected (default 50, about
60 s in all); SAFEFCGI_FAULT_SEED replays a run (the seed is printed, and is
in every assertion message).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from safefcgi.fastcgi import client
from tests.support.waiting import wait_until

FAULT_SECONDS = float(os.environ.get("SAFEFCGI_FAULT_SECONDS", "50"))
LOAD_THREADS = 3
RSS_GROWTH_LIMIT_KIB = 16 * 1024
FAULTS = ("hup", "ttin", "ttou", "kill", "stop_cont", "realtime", "out_of_fds", "exit_in_hook")


@dataclass
class Load:
    """Mixed requests from a few threads until stopped; every failure is kept."""

    address: str
    seed: int
    stop: threading.Event = field(default_factory=threading.Event)
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    def run(self, number: int) -> None:
        rng = random.Random(self.seed * 100 + number)
        while not self.stop.is_set():
            method, path, body, expect = self._pick(rng)
            try:
                response = client.request(self.address, path, method=method, body=body,
                                          timeout=30)
            except (OSError, ConnectionError) as exc:
                self.failures.append(f"{time.strftime('%T')} {method} {path}: {exc!r}")
                continue
            if response.status != 200 or expect not in response.body:
                self.failures.append(f"{time.strftime('%T')} {method} {path}: "
                                     f"{response.status} {response.body[:100]!r}")
            else:
                self.answered += 1

    @staticmethod
    def _pick(rng: random.Random) -> tuple[str, str, bytes, bytes]:
        kind = rng.choice(("pid", "hello", "sleep", "post", "big"))
        if kind == "sleep":
            return "GET", f"/sleep?seconds={rng.uniform(0.05, 0.3):.2f}", b"", b"slept in"
        if kind == "post":
            return "POST", "/p/raw", os.urandom(rng.randint(1, 200_000)), b"sha256"
        if kind == "big":
            return "GET", "/p/big?size=300000", b"", b"y" * 100
        if kind == "hello":
            return "GET", "/hello", b"", b"Hello"
        return "GET", "/pid", b"", b""


class Injector:
    """Picks and applies faults; counts the children it killed."""

    def __init__(self, server, rng: random.Random, fault_file: str):
        self.server = server
        self.rng = rng
        self.fault_file = fault_file
        self.killed = 0
        self.history: list[str] = []

    def inject(self) -> None:
        fault = self.rng.choice(FAULTS)
        getattr(self, f"_{fault}")()

    def _note(self, text: str) -> None:
        self.history.append(f"{time.strftime('%T')} {text}")

    def _signal_master(self, signum: int) -> None:
        self._note(signal.Signals(signum).name)
        self.server.process.send_signal(signum)

    def _hup(self) -> None:
        self._signal_master(signal.SIGHUP)

    def _ttin(self) -> None:
        self._signal_master(signal.SIGTTIN)

    def _ttou(self) -> None:
        self._signal_master(signal.SIGTTOU)

    def _victim(self) -> int | None:
        children = sorted(self.server.children())
        return self.rng.choice(children) if children else None

    def _signal_child(self, signum: int, name: str) -> bool:
        pid = self._victim()
        if pid is None:
            return False
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False
        self._note(f"{name} to child {pid}")
        return True

    def _kill(self) -> None:
        self.killed += self._signal_child(signal.SIGKILL, "SIGKILL")

    def _realtime(self) -> None:
        offset = self.rng.randint(0, 8)  # the default action of each: terminate
        self.killed += self._signal_child(signal.SIGRTMIN + offset, f"SIGRTMIN+{offset}")

    def _stop_cont(self) -> None:
        pid = self._victim()
        if pid is None:
            return
        pause = self.rng.uniform(0.2, 1.0)
        try:
            os.kill(pid, signal.SIGSTOP)
            self._note(f"SIGSTOP to child {pid} for {pause:.1f} s")
            time.sleep(pause)
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _in_next_child(self, kind: str) -> None:
        """The next child forked takes this fault in its after-fork hook; fork one now."""
        with open(self.fault_file + ".new", "w") as fault:
            fault.write(kind)
        os.rename(self.fault_file + ".new", self.fault_file)
        self._note(f"next child: {kind}")
        self.server.process.send_signal(signal.SIGTTIN)

    def _out_of_fds(self) -> None:
        self._in_next_child("out_of_fds")

    def _exit_in_hook(self) -> None:
        self._in_next_child("exit")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def process_states(server) -> dict[int, str]:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(server.process.pid)],
                         capture_output=True, text=True).stdout
    return {int(pid): stat for pid, stat in (line.split() for line in out.splitlines())}


def settled(server) -> int:
    """Wait until no child is a zombie or on its way out; the children's count."""
    def steady():
        before = process_states(server)
        time.sleep(0.5)
        after = process_states(server)
        return before == after and not any("Z" in s for s in after.values()) and after
    wait_until(steady, 15, "the pool to settle", detail=lambda: process_states(server))
    return len(process_states(server))


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_master_survives_random_faults_under_mixed_load(start_server, tmp_path):
    seed = int(os.environ.get("SAFEFCGI_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"fault injection seed {seed} (SAFEFCGI_FAULT_SEED={seed} replays it)")
    rng = random.Random(seed)
    fault_file = str(tmp_path / "fault")
    pidfile = tmp_path / "site.pid"
    server = start_server("--minspare", "2", "--maxspare", "4", "--maxchildren", "6",
                          "--maxrequests", "40", "--graceful-timeout", "15",
                          "--pidfile", str(pidfile),
                          "--after-fork", "fixturesite_hooks.after_injected_fault",
                          env={"FIXTURESITE_FAULT_FILE": fault_file})
    master = server.process.pid
    children_before = settled(server)
    fds_before, rss_before = open_fds(master), rss_kib(master)
    load = Load(server.socket, seed)
    threads = [threading.Thread(target=load.run, args=(n,), daemon=True)
               for n in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    injector = Injector(server, rng, fault_file)

    deadline = time.monotonic() + FAULT_SECONDS
    while time.monotonic() < deadline and server.process.poll() is None:
        time.sleep(rng.uniform(1.0, 2.0))
        injector.inject()
    time.sleep(2)  # the last fault's consequences
    load.stop.set()
    for thread in threads:
        thread.join(60)

    def replay() -> str:
        return (f"seed {seed}; faults:\n" + "\n".join(injector.history)
                + "\nfailures:\n" + "\n".join(load.failures[:20])
                + "\n--- server log (end)\n" + server.log[-4000:])

    assert server.process.poll() is None, replay()
    assert load.answered > 100, replay()
    assert len(load.failures) <= injector.killed, replay()
    # The pool settles (no zombie left); per child the master holds one channel fd.
    if os.path.exists(fault_file):  # a fault no child took (the pool was full)
        os.unlink(fault_file)
    children_after = settled(server)
    fds_after = open_fds(master)
    assert fds_after - children_after <= fds_before - children_before, \
        f"master fds {fds_before} -> {fds_after}, children {children_before} -> " \
        f"{children_after}\n{replay()}"
    assert rss_kib(master) <= rss_before + RSS_GROWTH_LIMIT_KIB, \
        f"master RSS {rss_before} -> {rss_kib(master)} KiB\n{replay()}"
    assert "Traceback" not in server.log, replay()

    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_exit(30) == 0, replay()
    assert not os.path.exists(server.socket), replay()
    assert not pidfile.exists(), replay()
    wait_until(lambda: group_gone(master), 10, "every process of the group to exit",
               detail=replay)

"""The prefork master with real forks and real signals (no web server needed)."""

import itertools
import os
import re
import signal
import time

import pytest

from safefcgi.fastcgi import client
from tests.support.processes import alive
from tests.support.servers import sleeping_child
from tests.support.threads import in_thread
from tests.support.waiting import stays_false, wait_until


@pytest.mark.parametrize("args, signame, to_group", [
    (("--maxchildren", "3"), "SIGTERM", False),
    (("--maxchildren", "3"), "SIGQUIT", False),
    (("--maxchildren", "2"), "SIGINT", True),  # what Ctrl-C in a terminal does
    (("--method", "threaded", "--maxthreads", "4"), "SIGTERM", False),
], ids=["TERM", "QUIT", "Ctrl-C to the group", "threaded TERM"])
def test_an_idle_server_stops_at_once_and_leaves_nothing_behind(start_server, args, signame,
                                                                 to_group):
    # stock flup's idle master ignored SIGTERM: its select() had no timeout.
    server = start_server(*args)
    children = server.children()
    started = time.monotonic()
    signum = getattr(signal, signame)
    if to_group:
        os.killpg(server.process.pid, signum)
    else:
        server.process.send_signal(signum)
    assert server.wait_for_exit(5) == 0
    assert time.monotonic() - started < 3
    assert not os.path.exists(server.socket)
    wait_until(lambda: all(not alive(pid) for pid in children), 5, "every child to exit")


def test_maxrequests_replaces_children(start_server):
    server = start_server("--maxchildren", "1", "--maxrequests", "3")
    pids = [int(server.get("/pid").body) for _ in range(10)]
    runs = [len(list(group)) for _, group in itertools.groupby(pids)]
    # the start-up probe took one request from the first child
    assert runs[0] == 2 and runs[1:-1] == [3] * (len(runs) - 2) and runs[-1] <= 3
    assert len(set(pids)) == len(runs)  # a retired pid never comes back
    assert server.process.poll() is None


def test_a_killed_child_is_replaced(start_server):
    server = start_server("--maxchildren", "1")
    first = int(server.get("/pid").body)
    os.kill(first, signal.SIGKILL)
    replacement = wait_until(lambda: server.children() - {first}, 10, "a replacement child")
    assert replacement
    assert int(server.get("/pid").body) != first
    assert "killed by SIGKILL" in server.log


def test_pool_grows_under_concurrent_load_up_to_maxchildren(start_server):
    import concurrent.futures

    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "3")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: server.get("/sleep?seconds=0.4").body, range(12)))
    serving_pids = {body.split()[-1] for body in bodies}
    assert 1 < len(serving_pids) <= 3, serving_pids


def test_idle_pool_shrinks_back_to_maxspare(start_server):
    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "3")
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: server.get("/sleep?seconds=0.5"), range(3)))
    wait_until(lambda: len(server.children()) == 1, 10, "the pool to shrink to one child")


def test_minspare_0_still_grows_the_pool_when_every_child_is_busy(start_server):
    # Only an idle child accepts: with none kept, a second request would wait for the first.
    server = start_server("--minspare", "0", "--maxspare", "1", "--maxchildren", "3")
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(server.get, "/sleep?seconds=3")
        time.sleep(0.5)  # the slow request holds the only child
        started = time.monotonic()
        quick = pool.submit(server.get, "/pid")
        assert quick.result(timeout=10).status == 200
        assert time.monotonic() - started < 2, "waited for the slow request"
        assert slow.result(timeout=10).status == 200


# -- children: timeout, jitter, crashes ------------------------------------------------------

def test_timeout_kills_a_hung_request_names_it_and_the_next_request_succeeds(start_server):
    server = start_server("--maxchildren", "1", "--timeout", "1")
    pid = int(server.get("/pid").body)
    with pytest.raises((ConnectionError, OSError)):
        server.get("/sleep?seconds=30", timeout=10)

    assert server.get("/pid").status == 200
    assert re.search(rf"child {pid} busy for 1\.\d s on GET /sleep\?seconds=30 "
                     r"\(over --timeout 1 s\): killing it", server.log)
    assert stays_false(lambda: pid in server.children(), 0.5)


def test_a_short_request_is_never_killed_by_timeout(start_server):
    server = start_server("--maxchildren", "1", "--timeout", "1")
    pid = server.get("/pid").body
    for _ in range(2):  # 1.2 s busy in all, but never 1 s on one request
        assert server.get("/sleep?seconds=0.6").status == 200
        time.sleep(0.6)  # idle time between requests does not count
    assert server.get("/pid").body == pid
    assert "killing it" not in server.log


def test_maxrequests_jitter_spreads_child_restarts(start_server):
    server = start_server("--maxchildren", "1", "--maxrequests", "2",
                          "--maxrequests-jitter", "3")
    pids = [int(server.get("/pid").body) for _ in range(45)]
    runs = []
    for pid in pids:
        if runs and runs[-1][0] == pid:
            runs[-1][1] += 1
        else:
            runs.append([pid, 1])
    whole_runs = [count for _, count in runs[1:-1]]  # the first and last are cut short
    assert all(2 <= count <= 5 for count in whole_runs), whole_runs
    assert len(set(whole_runs)) > 1, whole_runs


def test_a_child_killed_mid_request_fails_only_that_request(start_server):
    server = start_server("--minspare", "2", "--maxspare", "3", "--maxchildren", "3")
    victim = in_thread(server.get, "/sleep?seconds=5")
    pid = sleeping_child(server, "5")
    others = [in_thread(server.get, "/sleep?seconds=0.5") for _ in range(2)]

    os.kill(pid, signal.SIGKILL)

    victim["thread"].join(10)
    assert "error" in victim
    for other in others:
        other["thread"].join(10)
        assert other["value"].status == 200
    wait_until(lambda: f"child {pid} killed by SIGKILL while serving "
                    "GET /sleep?seconds=5" in server.log, 10, "the killed child to be named")
    assert [server.get("/pid").status for _ in range(5)] == [200] * 5


# -- children: frozen objects from the master, kept-open connections ----------------------

FREEZE_PROBE = '''
import gc, os

def record_frozen(server):
    with open(os.environ["PERF_PROBE_OUT"], "a") as out:
        out.write(f"{gc.get_freeze_count()}\\n")
'''


def test_children_start_with_the_parents_objects_frozen(start_server, tmp_path):
    (tmp_path / "perf_probe.py").write_text(FREEZE_PROBE)
    out = tmp_path / "frozen.txt"
    start_server("--pythonpath", str(tmp_path), "--after-fork", "perf_probe.record_frozen",
                 "--maxchildren", "1", env={"PERF_PROBE_OUT": str(out)})
    counts = [int(line) for line in out.read_text().split()]
    # Django and the project are tens of thousands of objects; unfrozen it is 0.
    assert counts and min(counts) > 10_000


def test_an_idle_kept_connection_holds_no_child_and_stays_open(start_server):
    # The only child serves another connection while a kept one is idle, and the
    # kept one is neither closed (nginx may be writing a POST on it) nor starved.
    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "1")
    with client.Connection(server.socket, timeout=10) as kept:
        assert kept.request("/hello", keep_conn=True).status == 200
        assert client.request(server.socket, "/hello", timeout=10).status == 200
        for _ in range(3):
            assert kept.request("/hello", keep_conn=True).status == 200
            assert client.request(server.socket, "/hello", timeout=10).status == 200
        assert not kept.closed_by_server

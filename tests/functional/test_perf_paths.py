"""Behaviour behind the fast paths: frozen objects before fork, kept-open connections,
the threaded pool, and the master knowing what a child serves without a message each."""

import os
import threading

from safefcgi import client

from .conftest import wait_for

PROBE = '''
import gc, os

def record_frozen(server):
    with open(os.environ["PERF_PROBE_OUT"], "a") as out:
        out.write(f"{gc.get_freeze_count()}\\n")
'''


def test_children_start_with_the_parents_objects_frozen(start_server, tmp_path):
    (tmp_path / "perf_probe.py").write_text(PROBE)
    out = tmp_path / "frozen.txt"
    start_server("--pythonpath", str(tmp_path), "--after-fork", "perf_probe.record_frozen",
                 "--maxchildren", "1", env={"PERF_PROBE_OUT": str(out)})
    counts = [int(line) for line in out.read_text().split()]
    # Django and the project are tens of thousands of objects; unfrozen it is 0.
    assert counts and min(counts) > 10_000


def test_a_kept_connection_in_use_is_not_closed_for_others(start_server):
    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "1")
    with client.Connection(server.socket, timeout=10) as kept:
        for _ in range(5):
            assert kept.request("/hello", keep_conn=True).status == 200
        assert not kept.closed_by_server


def test_the_master_names_a_request_that_outlives_timeout(start_server):
    server = start_server("--timeout", "1", "--minspare", "1", "--maxspare", "1",
                          "--maxchildren", "1")
    child = next(iter(server.children()))
    try:
        client.request(server.socket, "/sleep?seconds=30", timeout=10)
    except (OSError, ConnectionError):
        pass  # the child was killed mid-request: no END_REQUEST
    assert wait_for(lambda: "GET /sleep?seconds=30" in server.log, 10), server.log
    assert wait_for(lambda: child not in server.children(), 10)
    assert os.path.exists(server.socket)


def test_threaded_queues_a_connection_while_every_thread_is_busy(start_server):
    server = start_server("--method", "threaded", "--minspare", "1", "--maxspare", "1",
                          "--maxthreads", "1")
    errors, answers = [], []

    def slow() -> None:
        try:
            answers.append(client.request(server.socket, "/sleep?seconds=1", timeout=10).status)
        except (OSError, ConnectionError) as exc:
            errors.append(exc)

    worker = threading.Thread(target=slow)
    worker.start()
    wait_for(lambda: "sleeps 1" in server.log, 5)
    # flup6 closed this connection at once (all threads busy): nginx turned that into 502.
    second = client.request(server.socket, "/hello", timeout=10)
    worker.join(15)
    assert second.status == 200
    assert answers == [200] and not errors

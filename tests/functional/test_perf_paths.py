"""Behaviour behind the fast paths: frozen objects before fork, kept-open connections."""

import threading
import time

from safefcgi.fastcgi import client

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
    # Closing a kept connection when another one waits made nginx fail a POST it was
    # writing on it: the waiting connection is served once the kept one ends.
    server = start_server("--minspare", "1", "--maxspare", "1", "--maxchildren", "1")
    waiting: list = []
    with client.Connection(server.socket, timeout=10) as kept:
        assert kept.request("/hello", keep_conn=True).status == 200
        other = threading.Thread(target=lambda: waiting.append(
            client.request(server.socket, "/hello", timeout=10).status))
        other.start()
        time.sleep(0.5)  # the other connection waits in the listen queue
        for _ in range(3):
            assert kept.request("/hello", keep_conn=True).status == 200
        assert not kept.closed_by_server
        assert not waiting, "the only child served another connection meanwhile"
    other.join(10)
    assert waiting == [200]

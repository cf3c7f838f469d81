"""Behaviour behind the fast paths: frozen objects before fork, kept-open connections."""


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

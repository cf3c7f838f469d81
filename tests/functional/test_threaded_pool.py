"""Threaded mode's pool: threads that accept their own connections, grow and shrink
within --minspare/--maxspare/--maxthreads, and serve the listen queue on stop;
and both methods' workers where epoll has no EPOLLEXCLUSIVE."""

import concurrent.futures
import os
import re
import signal
import threading

import pytest

from safefcgi.fastcgi import client
from tests.support.waiting import wait_until


def worker_threads(pid: int) -> int:
    """Threads of the server process besides its main thread (which only waits for signals)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) - 1
    except FileNotFoundError:
        return -1


def sleepers(server, seconds: str) -> int:
    """How many requests have entered /sleep?seconds=... so far.

    Threads print at the same time: one line's newline may follow another's text.
    """
    return len(re.findall(rf"sleeps {re.escape(seconds)}(?![\d.])", server.log))


def test_pool_grows_to_maxthreads_under_load_and_shrinks_to_maxspare(start_server):
    server = start_server("--method", "threaded", "--minspare", "1", "--maxspare", "2",
                          "--maxthreads", "4")
    pid = server.process.pid
    # The start-up request took the only thread, which started one spare: two now.
    wait_until(lambda: worker_threads(pid) == 2, 5, "two worker threads",
               detail=lambda: worker_threads(pid))
    most = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            most.append(worker_threads(pid))
            watching.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = [pool.submit(server.get, "/sleep?seconds=1.5", timeout=20)
                       for _ in range(6)]
            # Four threads at most, all busy: the other two connections wait their turn.
            wait_until(lambda: sleepers(server, "1.5") == 4, 5,
                       "four requests sleeping 1.5 s", detail=lambda: server.log)
            assert worker_threads(pid) == 4
            statuses = [future.result().status for future in results]
    finally:
        watching.set()
        watcher.join()
    assert statuses == [200] * 6
    assert max(most) == 4
    # Idle again: the threads beyond --maxspare leave.
    wait_until(lambda: worker_threads(pid) == 2, 5, "two worker threads",
               detail=lambda: worker_threads(pid))
    assert server.get("/hello").status == 200


def test_minspare_threads_are_started_ahead_of_need(start_server):
    server = start_server("--method", "threaded", "--minspare", "3", "--maxspare", "5",
                          "--maxthreads", "8")
    pid = server.process.pid
    wait_until(lambda: worker_threads(pid) >= 3, 5, "at least three worker threads")
    # Two requests in flight leave fewer than three idle: the pool adds threads.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = [pool.submit(server.get, "/sleep?seconds=1", timeout=20) for _ in range(2)]
        wait_until(lambda: sleepers(server, "1") == 2, 5, "two requests sleeping 1 s",
                   detail=lambda: server.log)
        wait_until(lambda: worker_threads(pid) == 5, 5, "five worker threads",
                   detail=lambda: worker_threads(pid))
        assert [future.result().status for future in results] == [200, 200]
    assert worker_threads(pid) == 5  # five idle: within --maxspare, they stay


def test_minspare_zero_still_grows_to_maxthreads(start_server):
    # Only an idle thread accepts: with none kept, requests would run one at a time.
    server = start_server("--method", "threaded", "--minspare", "0", "--maxspare", "1",
                          "--maxthreads", "3")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = [pool.submit(server.get, "/sleep?seconds=3", timeout=20) for _ in range(3)]
        wait_until(lambda: sleepers(server, "3") == 3, 2.5, "three requests sleeping 3 s",
                   detail=lambda: server.log)
        assert [future.result().status for future in results] == [200] * 3
    wait_until(lambda: worker_threads(server.process.pid) == 1, 5,
               "the extra worker threads to end")


def test_a_kept_open_connection_is_let_go_between_requests_on_stop(start_server):
    server = start_server("--method", "threaded", "--maxthreads", "2",
                          "--graceful-timeout", "20")
    with client.Connection(server.socket, timeout=10) as kept:
        assert kept.request("/hello", keep_conn=True).status == 200
        server.process.send_signal(signal.SIGTERM)
        assert kept.wait_closed()
    assert server.wait_for_exit(5) == 0
    assert "still running" not in server.log


NO_EPOLLEXCLUSIVE = "import select\ndel select.EPOLLEXCLUSIVE\n"


def epoll_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]"
        except FileNotFoundError:
            pass
    return count


@pytest.mark.parametrize("method_args", [
    ("--method", "prefork", "--minspare", "2", "--maxspare", "2", "--maxchildren", "2"),
    ("--method", "threaded", "--minspare", "2", "--maxspare", "2", "--maxthreads", "2"),
], ids=["prefork", "threaded"])
def test_workers_without_epollexclusive_fall_back_to_poll(start_server, tmp_path, method_args):
    # An older kernel, or a platform without epoll: sitecustomize takes the flag away.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_EPOLLEXCLUSIVE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    server = start_server(*method_args, env={"PYTHONPATH": path})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: server.get("/sleep?seconds=0.3").status, range(8)))
    assert statuses == [200] * 8
    workers = server.children() or {server.process.pid}
    assert all(epoll_fds(pid) == 0 for pid in workers)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_exit(5) == 0


def test_threaded_mode_queues_connections_beyond_its_threads(start_server):
    # flup's threaded loop closed connections it had no free thread for.
    import concurrent.futures

    server = start_server("--method", "threaded", "--maxthreads", "2")
    assert int(server.get("/pid").body) == server.process.pid  # one process serves
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: server.get("/sleep?seconds=0.3").status, range(16)))
    assert statuses == [200] * 16

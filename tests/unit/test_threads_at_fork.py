"""Naming the threads alive beside the main one (no fork needed to tell)."""

import threading

from safefcgi.forksafety.threads import alive_threads, thread_target


class Poller(threading.Thread):
    def run(self):
        self.stop.wait()


def wait_on(event):
    event.wait()


def test_each_thread_is_named_with_its_target_or_its_run_method():
    stop = threading.Event()
    plain = threading.Thread(target=wait_on, args=(stop,), name="plain-one")
    subclassed = Poller(name="poller")
    subclassed.stop = stop
    for thread in (plain, subclassed):
        thread.start()
    try:
        found = {t.name: t.target for t in alive_threads()}
    finally:
        stop.set()
        plain.join()
        subclassed.join()

    assert found["plain-one"] == f"{__name__}.wait_on"
    assert found["poller"] == f"{__name__}.Poller.run"
    assert threading.current_thread().name not in found


def test_a_plain_thread_without_target_is_unknown():
    assert thread_target(threading.Thread()) == "unknown"

"""Hooks that record their calls to the file named by FIXTURESITE_HOOK_LOG."""

import os
import time


def _record(name):
    with open(os.environ["FIXTURESITE_HOOK_LOG"], "a") as log:
        log.write(f"{name} {os.getpid()}\n")


def before_a(server):
    _record("before_a")


def before_b(server):
    _record("before_b")


def after_a(server):
    _record("after_a")


def after_b(server):
    _record("after_b")


def after_fails(server):
    _record("after_fails")
    raise RuntimeError("cache server unreachable")


def after_fails_twice(server):
    """Fails in the first two children, then lets children start."""
    _record("after_fails_twice")
    with open(os.environ["FIXTURESITE_HOOK_LOG"]) as log:
        if sum(1 for line in log if line.startswith("after_fails_twice")) <= 2:
            raise RuntimeError("not yet")


def before_fails(server):
    raise ValueError("refusing to fork")


def after_slow(server):
    """A child start-up that takes a while (FIXTURESITE_HOOK_SLEEP seconds, default 2)."""
    _record("after_slow")
    time.sleep(float(os.environ.get("FIXTURESITE_HOOK_SLEEP", "2")))


def after_out_of_fds(server):
    """Leave the child no free file descriptor, so that every accept() fails (EMFILE)."""
    import resource

    _record("after_out_of_fds")
    lowest_free = os.dup(0)  # a new descriptor always takes the lowest free number
    os.close(lowest_free)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # One descriptor left: the child's epoll set takes it, then accept() has none.
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))


def child_exit(server, pid, status):
    _record(f"child_exit {pid} {status} in")


def when_ready(server):
    accepting = any(child.ready for child in server.children.values())
    _record(f"when_ready accepting={accepting} in")


def on_reload(server):
    _record("on_reload")


def master_hook_fails(server, *args):
    _record("master_hook_fails")
    raise RuntimeError("metrics directory is gone")


def master_hook_exits(server, *args):
    _record("master_hook_exits")
    raise SystemExit(3)


def after_garbles_channel(server):
    """Send the master what a buggy child could: bytes that are not a message."""
    _record("after_garbles_channel")
    for garbage in (b"\xff\xfe not json", b"[1, 2]", b'{"kind": 5}', b'{"no": "kind"}',
                    b'{"kind": "idle", "full": tr'):
        server.worker.channel.send(garbage)


def after_injected_fault(server):
    """Take the fault waiting in FIXTURESITE_FAULT_FILE, if any (one child takes it).

    ``exit``: leave during this hook, as a hook calling os._exit would.
    ``out_of_fds``: serve on without a free file descriptor (every accept fails).
    """
    path = os.environ["FIXTURESITE_FAULT_FILE"]
    taken = f"{path}.{os.getpid()}"
    try:
        os.rename(path, taken)  # atomic: one child wins the fault
    except FileNotFoundError:
        return
    with open(taken) as fault:
        kind = fault.read().strip()
    os.unlink(taken)
    _record(f"fault {kind}")
    if kind == "exit":
        os._exit(5)
    if kind == "out_of_fds":
        after_out_of_fds(server)

"""A child that leaves never strands a connection it was woken for.

Idle children wait on the listener with EPOLLEXCLUSIVE: the kernel wakes one of
them per new connection, and no other. A child woken at the moment the master
retires it (or closes its channel) must take what is queued before it goes;
otherwise the connection sits in the listen queue, every sibling asleep, until
another one arrives. Under load that showed as a request made during SIGHUP that
never got an answer.

These run one ChildWorker in the test process, on real sockets, without forking.
"""

from __future__ import annotations

import os
import select
import socket

import pytest

from safefcgi.config import protocol_limits
from safefcgi.fastcgi import client
from safefcgi.fastcgi.protocol import FastCGIApplication
from safefcgi.process import channel as ch
from safefcgi.process.child import ChildWorker
from tests.support.threads import in_thread


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "fcgi.sock"))
    sock.listen(16)
    yield sock
    sock.close()


def worker_for(listener: socket.socket) -> tuple[ChildWorker, socket.socket]:
    """A child worker with its channel; the master's end is returned to the test."""
    master_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    app = FastCGIApplication(hello, debug=False, multithreaded=False, max_connections=1,
                             limits=protocol_limits(read_timeout=5))
    worker = ChildWorker(listener, app, child_end)
    wake_read, wake_write = os.pipe()  # stands in for the signal wake-up pipe
    worker._wake_fd = wake_read
    return worker, master_end


def queued_request(listener: socket.socket) -> dict:
    """A request in the listen queue, nobody accepting it yet (its answer lands in the dict)."""
    outcome = in_thread(lambda: client.request(listener.getsockname(), "/", timeout=5))
    readable, _, _ = select.select([listener], [], [], 5)
    assert readable, "the request never reached the listen queue"
    return outcome


def test_a_retired_child_serves_the_connection_already_queued(listener):
    """The retire message and the connection wake the child together; it serves both."""
    worker, master_end = worker_for(listener)
    outcome = queued_request(listener)
    assert ch.send(master_end, ch.RETIRE)

    worker.serve()

    outcome["thread"].join(10)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["value"].status == 200 and outcome["value"].body == b"hello"

"""The master's status socket, driven through a real selector on socket pairs (no fork)."""

import json
import selectors
import socket
import struct

from safefcgi.fastcgi import client
from safefcgi.fastcgi.records import RecordReader, RecordType
from safefcgi.ops.statuslisten import StatusListener


def page(full: bool) -> dict:
    return {"pool": "mysite.settings", "full": full}


def request_bytes(path: str, request_id: int = 1, keep_conn: bool = False) -> bytes:
    params = client.cgi_params(path)
    return (client.record(RecordType.BEGIN_REQUEST, request_id,
                          struct.pack("!HB5x", 1, 1 if keep_conn else 0))
            + client.stream(RecordType.PARAMS, request_id, client.encode_pairs(params))
            + client.stream(RecordType.STDIN, request_id, b""))


class Rig:
    """A StatusListener with one connection made of a socketpair, and a selector to turn."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listening.bind("")  # an autobound abstract address
        self.listening.listen()
        self.status = StatusListener(self.listening, page)
        self.status.register(self.selector)
        self.peer, ours = socket.socketpair()
        self.status._add(ours)
        self.peer.settimeout(2)

    def turn(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            for key, events in self.selector.select(0.05):
                key.data.on_ready(events)

    def records(self) -> list:
        reader = RecordReader()
        self.peer.setblocking(False)
        try:
            reader.feed(self.peer.recv(1 << 20))
        except BlockingIOError:
            return []
        finally:
            self.peer.settimeout(2)
        return list(reader.records())

    def close(self):
        self.status.close()
        self.selector.close()
        self.peer.close()


def test_half_a_request_waits_without_blocking_then_is_answered_and_closed():
    rig = Rig()
    whole = request_bytes("/anything?json&full")
    rig.peer.sendall(whole[:11])
    rig.turn()
    assert rig.records() == []  # nothing yet, and turn() returned: nothing blocked

    rig.peer.sendall(whole[11:])
    rig.turn()

    response = client.parse_response(rig.records())
    assert response.status == 200 and response.headers["x-safefcgi"] == "status"
    assert json.loads(response.body) == {"pool": "mysite.settings", "full": True}
    assert rig.status.connections == []  # no FCGI_KEEP_CONN: closed after the answer
    rig.close()


def test_a_kept_connection_serves_several_requests():
    rig = Rig()
    for request_id in (1, 2):
        rig.peer.sendall(request_bytes("/s?json", request_id, keep_conn=True))
        rig.turn()
        response = client.parse_response(rig.records())
        assert json.loads(response.body) == {"pool": "mysite.settings", "full": False}
    assert len(rig.status.connections) == 1
    rig.close()


def test_garbage_closes_the_connection_and_nothing_else():
    rig = Rig()
    rig.peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
    rig.turn()
    assert rig.status.connections == []
    rig.close()


def test_a_kept_connection_is_not_cut_off_by_the_per_request_size_limit():
    rig = Rig()
    answered = 0
    for request_id in range(1, 400):  # ~180 bytes a request: far past 64 KiB in all
        rig.peer.sendall(request_bytes("/s?json", request_id, keep_conn=True))
        rig.turn(1)
        answered += client.parse_response(rig.records()).status == 200
    assert answered == 399 and len(rig.status.connections) == 1
    rig.close()

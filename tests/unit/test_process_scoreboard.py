"""The scoreboard a child writes and the master reads (no fork needed: one mapping)."""

import struct

from safefcgi.ops.status import child_state
from safefcgi.process.master import Child
from safefcgi.process.scoreboard import CONNECTED, IDLE, SERVING, TARGET_LIMIT, Scoreboard


def test_a_new_board_reads_idle_with_nothing_served():
    board = Scoreboard()
    state = board.read()
    assert (state.state, state.served, state.request) == (IDLE, 0, None)


def test_a_request_in_progress_is_named_with_its_start_time():
    board = Scoreboard()
    board.connected()
    board.request_started("POST", "/notes?x=1")
    state = board.read()
    assert state.state == SERVING
    assert state.request == ("POST", "/notes?x=1")
    assert state.request_since > 0


def test_finishing_counts_the_request_and_forgets_its_name():
    board = Scoreboard()
    for _ in range(3):
        board.request_started("GET", "/")
        board.request_finished()
    state = board.read()
    assert (state.state, state.served, state.request) == (CONNECTED, 3, None)
    board.idle()
    assert board.read().state == IDLE
    assert board.read().served == 3


def test_a_latin1_uri_comes_back_unchanged():
    board = Scoreboard()
    board.request_started("GET", "/caf\xe9")  # environ strings are latin-1 decoded bytes
    assert board.read().request == ("GET", "/caf\xe9")


def test_a_long_uri_is_cut_not_refused():
    board = Scoreboard()
    board.request_started("GET", "/" + "a" * 5000)
    method, uri = board.read().request
    assert method == "GET"
    assert len(method) + 1 + len(uri) == TARGET_LIMIT


def test_a_board_caught_mid_write_reads_as_unknown():
    board = Scoreboard()
    board.request_started("GET", "/")
    struct.pack_into("=Q", board._map, 0, 7)  # odd sequence number: a write in progress
    assert board.read() is None


def test_a_child_leaving_after_its_last_request_is_never_shown_idle():
    """--maxrequests: the board goes from the last request straight to leaving.

    Shown idle, a child already on its way out was counted as a spare by the pool and
    offered to the operator as idle on the status page.
    """
    board = Scoreboard()
    child = Child(pid=1234, channel=None, board=board, ready=True)
    board.request_started("GET", "/")
    board.request_finished()
    board.leaving()

    child.read_board()

    assert (child.idle, child.leaving, child.served) == (False, True, 1)
    child.channel = object()  # still connected: only the board says it leaves
    assert child_state(child) == "exiting"

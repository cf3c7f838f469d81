"""The status page's round trip between a child and the master, on a real socket pair."""

from __future__ import annotations

import socket

from safefcgi.process import channel as ch
from safefcgi.process import statusquery
from tests.support.threads import in_thread


def test_a_late_answer_to_an_earlier_question_is_not_taken_for_the_next_one():
    """A busy master may answer after the child gave up; that answer is dropped."""
    child_end, master_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def busy_master():
        question = ch.receive(master_end)
        earlier = ch.Message(ch.STATUS, {"question": question.get("question") - 1}, ())
        statusquery.answer(master_end, earlier, {"answer": "stale"})
        statusquery.answer(master_end, question, {"answer": "fresh"})

    master = in_thread(busy_master)
    numbers = statusquery.ask(child_end, full=False, timeout=5, on_other=lambda m: None)
    master["thread"].join(5)

    assert "error" not in master, master.get("error")
    assert numbers == {"answer": "fresh"}


def test_an_answer_that_never_comes_is_none_after_the_timeout():
    child_end, master_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    assert statusquery.ask(child_end, full=True, timeout=0.2, on_other=lambda m: None) is None
    assert ch.receive(master_end).get("full") is True

"""--max-child-rss and --max-child-rss-kill, with a view that allocates memory."""

import json
import re
import time

import pytest

from safefcgi.fastcgi.records import ProtocolError
from safefcgi.ops.status import rss_bytes
from tests.support.waiting import wait_until

STATUS = "/fcgi-status"
MB = 1024 * 1024


def restarts(server) -> dict:
    return json.loads(server.get(f"{STATUS}?json").body)["restarts"]


def only_child(server) -> int:
    children = wait_until(lambda: len(server.children()) == 1 and server.children(), 10,
                          "one child", detail=lambda: server.log)
    return next(iter(children))


def start_with_headroom(start_server, option: str, headroom_mb: int):
    """A one-child server whose limit is its child's current size plus ``headroom_mb``."""
    probe = start_server("--maxchildren", "1", "--minspare", "1")
    size = rss_bytes(only_child(probe)) // MB
    probe.stop()
    return start_server("--maxchildren", "1", "--minspare", "1", "--status-path", STATUS,
                        option, str(size + headroom_mb)), size + headroom_mb


def test_a_growing_child_is_replaced_and_no_request_fails(start_server):
    server, limit = start_with_headroom(start_server, "--max-child-rss", 60)
    first = only_child(server)

    answers = []
    for _ in range(30):  # 20 MB a request: over the limit by the 4th
        response = server.get("/grow?mb=20")
        answers.append(response)
        if not response.body.startswith(f"{first} ".encode()):
            break
        time.sleep(0.3)  # the master reads children's sizes twice a second

    assert all(r.status == 200 for r in answers), answers
    assert not answers[-1].body.startswith(f"{first} ".encode()), "never replaced"
    assert len(answers) >= 3  # it grew past the limit first
    line = re.search(rf"child {first} uses (\d+) MB, over --max-child-rss {limit} MB: "
                     "replaced once it is done", server.log)
    assert line and int(line.group(1)) > limit, server.log
    assert server.log.count("over --max-child-rss ") == 1
    wait_until(lambda: restarts(server)["memory"] == 1, 10, "the replacement counted",
               detail=lambda: restarts(server))
    assert restarts(server)["crash"] == 0


def test_a_child_over_the_hard_limit_is_killed_at_once(start_server):
    server, limit = start_with_headroom(start_server, "--max-child-rss-kill", 60)
    first = only_child(server)
    started = time.monotonic()

    with pytest.raises((ConnectionError, ProtocolError, OSError)):
        server.get("/grow?mb=150&hold=20", timeout=30)

    assert time.monotonic() - started < 15  # killed, not left to finish its 20 s
    line = re.search(rf"child {first} uses (\d+) MB, over --max-child-rss-kill {limit} MB: "
                     r"killed while serving GET /grow\?mb=150&hold=20", server.log)
    assert line and int(line.group(1)) > limit, server.log
    assert "killed by SIGKILL" not in server.log  # one line per replacement
    counted = wait_until(lambda: (r := restarts(server))["memory_kill"] == 1 and r, 10,
                         "the kill counted", detail=lambda: restarts(server))
    assert counted["crash"] == 0
    assert server.get("/hello").status == 200


def test_over_both_limits_the_hard_one_wins(start_server):
    probe = start_server("--maxchildren", "1", "--minspare", "1")
    size = rss_bytes(only_child(probe)) // MB
    probe.stop()
    server = start_server("--maxchildren", "1", "--minspare", "1", "--status-path", STATUS,
                          "--max-child-rss", str(size + 30),
                          "--max-child-rss-kill", str(size + 100))

    with pytest.raises((ConnectionError, ProtocolError, OSError)):
        server.get("/grow?mb=200&hold=20", timeout=30)

    counted = wait_until(lambda: (r := restarts(server))["memory_kill"] == 1 and r, 10,
                         "the kill counted", detail=lambda: restarts(server))
    assert counted["memory"] == 0

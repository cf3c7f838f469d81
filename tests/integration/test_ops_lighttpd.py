"""Status and ping behind lighttpd: counts that add up under load, and hiding the page.

The fixture project of the functional tests (no database) runs behind the
shipped lighttpd configuration.
"""

import json
import subprocess
import time

import pytest

from tests.support import webservers
from tests.support.lighttpd_conf import render_lighttpd_conf
from tests.support.load import BackgroundLoad
from tests.support.paths import VENV_BIN
from tests.support.servers import fixturesite_argv
from tests.support.waiting import wait_until
from tests.support.webservers import http_get

pytestmark = pytest.mark.integration

STATUS = "/fcgi-status"
BUDGET = 25  # --maxrequests: children restart many times during the load
CHILDREN = 3
LOAD_SECONDS = 20.0


def status_page(site) -> dict:
    status, body = http_get(site.url, f"{STATUS}?json&full")
    assert status == 200, body
    return json.loads(body)


def drive_load(url: str, clients: int, count: int) -> tuple[int, list[str]]:
    """``clients`` threads, ``count`` requests each, bounded in time: (successes, failures)."""
    with BackgroundLoad(url, "/hello", clients, count, LOAD_SECONDS) as load:
        load.finish()
    return load.served(), load.failures


def test_status_counts_add_up_under_load_with_children_restarting(serve):
    site = serve({}, fixturesite_argv, "--status-path", STATUS, "--maxchildren", CHILDREN,
                 "--minspare", CHILDREN, "--maxspare", CHILDREN, "--maxrequests", BUDGET)
    before = status_page(site)["accepted_requests"]

    successes, failures = drive_load(site.url, clients=6, count=60)

    assert not failures, failures[:5]

    def settled() -> dict | None:
        # A child reports the end of a request just after the client has the answer.
        page = status_page(site)
        finished = BUDGET * page["restarts"]["maxrequests"] + sum(
            row["served"] for row in page["children"])
        return page if finished == page["accepted_requests"] else None

    wait_until(lambda: settled() is not None, 10, "every request to be reported done")
    page = settled()
    assert page["accepted_requests"] - before == successes
    assert page["restarts"]["maxrequests"] >= successes // BUDGET - CHILDREN
    assert page["restarts"]["crash"] == page["restarts"]["timeout"] == 0
    assert 1 <= page["max_active_children"] <= CHILDREN
    states = ("idle_children", "active_children", "starting_children", "exiting_children")
    assert sum(page[name] for name in states) == page["total_children"]
    assert page["listen_queue"] == 0 and page["listen_queue_len"] > 0


def test_shipped_config_hides_the_status_page_but_not_ping(serve, tmp_path, monkeypatch):
    # The shipped block, with the one allowed address set to one we are not.
    conf = tmp_path / "lighttpd.conf"
    conf.write_text(render_lighttpd_conf(webservers.LIGHTTPD_CONF.read_text(),
                                         {"status_allowed_ip": "192.0.2.1"}))
    monkeypatch.setattr(webservers, "LIGHTTPD_CONF", conf)
    site = serve({}, fixturesite_argv, "--status-path", STATUS, "--ping-path", "/ping")

    assert http_get(site.url, STATUS)[0] == 403
    assert http_get(site.url, "/ping") == (200, b"pong")
    through_socket = subprocess.run(
        [VENV_BIN / "safefcgi", "status", "--socket", site.socket_path],
        capture_output=True, text=True, timeout=30)
    assert through_socket.returncode == 0, through_socket.stderr
    assert "accepted requests:" in through_socket.stdout


def test_shipped_config_shows_the_status_page_to_this_machine(serve):
    site = serve({}, fixturesite_argv, "--status-path", STATUS)
    status, body = http_get(site.url, STATUS)
    assert status == 200 and b"accepted requests:" in body


def test_accepted_requests_add_up_while_the_pool_grows_and_shrinks(serve):
    # Idle children above --maxspare are retired while the load comes and goes;
    # a child retired just as it accepted a connection still has it counted.
    site = serve({}, fixturesite_argv, "--status-path", STATUS, "--maxchildren", 4,
                 "--minspare", 1, "--maxspare", 1)
    before = status_page(site)["accepted_requests"]
    total = 0
    for clients in (4, 1, 4, 1):
        successes, failures = drive_load(site.url, clients=clients, count=40)
        assert not failures, failures[:5]
        total += successes
        time.sleep(1.2)  # a master tick: surplus idle children are retired

    page = status_page(site)
    assert page["accepted_requests"] - before == total
    assert page["restarts"]["crash"] == 0

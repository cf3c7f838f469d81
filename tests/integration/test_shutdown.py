"""Stopping the server with a signal while nothing is happening.

flup's master waits in select() without a timeout; since PEP 475 Python
restarts that call after a signal handler ran, so an idle flup master only
notices SIGTERM when the next request arrives.
"""

import signal
import time

import pytest

from tests.support.servers import safefcgi_argv, stock_flup_argv
from tests.support.waiting import wait_until
from tests.support.webservers import http_get

pytestmark = pytest.mark.integration

CHILDREN = 2
PROMPT = 3.0  # seconds an operator may reasonably wait for a stop


def warm_up_and_idle(site) -> None:
    """Let every child serve something, then leave the server alone."""
    for _ in range(2 * CHILDREN):
        status, _ = http_get(site.url, "/hello")
        assert status == 200
    time.sleep(0.5)


def test_stock_flup_idle_master_ignores_sigterm(serve, direct_env):
    site = serve(direct_env, stock_flup_argv, CHILDREN)
    warm_up_and_idle(site)

    site.server.send_signal(signal.SIGTERM)

    assert not site.server.wait(PROMPT), "flup's idle master exited on SIGTERM after all"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_safefcgi_exits_promptly_on_signal_while_all_children_idle(serve, direct_env, signum):
    site = serve(direct_env, safefcgi_argv, "prefork", "--maxchildren", CHILDREN)
    warm_up_and_idle(site)

    started = time.monotonic()
    site.server.send_signal(signum)

    assert site.server.wait(PROMPT), site.diagnostics()
    wait_until(lambda: not site.server.group_is_alive(), PROMPT - (time.monotonic() - started),
               "the children to exit")
    assert not site.socket_path.exists()

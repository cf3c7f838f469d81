"""Fixtures of the functional tests: real safefcgi processes on the fixture project."""

import pytest

from tests.support.servers import RunningServer


@pytest.fixture
def start_server(tmp_path):
    """Start safefcgi with extra arguments; everything started is stopped afterwards."""
    servers = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True):
        server = RunningServer(tmp_path, list(args), env or {})
        servers.append(server)
        if wait:
            server.wait_until_serving()
        return server

    yield start
    for server in servers:
        server.stop()

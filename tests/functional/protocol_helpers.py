"""Helpers for the protocol tests: a shared server per module, raw record exchanges."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from safefcgi.fastcgi import client
from safefcgi.fastcgi.records import Record, RecordReader

from .conftest import PROJECT, RunningServer

# PROTOCOL_TESTS_SERVER=flup runs the same tests against stock flup6, to show
# which of them pin a flup bug. Options safefcgi has and flup lacks are ignored.
AGAINST_FLUP = os.environ.get("PROTOCOL_TESTS_SERVER") == "flup"


class StockFlupServer(RunningServer):
    """Stock flup6 prefork (one child) on the fixture project."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]):
        self.socket = str(tmp_path / "flup.sock")
        self.log_path = tmp_path / "server.log"
        self.hook_log = tmp_path / "hooks.log"
        self.hook_log.touch()
        self.argv = [sys.executable, str(PROJECT / "stock_flup_fixturesite.py"), self.socket]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "FIXTURESITE_HOOK_LOG": str(self.hook_log), **env},
                start_new_session=True)


def start(tmp_path: Path, *args: str) -> RunningServer:
    server_class = StockFlupServer if AGAINST_FLUP else RunningServer
    server = server_class(tmp_path, list(args), {})
    try:
        server.wait_until_serving()
    except AssertionError:
        server.stop()
        raise
    return server


class LogWatch:
    """The server log lines written since this watch was made."""

    def __init__(self, server: RunningServer):
        self.server = server
        self.start = len(server.log.splitlines())

    def new_lines(self) -> list[str]:
        return self.server.log.splitlines()[self.start:]


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[list[Record], bool]:
    """Every record the server sends until it closes; (records, closed within timeout)."""
    reader = RecordReader()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return list(reader.records()), False
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            continue
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return list(reader.records()), True
        reader.feed(data)


def begin(request_id: int = 1, keep_conn: bool = False, role: int = client.RESPONDER) -> bytes:
    return client.record(client.BEGIN_REQUEST, request_id,
                         bytes([0, role, 1 if keep_conn else 0]) + bytes(5))


def whole_request(path: str = "/pid", request_id: int = 1, keep_conn: bool = False,
                  body: bytes = b"", method: str = "GET") -> bytes:
    params = client.cgi_params(path, method, content_length=len(body))
    return (begin(request_id, keep_conn)
            + client.stream(client.PARAMS, request_id, client.encode_pairs(params))
            + client.stream(client.STDIN, request_id, body))


def kinds(records: list[Record]) -> list[int]:
    return [record.type for record in records]

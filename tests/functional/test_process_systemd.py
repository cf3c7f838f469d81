"""systemd: the shipped units, socket activation and sd_notify, with the real tools."""

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safefcgi.fastcgi import client
from tests.support.paths import PROJECT
from tests.support.processes import Process
from tests.support.servers import root_permission
from tests.support.waiting import wait_until

CONF = Path(__file__).resolve().parents[2] / "conf"
SHIPPED_SAFEFCGI = "/srv/mysite/venv/bin/safefcgi"


def systemd_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install the Debian package systemd"
    return path


# -- the unit files ------------------------------------------------------------------------

@pytest.fixture
def units(tmp_path):
    """The shipped units, with ExecStart pointing at this virtualenv's safefcgi."""
    service = (CONF / "safefcgi.service").read_text()
    assert SHIPPED_SAFEFCGI in service
    ours = str(Path(sys.executable).parent / "safefcgi")
    (tmp_path / "safefcgi.service").write_text(service.replace(SHIPPED_SAFEFCGI, ours))
    shutil.copy(CONF / "safefcgi.socket", tmp_path / "safefcgi.socket")
    return tmp_path


def test_shipped_units_pass_systemd_analyze_verify(units):
    result = subprocess.run([systemd_tool("systemd-analyze"), "verify",
                             str(units / "safefcgi.socket"), str(units / "safefcgi.service")],
                            capture_output=True, text=True, timeout=60)
    # verify only warns (exit status 0) about a misspelt setting: any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.fixture
def template(tmp_path):
    """The shipped template, with ExecStart pointing at this virtualenv's safefcgi."""
    unit = (CONF / "safefcgi@.service").read_text()
    assert "/srv/%i/venv/bin/safefcgi run --config /etc/safefcgi/%i.toml" in unit
    ours = str(Path(sys.executable).parent / "safefcgi")
    (tmp_path / "safefcgi@.service").write_text(unit.replace("/srv/%i/venv/bin/safefcgi", ours))
    (tmp_path / "safefcgi@mysite.service").symlink_to(tmp_path / "safefcgi@.service")
    return tmp_path


def test_shipped_template_passes_systemd_analyze_verify(template):
    for unit in ("safefcgi@.service", "safefcgi@mysite.service"):
        result = subprocess.run([systemd_tool("systemd-analyze"), "verify", str(template / unit)],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), unit


def test_template_verify_catches_a_misspelt_setting(template):
    """The check above can fail: a unit verify reads is really checked."""
    unit = template / "safefcgi@.service"
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KilMode=mixed"))
    result = subprocess.run([systemd_tool("systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert "Unknown key 'KilMode'" in result.stderr


def test_template_stop_timeout_outlasts_the_example_graceful_timeout():
    unit = (CONF / "safefcgi@.service").read_text()
    example = (CONF / "site.toml").read_text()
    graceful = float(re.search(r"^graceful-timeout = (\d+)", example, re.M).group(1))
    assert float(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1)) > graceful
    assert re.search(r"^Type=notify$", unit, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)


def test_service_stop_timeout_outlasts_the_graceful_timeout():
    service = (CONF / "safefcgi.service").read_text()
    graceful = float(re.search(r"--graceful-timeout (\d+)", service).group(1))
    stop_timeout = float(re.search(r"^TimeoutStopSec=(\d+)", service, re.M).group(1))
    assert stop_timeout > graceful
    assert re.search(r"^Type=notify$", service, re.M)
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", service, re.M)
    assert re.search(r"^KillMode=mixed$", service, re.M)


# -- socket activation ------------------------------------------------------------------

def test_socket_activation_serves_on_the_socket_systemd_passes(tmp_path):
    sock_path = tmp_path / "activated.sock"
    log_path = tmp_path / "server.log"
    argv = [systemd_tool("systemd-socket-activate"), "--listen", str(sock_path),
            sys.executable, "-m", "safefcgi", "run", "fixturesite_settings",
            "--pythonpath", str(PROJECT), "--maxchildren", "2", *root_permission([])]
    activator = Process("systemd-socket-activate", argv, log_path).start()
    try:
        wait_until(sock_path.exists, 10, "the activation socket")
        # The first connection makes systemd-socket-activate exec safefcgi (same pid).
        assert client.request(str(sock_path), "/pid", timeout=30).status == 200
        assert "using the socket passed by systemd: fd:3 (unix:" in log_path.read_text()
        assert client.request(str(sock_path), "/pid").status == 200

        activator.send_signal(signal.SIGTERM)
        assert activator.popen.wait(10) == 0
        assert sock_path.exists()  # systemd's socket, not ours to remove
    finally:
        activator.stop(signal.SIGKILL)


# -- sd_notify ---------------------------------------------------------------------------

class NotifyListener:
    """What systemd would receive on NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 15.0) -> list[str]:
        """Messages received until one contains ``line``."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            seen.append(message)
            if line in message.splitlines():
                return seen
        raise AssertionError(f"no {line} within {timeout} s; got {seen}")


def test_sd_notify_ready_reloading_and_stopping(start_server, tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    server = start_server("--maxchildren", "2", env={"NOTIFY_SOCKET": str(listener.path)},
                          wait=False)
    first = listener.wait_for("READY=1")
    assert first[-1].splitlines()[-1].startswith("STATUS=serving with")
    assert server.get("/pid").status == 200  # READY came once children accept

    server.process.send_signal(signal.SIGHUP)
    assert "RELOADING=1" in listener.wait_for("RELOADING=1")[-1]
    listener.wait_for("READY=1")

    server.process.send_signal(signal.SIGTERM)
    listener.wait_for("STOPPING=1")
    assert server.wait_for_exit(10) == 0


def test_sd_notify_ready_again_when_a_reload_fails(start_server, tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    code = tmp_path / "code"
    code.mkdir()
    (code / "fixturesite_code.py").write_text("VERSION = 'first'\n")
    server = start_server("--maxchildren", "1", "--pythonpath", str(code),
                          env={"NOTIFY_SOCKET": str(listener.path),
                               "PYTHONDONTWRITEBYTECODE": "1"})
    listener.wait_for("READY=1")
    (code / "fixturesite_code.py").write_text("VERSION = (\n")

    server.process.send_signal(signal.SIGHUP)

    listener.wait_for("RELOADING=1")
    assert "STATUS=reload failed; serving the previous code" in listener.wait_for("READY=1")[-1]
    assert server.get("/version").body == b"first"

"""The wheel python -m build makes installs into a fresh virtualenv and serves.

Nothing of the checkout is importable there: the example site is copied to a
temporary directory, and the test asks the installed package where it lives.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from safefcgi import __version__

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 300
START_TIMEOUT = 30


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the tracked files (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist),
                             str(source)], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = dist.glob("safefcgi-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q",
                             "--disable-pip-version-check", str(wheel)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv


def test_wheel_holds_the_package_its_metadata_and_licence_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()

    assert wheel.name.startswith(f"safefcgi-{__version__}-")
    assert "safefcgi/process/master.py" in names
    assert "safefcgi/management/commands/runfcgi.py" in names
    assert not [name for name in names if name.startswith(("tests/", "example/", "docs/"))]
    assert [name for name in names if name.endswith(".dist-info/licenses/LICENSE")], names


def test_installed_wheel_serves_the_example_site_outside_the_checkout(fresh_venv, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(REPO / "example", site, ignore=shutil.ignore_patterns("*.sqlite3",
                                                                         "__pycache__"))
    python = fresh_venv / "bin" / "python"
    located = subprocess.run([python, "-c", "import safefcgi; print(safefcgi.__file__, "
                              "safefcgi.__version__)"], cwd=tmp_path, capture_output=True,
                             text=True, check=True).stdout.split()
    assert Path(located[0]).is_relative_to(fresh_venv), located
    assert located[1] == __version__

    socket = tmp_path / "site.sock"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["EXAMPLE_SQLITE_PATH"] = str(tmp_path / "db.sqlite3")
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [fresh_venv / "bin" / "safefcgi", "run", "mysite.settings", "--pythonpath",
             str(site), "--socket", str(socket), "--maxchildren", "2", *as_root],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        response = request_when_up(fresh_venv, socket, server, tmp_path / "server.log")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    assert response.returncode == 0, response.stderr
    assert response.stdout == "Hello from safefcgi\n"
    assert server.returncode == 0, (tmp_path / "server.log").read_text()


def request_when_up(venv: Path, socket: Path, server: subprocess.Popen,
                    log: Path) -> subprocess.CompletedProcess:
    """``safefcgi request`` of the installed package, once the server answers."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert server.poll() is None, log.read_text()
        response = subprocess.run([venv / "bin" / "safefcgi", "request", "--socket",
                                   str(socket), "--body-only", "--fail", "/hello"],
                                  capture_output=True, text=True, timeout=30)
        if response.returncode == 0 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)

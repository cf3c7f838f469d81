"""``safefcgi run --config FILE``, ``--print-config``, ``--check-config`` and ``--version``,
each through the real command line."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from safefcgi import __version__
from safefcgi.configfile import tomllib
from safefcgi.fastcgi import client
from tests.support.paths import PROJECT
from tests.support.servers import root_permission
from tests.support.waiting import wait_until

CONF = Path(__file__).resolve().parents[2] / "conf"


def safefcgi(*args, env=None, timeout=60):
    """Run ``python -m safefcgi ARGS`` to the end, in the fixture project's directory."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DJANGO_SETTINGS_MODULE", "FCGI_WEB_SERVER_ADDRS")}
    return subprocess.run([sys.executable, "-m", "safefcgi", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=PROJECT, stdin=subprocess.DEVNULL,
                          env={**environ, **(env or {})})


def write(tmp_path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def printed(result) -> dict[str, tuple[str, str]]:
    """``--print-config`` output as {key: (value as written, source)}."""
    assert result.returncode == 0, result.stderr
    values = {}
    for line in result.stdout.splitlines():
        entry, _, source = line.rpartition("  # ")
        if entry.startswith("# "):  # an unset option: "# socket: unset"
            values[entry[2:].split(":")[0]] = ("", source)
        else:
            key, _, value = entry.partition(" = ")
            values[key] = (value, source)
    return values


# -- mistakes: one line naming file, line and key; exit status 2 -------------------------

@pytest.mark.parametrize("text, line, message", [
    ('maxchildren = 4\nmaxchildrn = 3\n', 2, "unknown option 'maxchildrn'"),
    ('socket = "/s"\n\nmaxchildren = "many"\n', 3, "bad value 'many' for option "
     "'maxchildren': expected a whole number"),
    ('max-body-bytes = "lots"\n', 1, "bad value 'lots' for option 'max-body-bytes'"),
    ('maxchildren = 2.5\n', 1, "'maxchildren': expected a whole number"),
    ('daemonize = "yes"\n', 1, "option 'daemonize': expected true or false"),
    ('umask = 18\n', 1, "option 'umask': expected a quoted octal number"),
    ('pythonpath = [1, 2]\n', 1, "option 'pythonpath': expected a string or a list"),
    ('socket = ["/a", "/b"]\n', 1, "option 'socket': expected one value, not a list"),
    ('socket = 1979-05-27\n', 1, "option 'socket': expected a string or a number"),
    ('maxspare = 2\n\n[server]\nsocket = "/a"\n', 3, "'server' is a table"),
    ('graceful_timeout = 5\ngraceful-timeout = 6\n', 2, "'graceful-timeout' is given twice"),
    ('"method" = "forking"\n', 1, "'method': expected prefork or threaded"),
    ('settings_module = 3\n', 1, "'settings_module' must be a dotted path"),
])
def test_a_mistake_in_the_file_is_one_line_with_file_line_and_key(tmp_path, text, line,
                                                                  message):
    path = write(tmp_path, text)
    result = safefcgi("run", "fixturesite_settings", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"safefcgi: error: {path}:{line}: ")
    assert message in result.stderr


@pytest.mark.parametrize("text, message", [
    ('maxchildren = \n', "not valid TOML: Invalid value (at line 1, column 15)"),
    (None, "cannot read the config file: No such file or directory"),
])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, text, message):
    path = write(tmp_path, text) if text is not None else tmp_path / "missing.toml"
    result = safefcgi("run", "--config", str(path), "--print-config")
    assert result.returncode == 2
    assert result.stderr == f"safefcgi: error: {path}: {message}\n"


def test_options_that_conflict_across_file_and_command_line_are_refused(tmp_path):
    path = write(tmp_path, 'socket = "/run/site.sock"\n')
    result = safefcgi("run", "fixturesite_settings", "--config", str(path),
                      "--host", "127.0.0.1", "--port", "9000", "--print-config")
    assert (result.returncode, result.stderr) == (
        2, "safefcgi: error: give either --socket or --host/--port, not both\n")


# -- --print-config ----------------------------------------------------------------------

def test_print_config_names_the_source_of_every_value(tmp_path):
    path = write(tmp_path, 'settings_module = "fixturesite_settings"\nmaxchildren = 8\n'
                 'socket = "/run/from-file.sock"\nmax_body_bytes = "2M"\n'
                 'after-fork = ["a.b", "c.d"]\numask = "027"\n')
    result = safefcgi("run", "--config", str(path), "--print-config", "--socket",
                      "/run/from-cli.sock", "maxrequests=9",
                      env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"})
    values = printed(result)
    source = f"file {path}"
    assert values["settings_module"] == ('"fixturesite_settings"', source)
    assert values["maxchildren"] == ("8", source)
    assert values["max-body-bytes"] == ('"2M"', source)
    assert values["after-fork"] == ('["a.b", "c.d"]', source)
    assert values["umask"] == ('"027"', source)
    assert values["socket"] == ('"/run/from-cli.sock"', "command line")  # overrides the file
    assert values["maxrequests"] == ("9", "command line")
    assert values["allowed-clients"] == ('"127.0.0.1"', "environment FCGI_WEB_SERVER_ADDRS")
    assert values["maxspare"] == ("5", "default")
    assert values["graceful-timeout"] == ("30", "default")
    assert values["pidfile"] == ("", "default")
    assert set(values) >= {"method", "log-format", "read-timeout", "debug", "host"}


def test_print_config_without_a_file_takes_the_environment_and_fits_spares(tmp_path):
    result = safefcgi("run", "--maxchildren", "3", "--print-config",
                      env={"DJANGO_SETTINGS_MODULE": "fixturesite_settings"})
    values = printed(result)
    assert values["settings_module"] == ('"fixturesite_settings"',
                                         "environment DJANGO_SETTINGS_MODULE")
    assert values["maxspare"] == ("3", "default, fitted to maxchildren")


def test_print_config_output_is_a_config_file_giving_the_same_config(tmp_path):
    first = safefcgi("run", "fixturesite_settings", "--print-config", "--socket", "/s.sock",
                     "--umask", "022", "--pythonpath", "/x", "--ping-path", "/ping",
                     "--debug", "--max-params-bytes", "65536", "--graceful-timeout", "2.5")
    again = safefcgi("run", "--config", str(write(tmp_path, first.stdout)), "--print-config")
    assert [line.rpartition("  # ")[0] for line in first.stdout.splitlines()] == \
        [line.rpartition("  # ")[0] for line in again.stdout.splitlines()]
    assert tomllib.loads(again.stdout)["max-params-bytes"] == "64K"


def test_the_shipped_example_config_is_valid():
    values = printed(safefcgi("run", "--config", str(CONF / "site.toml"), "--print-config"))
    assert values["socket"][0] == '"/run/safefcgi/mysite/fcgi.sock"'
    assert values["socket-mode"][0] == '"660"'


# -- --check-config ----------------------------------------------------------------------

def test_check_config_imports_the_project_without_serving(tmp_path):
    sock = tmp_path / "never.sock"
    path = write(tmp_path, f'settings_module = "fixturesite_settings"\nsocket = "{sock}"\n'
                 f'pidfile = "{tmp_path / "never.pid"}"\n'
                 'after-fork = ["fixturesite_hooks.after_a"]\n')
    result = safefcgi("run", "--config", str(path), "--check-config",
                      *root_permission([]), env={"FIXTURESITE_HOOK_LOG": str(tmp_path / "h")})
    assert result.returncode == 0, result.stderr
    assert "OK: nothing is open at fork time in fixturesite_settings." in result.stdout
    assert "configuration checked" in result.stderr
    assert not sock.exists() and not (tmp_path / "never.pid").exists()


@pytest.mark.parametrize("text, status, message", [
    ('settings_module = "no_such_settings"\n', 4, "no_such_settings"),
    ('settings_module = "fixturesite_settings"\nbefore-fork = ["fixturesite_hooks.nope"]\n',
     1, "fixturesite_hooks.nope"),
    ('settings_module = "fixturesite_settings"\nmaxchildren = 0\n', 2, "must be at least 1"),
])
def test_check_config_fails_where_start_up_would(tmp_path, text, status, message):
    result = safefcgi("run", "--config", str(write(tmp_path, text)), "--check-config",
                      *root_permission([]))
    assert result.returncode == status
    assert message in result.stderr and "Traceback" not in result.stderr


# -- serving from a file -------------------------------------------------------------------

def test_a_site_served_from_its_config_file_with_a_command_line_override(tmp_path):
    sock = tmp_path / "site.sock"
    path = write(tmp_path, f'settings_module = "fixturesite_settings"\nsocket = "{sock}"\n'
                 f'pythonpath = ["{PROJECT}"]\nmaxchildren = 3\nstatus-path = "/status"\n'
                 f'allow-root = {"true" if os.geteuid() == 0 else "false"}\n')
    process = subprocess.Popen([sys.executable, "-m", "safefcgi", "run", "--config", str(path),
                                "--maxchildren", "1"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_until(sock.exists, 20, f"the server to create {sock}")
        status = json.loads(client.request(str(sock), "/status?json", timeout=20).body)
        assert status["maxchildren"] == 1  # the command line won over the file
        assert client.request(str(sock), "/pid").status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def test_version():
    result = safefcgi("--version")
    assert (result.returncode, result.stdout) == (0, f"safefcgi {__version__}\n")

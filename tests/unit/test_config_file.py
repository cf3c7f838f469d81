"""Reading a TOML config file and merging it with the command line and the environment."""

import pytest

from safefcgi.configfile import _line_of, format_effective, read_config_file, resolve
from safefcgi.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "site.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, key, line", [
    ('a = 1\nsocket = "x"\n', "socket", 2),
    ('# socket = "old"\n\n  "socket" = "x"\n', "socket", 3),
    ("x = 1\n'max-body-bytes' = 3\n", "max-body-bytes", 2),
    ('x = 1\n\n[server]\nsocket = "x"\n', "server", 3),
    ('x = 1\n[[server]]\n', "server", 2),
    ('x = 1\nserver.socket = "x"\n', "server", 2),
])
def test_the_line_of_a_key_is_found_for_every_spelling(text, key, line):
    assert _line_of(text, key) == line


def test_keys_take_dashes_underscores_and_lists(tmp_path):
    options = read_config_file(write(tmp_path, (
        'settings-module = "site.settings"\nmax_body_bytes = "2M"\ngraceful-timeout = 2.5\n'
        'pythonpath = ["a", "b"]\nafter_fork = "x.y"\ndaemonize = false\nport = 9000\n')))
    assert options.settings_module == "site.settings"
    assert options.raw == {"max_body_bytes": "2M", "graceful_timeout": "2.5",
                           "pythonpath": ["a", "b"], "after_fork": ["x.y"],
                           "daemonize": "false", "port": "9000"}


def test_command_line_over_file_over_environment_over_default(tmp_path):
    path = write(tmp_path, 'settings_module = "file.settings"\nmaxchildren = 8\n'
                 'maxrequests = 10\nallowed_clients = "10.0.0.1"\nhost = "::1"\nport = 1\n')
    environ = {"DJANGO_SETTINGS_MODULE": "env.settings", "FCGI_WEB_SERVER_ADDRS": "10.9.9.9"}
    resolved = resolve({"maxrequests": "20"}, None, path, environ)
    config, sources = resolved.config, resolved.sources
    assert (config.settings_module, config.maxchildren, config.maxrequests,
            config.allowed_clients) == ("file.settings", 8, 20, ("10.0.0.1",))
    assert (sources["maxchildren"], sources["maxrequests"], sources["method"]) == (
        f"file {path}", "command line", "default")
    assert sources["allowed_clients"] == f"file {path}"  # the file beats the environment
    assert "maxchildren" in config.explicit  # spare limits are not fitted to it
    assert resolve({}, "cli.settings", path, environ).config.settings_module == "cli.settings"


def test_the_environment_fills_what_nobody_gave(tmp_path):
    environ = {"DJANGO_SETTINGS_MODULE": "env.settings", "FCGI_WEB_SERVER_ADDRS": "10.9.9.9"}
    resolved = resolve({}, None, None, environ)
    assert resolved.config.settings_module == "env.settings"
    assert resolved.sources["allowed_clients"] == "environment FCGI_WEB_SERVER_ADDRS"
    assert 'allowed-clients = "10.9.9.9"  # environment FCGI_WEB_SERVER_ADDRS' in \
        format_effective(resolved, environ)


def test_repeatable_options_on_the_command_line_replace_the_files(tmp_path):
    path = write(tmp_path, 'pythonpath = ["file-a", "file-b"]\n')
    resolved = resolve({"pythonpath": ["cli"]}, "s.settings", path, {})
    assert resolved.config.pythonpath == ("cli",)


@pytest.mark.parametrize("text, message", [
    ("runfcgi_mode = 1\n", ":1: unknown option 'runfcgi_mode'"),
    ('minspare = -1\n', ":1: bad value '-1' for option 'minspare': must be "
     "at least 0"),
    ('socket-mode = 0o660\n', ":1: option 'socket-mode': expected a quoted octal number"),
    ('debug = 1\n', ":1: option 'debug': expected true or false"),
    ('maxchildren = true\n', ":1: option 'maxchildren': expected a value, not true or false"),
    ('allowed-clients = { a = 1 }\n', ":1: 'allowed-clients' is a table"),
])
def test_a_bad_key_or_value_is_named_with_its_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert str(caught.value).startswith(path + ":") and message in str(caught.value)


def test_runfcgi_keys_are_config_keys_too(tmp_path):
    assert read_config_file(write(tmp_path, 'maxspare = "3"\n')).raw == {"maxspare": "3"}

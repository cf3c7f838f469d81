"""Option parsing: safefcgi's own spelling, runfcgi's key=value spelling, validation."""

import pytest

from safefcgi.cli import main, parse_command_line, parse_run_arguments, translate_runfcgi_words
from safefcgi.config import OPTIONS, ServerConfig
from safefcgi.errors import EXIT_USAGE, ConfigError
from safefcgi.fastcgi.protocol import Limits


def test_dashed_options_build_a_config():
    config = parse_run_arguments([
        "mysite.settings", "--method", "prefork", "--socket", "/run/site.sock",
        "--minspare", "1", "--maxspare", "3", "--maxchildren", "8", "--maxrequests", "500",
        "--umask", "007", "--pidfile", "/run/site.pid", "--debug",
    ])
    assert config == ServerConfig(
        settings_module="mysite.settings", method="prefork", socket="/run/site.sock",
        minspare=1, maxspare=3, maxchildren=8, maxrequests=500, umask=0o007,
        pidfile="/run/site.pid", debug=True,
    )


def test_runfcgi_spelling_gives_the_same_config_as_dashed_options():
    old = parse_run_arguments(["mysite.settings", "method=prefork", "socket=/run/site.sock",
                               "maxchildren=8", "daemonize=false", "umask=022"])
    new = parse_run_arguments(["mysite.settings", "--method=prefork", "--socket",
                               "/run/site.sock", "--maxchildren=8", "--no-daemonize",
                               "--umask=022"])
    assert old == new
    assert old.daemonize is False and old.maxchildren == 8 and old.umask == 0o022


@pytest.mark.parametrize("word, expected", [("method=fork", "prefork"),
                                            ("method=thread", "threaded"),
                                            ("method=threaded", "threaded")])
def test_runfcgi_method_aliases_are_accepted(word, expected):
    assert parse_run_arguments(["mysite.settings", word]).method == expected


def test_runfcgi_boolean_words_become_switches():
    assert translate_runfcgi_words(["daemonize=true", "debug=0"]) == ["--daemonize",
                                                                       "--no-debug"]


def test_host_and_port_make_a_tcp_address():
    config = parse_run_arguments(["mysite.settings", "host=127.0.0.1", "port=3033"])
    assert config.address == ("127.0.0.1", 3033)


def test_no_address_means_the_socket_passed_on_fd0():
    assert parse_run_arguments(["mysite.settings"]).address is None


def test_defaults_match_runfcgi():
    config = parse_run_arguments(["mysite.settings"])
    assert (config.method, config.minspare, config.maxspare, config.maxchildren,
            config.maxrequests, config.debug) == ("prefork", 2, 5, 50, 0, False)


def test_a_small_pool_shrinks_the_default_spare_limits():
    config = parse_run_arguments(["mysite.settings", "--maxchildren", "1"])
    assert (config.minspare, config.maxspare, config.maxchildren) == (1, 1, 1)


def test_repeatable_options_keep_their_order():
    config = parse_run_arguments(["mysite.settings", "--pythonpath", "a", "--pythonpath", "b",
                                  "--after-fork", "x.y", "--after-fork", "z.w"])
    assert config.pythonpath == ("a", "b")
    assert config.after_fork == ("x.y", "z.w")


@pytest.mark.parametrize("argv, message", [
    (["mysite.settings", "--frobnicate"], "--frobnicate"),
    (["mysite.settings", "frobnicate=1"], "unknown option 'frobnicate'"),
    (["mysite.settings", "--maxchildren", "many"], "'maxchildren'"),
    (["mysite.settings", "--maxchildren", "0"], "must be at least 1"),
    (["mysite.settings", "--port", "70000", "--host", "::1"], "at most 65535"),
    (["mysite.settings", "--umask", "9"], "octal"),
    (["mysite.settings", "method=forking"], "prefork or threaded"),
    (["mysite.settings", "protocol=scgi"], "only fcgi is served"),
    (["mysite.settings", "daemonize=perhaps"], "true or false"),
    (["mysite.settings", "--socket", "/s", "--host", "h", "--port", "1"], "not both"),
    (["mysite.settings", "--host", "h"], "give both"),
    (["mysite.settings", "--minspare", "4", "--maxspare", "3"], "minspare (4)"),
    (["mysite.settings", "--maxspare", "9", "--maxchildren", "4"], "maxspare (9)"),
    (["mysite.settings", "--method", "threaded", "--after-fork", "a.b"], "prefork"),
])
def test_bad_options_are_named_in_one_error(argv, message):
    with pytest.raises(ConfigError) as caught:
        parse_run_arguments(argv)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_settings_module_is_a_usage_error():
    with pytest.raises(ConfigError, match="SETTINGS_MODULE"):
        parse_run_arguments([])


def test_unknown_option_exits_2_with_one_line(capsys):
    assert main(["run", "mysite.settings", "--frobnicate"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("safefcgi: error:") and "--frobnicate" in err


def test_every_option_has_help_text():
    assert all(option.help for option in OPTIONS)


def test_protocol_options_and_their_defaults():
    default = parse_command_line(["run", "site.settings"])
    assert (default.max_params_bytes, default.max_body_bytes, default.read_timeout,
            default.script_name) == (1024 ** 2, 1024 ** 3, 30.0, None)
    limits = Limits()
    assert (limits.max_params_bytes, limits.max_body_bytes, limits.read_timeout) == \
        (ServerConfig.max_params_bytes, ServerConfig.max_body_bytes, ServerConfig.read_timeout)
    given = parse_command_line(["run", "site.settings", "--max-params-bytes", "64k",
                                "--max-body-bytes", "2G", "--read-timeout", "2.5",
                                "--script-name", "/app/"])
    assert (given.max_params_bytes, given.max_body_bytes, given.read_timeout,
            given.script_name) == (65536, 2 * 1024 ** 3, 2.5, "/app")
    assert parse_command_line(["run", "site.settings", "--script-name", "/"]).script_name == ""


@pytest.mark.parametrize("args, problem", [
    (["--max-body-bytes", "lots"], "max_body_bytes"),
    (["--max-params-bytes", "-1"], "max_params_bytes"),
    (["--read-timeout", "-3"], "read_timeout"),
    (["--script-name", "app"], "script_name"),
])
def test_bad_protocol_option_values_are_named(args, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_command_line(["run", "site.settings", *args])

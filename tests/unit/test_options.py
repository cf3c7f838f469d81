"""Option parsing: safefcgi's own spelling, runfcgi's key=value spelling, validation."""

import dataclasses
import re
from pathlib import Path

import pytest

from safefcgi.cli import (
    main,
    make_parser,
    parse_command_line,
    parse_run_arguments,
    translate_runfcgi_words,
)
from safefcgi.config import (
    OPTIONS,
    OPTIONS_BY_NAME,
    Option,
    ServerConfig,
    option_reference,
    protocol_limits,
)
from safefcgi.configfile import tomllib
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
    assert protocol_limits() == protocol_limits(default) == Limits(1024 ** 2, 1024 ** 3, 30.0)
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


# -- the option table is the only declaration -----------------------------------------

# runfcgi's vocabulary, as Django's manage.py runfcgi documented it (Django 1.8).
RUNFCGI_KEYS = {"protocol", "host", "port", "socket", "method", "maxrequests", "maxspare",
                "minspare", "maxchildren", "daemonize", "pidfile", "workdir", "debug",
                "outlog", "errlog", "umask"}


def test_the_runfcgi_keys_of_the_table_are_runfcgis_vocabulary():
    assert {option.runfcgi for option in OPTIONS if option.runfcgi} == RUNFCGI_KEYS


def test_every_option_is_a_config_field_with_the_tables_default():
    config = ServerConfig(settings_module="mysite.settings")
    fields = [f.name for f in dataclasses.fields(config)]
    assert fields == ["settings_module", *(o.name for o in OPTIONS), "explicit"]
    assert all(getattr(config, option.name) == option.default for option in OPTIONS)


def test_an_option_is_one_entry_even_with_a_list_default():
    option = Option("extra_hook", str, [], "a hook", repeatable=True)
    assert option.default == ()  # shared by every config: a list could be changed in place
    assert (option.runfcgi, option.modes, option.since, option.dashed) == (
        None, ("prefork", "threaded"), "0.1.0", "--extra-hook")


def test_protocol_limits_and_operability_take_the_tables_defaults():
    from safefcgi.ops.operability import Operability

    limits = protocol_limits()
    assert limits == Limits(max_params_bytes=1024 ** 2, max_body_bytes=1024 ** 3,
                            read_timeout=30.0)
    ops = Operability.from_config(parse_run_arguments(["mysite.settings"]))
    assert (ops.status_path, ops.ping_response, ops.ping_drain, ops.slowlog_timeout) == (
        None, "pong", 0.0, 0.0)
    assert protocol_limits(read_timeout=2).read_timeout == 2


@pytest.mark.parametrize("word, dashed", [
    ("maxspare=3", "--maxspare=3"), ("graceful_timeout=5", "--graceful-timeout=5"),
    ("graceful-timeout=5", "--graceful-timeout=5"), ("MaxChildren=4", "--maxchildren=4"),
    ("allow_root=yes", "--allow-root"), ("allow-root=0", "--no-allow-root"),
])
def test_key_value_words_take_underscores_or_dashes(word, dashed):
    assert translate_runfcgi_words([word]) == [dashed]


@pytest.mark.parametrize("argv, message", [
    (["--method", "threaded", "--before-fork", "a.b"], "--before-fork needs --method=prefork"),
    (["--method", "threaded", "--maxrequests-jitter", "3", "--maxrequests", "9"],
     "--maxrequests-jitter needs --method=prefork"),
    (["--method", "threaded", "--ping-path", "/p", "--ping-drain", "2"],
     "--ping-drain needs --method=prefork"),
    (["--method", "threaded", "--slowlog-timeout", "2"],
     "--slowlog-timeout needs --method=prefork"),
    (["--maxthreads", "4"], "--maxthreads needs --method=threaded"),
])
def test_options_of_one_method_are_refused_under_the_other(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_run_arguments(["mysite.settings", *argv])


def test_every_option_of_one_method_is_refused_under_the_other():
    """Whatever option the table declares for one method only (none is skipped)."""
    samples = {"prefork": ["--method", "threaded"], "threaded": ["--method", "prefork"]}
    for option in OPTIONS:
        if option.modes == ("prefork", "threaded"):
            continue
        (mode,) = option.modes
        value = [] if option.flag else ["a.b"] if option.repeatable else ["/p"] \
            if option.name.endswith(("path", "listen")) else ["3"]
        with pytest.raises(ConfigError, match=f"{option.dashed} needs --method={mode}"):
            parse_run_arguments(["mysite.settings", *samples[mode], option.dashed, *value])


def test_option_reference_rows_show_defaults_as_users_write_them():
    rows = {row.name: row for row in option_reference()}
    assert list(rows)[:len(OPTIONS)] == [option.dashed for option in OPTIONS]
    assert list(rows)[len(OPTIONS):] == ["--config", "--print-config", "--check-config"]
    assert rows["--config"].since == "0.2.0" and not rows["--config"].in_config_file
    assert (rows["--max-body-bytes"].default, rows["--graceful-timeout"].default,
            rows["--daemonize"].default, rows["--socket"].default) == ("1G", "30", "off", "")
    assert rows["--umask"].runfcgi == "umask" and rows["--timeout"].runfcgi is None
    assert rows["--timeout"].modes == ("prefork",) and rows["--after-fork"].repeatable
    assert rows["--allowed-clients"].env == "FCGI_WEB_SERVER_ADDRS"
    assert (rows["--daemonize"].runfcgi_default, rows["--debug"].runfcgi_default,
            rows["--socket"].runfcgi_default, rows["--timeout"].runfcgi_default) == (
        "true when socket/host/port is given, else false", "false", "unset", None)
    assert rows["--wsgi-app"].since == "0.2.0" and rows["--umask"].since == "0.1.0"
    # Every server option goes in a config file; the options about the file do not.
    assert all(row.help and row.in_config_file == (row.name in {o.dashed for o in OPTIONS})
               for row in rows.values())


def test_help_shows_each_default_once_from_the_table():
    text = make_parser()._subparsers._group_actions[0].choices["run"].format_help()
    text = " ".join(text.split())
    assert "(default: 1M)" in text and "(default: 30)" in text
    assert "[prefork only]" in text and "[threaded only]" in text


# -- the prose of README and the docs agrees with the code ------------------------------

ROOT = Path(__file__).resolve().parents[2]
# Hand-written pages; the options reference and the runfcgi table are generated.
PROSE = [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst"))]


def prose() -> str:
    return "\n".join(path.read_text() for path in PROSE)


def test_defaults_stated_in_the_prose_are_the_tables():
    """``--name ...`` (default X) anywhere in README or the docs must say the real default."""
    text = prose()
    stated = 0
    for match in re.finditer(r"\(default:? (?:``)?([^`)]+?)(?:``)?\)", text):
        names = re.findall(r"--([a-z][a-z-]*)", text[max(0, match.start() - 120):
                                                        match.start()])
        if not names or names[-1].replace("-", "_") not in OPTIONS_BY_NAME:
            continue
        option = OPTIONS_BY_NAME[names[-1].replace("-", "_")]
        assert match.group(1) == option.shown_default, (option.name, match.group(0))
        stated += 1
    assert stated >= 5


def test_options_named_in_the_prose_exist():
    # Options of the other commands (status, request, check, bench/run) and argparse's own.
    others = {"json", "full", "path", "quick", "now", "fail", "body-only", "version",
              "config", "print-config", "check-config", "help", "openmetrics", "request",
              "data", "header", "only", "repeats", "seconds", "no-readme", "name"}
    for name in set(re.findall(r"``--([a-z][a-z-]*)", prose())) - others:
        assert name.removeprefix("no-").replace("-", "_") in OPTIONS_BY_NAME, name


def test_python_requires_and_ruff_target_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = pyproject["project"]["requires-python"]
    oldest = re.fullmatch(r">=\s*3\.(\d+)", required.strip()).group(1)
    assert pyproject["tool"]["ruff"]["target-version"] == f"py3{oldest}"


# The options 0.1.0 shipped: any other option must say which later version added it.
OPTIONS_OF_0_1_0 = set("""
protocol method socket host port umask minspare maxspare maxchildren maxrequests maxthreads
daemonize pidfile workdir outlog errlog debug pythonpath before_fork after_fork
graceful_timeout timeout maxrequests_jitter user group allow_root socket_mode socket_owner
allowed_clients max_params_bytes max_body_bytes read_timeout script_name status_path
ping_path ping_response ping_drain slowlog_timeout slowlog access_log log_level log_format
""".split())


def test_options_added_after_0_1_0_say_since_when():
    first = {option.name for option in OPTIONS if option.since == "0.1.0"}
    assert first == OPTIONS_OF_0_1_0
    assert all(tuple(map(int, option.since.split("."))) > (0, 1, 0)
               for option in OPTIONS if option.name not in first)

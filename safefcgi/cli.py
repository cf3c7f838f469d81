"""The ``safefcgi`` command line: parse, build a config, hand it to the server.

Both spellings work: ``--socket /run/x.sock`` and runfcgi's ``socket=/run/x.sock``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from safefcgi import __version__
from safefcgi.config import (
    BOTH_METHODS,
    CONFIG_FILE_OPTIONS,
    OPTIONS,
    OPTIONS_BY_NAME,
    Option,
    ServerConfig,
    cast_option,
    option_for_key,
)
from safefcgi.configfile import Resolved, format_effective, resolve
from safefcgi.errors import EXIT_OK, EXIT_USAGE, ConfigError, SafeFCGIError
from safefcgi.logs import configure_logging

log = logging.getLogger("safefcgi.cli")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    names = [option.dashed]
    if "_" in option.name:
        names.append("--" + option.name)  # --before_fork, as runfcgi users may type
    if option.flag:
        parser.add_argument(*names, dest=option.name, action=argparse.BooleanOptionalAction,
                            default=argparse.SUPPRESS, help=_help(option))
    elif option.repeatable:
        parser.add_argument(*names, dest=option.name, action="append",
                            default=argparse.SUPPRESS, metavar=option.metavar,
                            help=_help(option))
    else:
        parser.add_argument(*names, dest=option.name, default=argparse.SUPPRESS,
                            metavar=option.metavar, help=_help(option))


def _help(option: Option) -> str:
    text = option.help + (" (repeatable)" if option.repeatable else "")
    if option.shown_default:
        text += f" (default: {option.shown_default})"
    if option.modes != BOTH_METHODS:
        text += f" [{'/'.join(option.modes)} only]"
    return text.replace("%", "%%")


def add_server_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add every server option of the table to ``parser`` (also used by manage.py)."""
    for option in OPTIONS:
        if option.name not in exclude:
            _add_option(parser, option)


def make_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="safefcgi",
        description="A fork-safe FastCGI server for Django (the successor of runfcgi).",
    )
    parser.add_argument("--version", action="version", version=f"safefcgi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_OneLineParser)
    commands.required = True
    run = commands.add_parser(
        "run",
        help="serve a Django project over FastCGI",
        description="Serve a Django project over FastCGI. Options may also be given "
        "the runfcgi way, as key=value words (socket=/run/site.sock method=prefork).",
    )
    run.add_argument("settings_module", metavar="SETTINGS_MODULE", nargs="?",
                     help="dotted path of the settings module, e.g. mysite.settings "
                     "(default: $DJANGO_SETTINGS_MODULE)")
    add_server_options(run)
    add_config_file_options(run)
    check = commands.add_parser(
        "check",
        help="import a project as the server would and report what children would inherit",
        description="Import the project exactly as 'safefcgi run' does before forking, then "
        "report every database connection, cache client and socket left open (with the file "
        "and line that opened it) and settings that make prefork unsafe. Exits 1 when "
        "anything would be inherited by children.",
    )
    check.add_argument("settings_module", metavar="SETTINGS_MODULE", nargs="?",
                       help="dotted path of the settings module (default: "
                       "$DJANGO_SETTINGS_MODULE)")
    check.add_argument("--pythonpath", action="append", default=[], metavar="DIR",
                       help="directory prepended to sys.path (repeatable)")
    _add_option(check, OPTIONS_BY_NAME["wsgi_app"])
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    add_request_parser(commands)
    add_status_parser(commands)
    return parser


def add_config_file_options(run: argparse.ArgumentParser) -> None:
    """--config FILE, and the two ways of looking at a configuration without serving."""
    files = run.add_argument_group("configuration file")
    for option in CONFIG_FILE_OPTIONS:
        if option.flag:
            files.add_argument(option.dashed, dest=option.name, action="store_true",
                               help=_help(option))
        else:
            files.add_argument(option.dashed, dest=option.name, metavar=option.metavar,
                               help=_help(option))


def _add_server_address(parser: argparse.ArgumentParser) -> None:
    """--socket, or --host with --port: where a running server listens."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="unix socket of the server")
    where.add_argument("--host", metavar="HOST", help="TCP address of the server (with --port)")
    parser.add_argument("--port", metavar="PORT", type=int, help="TCP port of the server")


def _require_host_with_port(namespace: argparse.Namespace) -> None:
    if (namespace.host is None) != (namespace.port is None):
        raise ConfigError("--host and --port go together: give both")


def add_status_parser(commands) -> None:
    """``safefcgi status``: the status page of a running server, without a web server."""
    status = commands.add_parser(
        "status",
        help="print the status page of a running server (started with --status-path or "
        "--status-listen)",
        description="Ask a running server for its status page over FastCGI, the way a "
        "web server would. Exit status 1 if the server does not answer with its status.",
    )
    _add_server_address(status)
    status.add_argument("--path", metavar="PATH", default="/fcgi-status",
                        help="the server's --status-path (default: /fcgi-status)")
    formats = status.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON, for scripts")
    formats.add_argument("--openmetrics", action="store_true",
                        help="print OpenMetrics text, as Prometheus scrapes it")
    status.add_argument("--full", action="store_true", help="add one row per child")
    status.add_argument("--timeout", metavar="SECONDS", type=float, default=10.0,
                        help="give up after this many seconds (default: 10)")


def status_command(namespace: argparse.Namespace) -> int:
    from safefcgi.ops.status import run_status_command

    _require_host_with_port(namespace)
    return run_status_command(namespace)


def add_request_parser(commands) -> None:
    """``safefcgi request``: one FastCGI request from the command line, like curl."""
    request = commands.add_parser(
        "request",
        help="send one FastCGI request to a running server and print the response",
        description="Send one request the way a web server would and print the CGI "
        "response (headers, blank line, body). Exit status 1 if no response came back.",
    )
    _add_server_address(request)
    request.add_argument("-X", "--request", metavar="METHOD",
                         help="request method (default: GET, or POST with -d)")
    request.add_argument("-d", "--data", metavar="DATA",
                         help="request body; @FILE reads a file, @- standard input")
    request.add_argument("-H", "--header", metavar="'NAME: VALUE'", action="append",
                         default=[], help="request header (repeatable)")
    request.add_argument("--timeout", metavar="SECONDS", type=float, default=30.0,
                         help="give up after this many seconds of silence (default: 30)")
    request.add_argument("--body-only", action="store_true",
                         help="print only the response body")
    request.add_argument("-f", "--fail", action="store_true",
                         help="exit with status 1 when the response status is 400 or more")
    request.add_argument("path", metavar="PATH",
                         help="request path, with a query string if any: /polls/?page=2")


def translate_runfcgi_words(args: Sequence[str]) -> list[str]:
    """Turn runfcgi's ``key=value`` words into ``--key=value`` options.

    A word that looks like ``key=value`` with an unknown key is an error naming
    the key, rather than being mistaken for the settings module.
    """
    translated = []
    for word in args:
        if word.startswith("-") or "=" not in word:
            translated.append(word)
            continue
        key, value = word.split("=", 1)
        option = option_for_key(key)
        if option is None:
            raise ConfigError(f"unknown option '{key.strip().lower()}' (in '{word}')")
        if option.flag:
            translated.append(option.dashed if _flag_value(option, value)
                              else "--no-" + option.dashed[2:])
        else:
            translated.append(f"{option.dashed}={value}")
    return translated


def _flag_value(option: Option, value: str) -> bool:
    try:
        return option.cast(value)
    except ValueError:
        raise ConfigError(f"bad value {value!r} for option '{option.name}': expected true "
                          "or false") from None


def parse_run_arguments(args: Sequence[str]) -> ServerConfig:
    """Parse the words after ``safefcgi run`` into a config."""
    return parse_command_line(["run", *args])


def parse_command_line(argv: Sequence[str]) -> ServerConfig:
    """Parse a whole ``safefcgi run`` command line (without the program name)."""
    return config_from_namespace(make_parser().parse_args(translate_runfcgi_words(argv)))


def config_from_namespace(namespace: argparse.Namespace) -> ServerConfig:
    return resolve_namespace(namespace).config


def resolve_namespace(namespace: argparse.Namespace) -> Resolved:
    """The config of ``safefcgi run``: command line over config file over environment."""
    raw = {name: value for name, value in vars(namespace).items()
           if name in OPTIONS_BY_NAME}
    return resolve(raw, namespace.settings_module, getattr(namespace, "config", None))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``safefcgi`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["request"]:
        return request_command(argv)
    try:
        namespace = make_parser().parse_args(translate_runfcgi_words(argv))
        if namespace.command == "check":
            return run_check(namespace)
        if namespace.command == "status":
            return status_command(namespace)
        resolved = resolve_namespace(namespace)
    except ConfigError as exc:
        print(f"safefcgi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if namespace.print_config:
        sys.stdout.write(format_effective(resolved))
        if not namespace.check_config:
            return EXIT_OK
    config = resolved.config
    configure_logging(level=config.log_level, log_format=config.log_format)
    # imported late: option errors must not need Django
    from safefcgi.server import check_startup, serve

    try:
        return check_startup(config) if namespace.check_config else serve(config)
    except SafeFCGIError as exc:
        log.error("%s", exc)
        return exc.exit_code


def run_check(namespace: argparse.Namespace) -> int:
    """``safefcgi check``: report what a fork would hand to children."""
    import json

    from safefcgi.forksafety.doctor import check_project, print_report
    from safefcgi.server import extend_sys_path

    settings_module = namespace.settings_module or os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise ConfigError("missing SETTINGS_MODULE (a dotted path such as mysite.settings)")
    wsgi_app = getattr(namespace, "wsgi_app", None)
    if wsgi_app is not None:
        wsgi_app = cast_option("wsgi_app", wsgi_app)
    configure_logging()
    extend_sys_path(tuple(namespace.pythonpath))
    try:
        report = check_project(settings_module, wsgi_app)
    except SafeFCGIError as exc:
        log.error("%s", exc)
        return exc.exit_code
    if namespace.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
    return 1 if report.inherited else 0


def request_command(argv: Sequence[str]) -> int:
    """Run ``safefcgi request``; its words are not runfcgi words (``-d a=b`` is data)."""
    from safefcgi.fastcgi.client import run_request_command

    try:
        namespace = make_parser().parse_args(argv)
        _require_host_with_port(namespace)
        if not namespace.path.startswith("/"):
            raise ConfigError(f"PATH must start with /, got {namespace.path!r}")
    except ConfigError as exc:
        print(f"safefcgi request: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_request_command(namespace)


if __name__ == "__main__":  # pragma: no cover - python -m safefcgi.cli
    sys.exit(main())

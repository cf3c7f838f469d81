"""``manage.py runfcgi``: the old command line, served by safefcgi.

Add ``"safefcgi"`` to INSTALLED_APPS and deployments that ran
``manage.py runfcgi method=prefork socket=...`` keep working unchanged,
with runfcgi's defaults (it daemonizes when given a socket or host/port).
It builds the same ServerConfig as ``safefcgi run`` and runs the same server.
"""

from __future__ import annotations

import argparse
import os

from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from safefcgi.cli import add_server_options, translate_runfcgi_words
from safefcgi.config import (
    OPTIONS,
    OPTIONS_BY_NAME,
    apply_runfcgi_defaults,
    build_config,
    runfcgi_default,
)
from safefcgi.errors import ConfigError, SafeFCGIError
from safefcgi.logs import configure_logging

# Django's own options already cover these.
DJANGO_OWNED = ("pythonpath",)


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def runfcgi_key_table() -> str:
    """Every runfcgi key=value word with runfcgi's default, for ``manage.py help runfcgi``."""
    lines = ["runfcgi keys (key=value; the --key spellings above work too):"]
    for option in OPTIONS:
        if option.runfcgi is None:
            continue
        lines.append(f"  {option.runfcgi + '=':<18} {option.help} "
                     f"[default: {runfcgi_default(option)}]")
    lines.append("safefcgi's own options take the key=value form too "
                 "(graceful_timeout=10, allow-root=true).")
    return "\n".join(lines)


class Command(BaseCommand):
    help = ("Serve this project over FastCGI with safefcgi: runfcgi's options, "
            "without children sharing a database connection.")
    requires_system_checks: list[str] = []  # the server imports the whole project itself

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = _HelpFormatter
        parser.epilog = runfcgi_key_table()
        return parser

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="*", metavar="key=value",
                            help="runfcgi-style options, e.g. method=prefork "
                            "socket=/run/mysite.sock")
        add_server_options(parser, exclude=DJANGO_OWNED)

    def handle(self, *args, words=(), **options):
        if list(words) == ["help"]:  # runfcgi's own way of asking for help
            self.print_help("manage.py", "runfcgi")
            return
        try:
            config = build_config(os.environ.get("DJANGO_SETTINGS_MODULE", ""),
                                  self._raw_options(words, options))
        except ConfigError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        configure_logging()
        from safefcgi.server import serve

        try:
            status = serve(config)
        except SafeFCGIError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        if status:
            raise CommandError(f"safefcgi exited with status {status}", returncode=status)

    def _raw_options(self, words, options) -> dict:
        raw = {name: value for name, value in options.items()
               if name in OPTIONS_BY_NAME and name not in DJANGO_OWNED}
        try:
            dashed = translate_runfcgi_words(words)
        except ConfigError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        namespace = argparse.Namespace()
        word_parser = argparse.ArgumentParser(add_help=False)
        add_server_options(word_parser, exclude=DJANGO_OWNED)
        _, leftover = word_parser.parse_known_args(dashed, namespace)
        if leftover:
            raise CommandError(f"unexpected argument {leftover[0]!r} (runfcgi options are "
                               "key=value words)", returncode=2)
        raw.update({name: value for name, value in vars(namespace).items()
                    if name in OPTIONS_BY_NAME})
        return apply_runfcgi_defaults(raw)

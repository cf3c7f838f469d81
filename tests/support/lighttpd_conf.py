"""Point the shipped conf/lighttpd*.conf files at this machine by rewriting their var lines.

The integration tests and bin/demo run the very file users copy; only the
``var.NAME = ...`` lines at its top change.  From the shell::

    python -m tests.support.lighttpd_conf conf/lighttpd.conf server_port=8080 ...
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from .conf_lines import rewrite_named_lines

VAR_LINE = re.compile(r"^var\.(\w+)\s*=.*$", re.MULTILINE)


class MissingVariable(KeyError):
    """The config has no var line for a value the caller wants to set."""


def render_lighttpd_conf(template: str, values: Mapping[str, str | int]) -> str:
    """Rewrite the ``var.NAME = ...`` lines named in ``values``, and nothing else.

    Integers are written bare (``server.port`` wants a number), everything
    else as a quoted string.
    """
    text, unused = rewrite_named_lines(template, VAR_LINE, values, _render_var)
    if unused:
        raise MissingVariable(f"no var line for {sorted(unused)}")
    return text


def _render_var(name: str, value: str | int) -> str:
    rendered = str(value) if isinstance(value, int) else json.dumps(str(value))
    return f"var.{name} = {rendered}"


def _parse_assignment(argument: str) -> tuple[str, str | int]:
    name, separator, value = argument.partition("=")
    if not separator:
        raise SystemExit(f"expected NAME=VALUE, got {argument!r}")
    return name, int(value) if value.isdigit() else value


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(f"usage: {Path(__file__).name} CONFIG [NAME=VALUE ...]")
    template = Path(argv[0]).read_text()
    values = dict(_parse_assignment(argument) for argument in argv[1:])
    try:
        sys.stdout.write(render_lighttpd_conf(template, values))
    except MissingVariable as error:
        raise SystemExit(f"{argv[0]}: {error.args[0]}") from None


if __name__ == "__main__":
    main(sys.argv[1:])

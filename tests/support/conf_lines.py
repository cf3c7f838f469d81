"""Rewrite the named assignment lines of a shipped config file (lighttpd ``var.``, Apache
``Define``), leaving every other line as users copy it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

V = TypeVar("V")


def rewrite_named_lines(template: str, line: re.Pattern, values: Mapping[str, V],
                        render: Callable[[str, V], str]) -> tuple[str, set[str]]:
    """Replace each line ``line`` matches whose name (group 1) is in ``values`` with
    ``render(name, value)``; return the text and the names no line held."""
    unused = set(values)

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        unused.discard(name)
        return render(name, values[name])

    return line.sub(replace, template), unused

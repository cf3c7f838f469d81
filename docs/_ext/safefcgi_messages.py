"""Every one-line error safefcgi can print, read out of its source code.

The troubleshooting page documents each of them; the docs build fails when the
code says something the page does not explain, or the page explains a message
the code no longer says. Messages are templates: each value filled in at run
time (a path, a number, an exception's text) is shown as ``…``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER = "…"
# Exceptions whose message reaches the user as one line, with the exit status
# of the safefcgi command (a CommandError carries its own).
RAISED = {"ConfigError": 2, "SafeFCGIError": 1, "SocketError": 1, "HookError": 1,
          "AppLoadError": 4, "CommandError": None}
# Option casts (and the config file's type checks) raise ValueError; the user sees
# it after "bad value … for option '…': " or "option '…': ".
VALUE_ERROR_MODULES = ("config.py", "configfile.py", "process/peers.py")
LOG_METHODS = {"error", "exception", "critical"}
PERCENT_FORMAT = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfgx]")


@dataclass(frozen=True)
class Message:
    """One message: its template, how it reaches the user, and where it is written."""

    text: str
    kind: str  # the exception type, "ValueError", "log" or "stderr"
    path: str
    line: int

    @property
    def exit_status(self) -> int | None:
        return RAISED.get(self.kind)


def template(node: ast.AST) -> str:
    """The literal text of a message expression, with ``…`` for each computed part."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(template(part) if isinstance(part, ast.Constant) else PLACEHOLDER
                       for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return template(node.left) + template(node.right)
    return PLACEHOLDER


# Lines that only wrap another message: "safefcgi: error: …", "hook … failed: …".
WRAPPER_PREFIX = re.compile(r"^(?:safefcgi(?: \w+)?: error: |hook … failed: )")


def _is_placeholder_only(text: str) -> bool:
    return not WRAPPER_PREFIX.sub("", text).replace(PLACEHOLDER, "").strip(" :")


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _raised(call: ast.Call, relative: str) -> tuple[str, str] | None:
    name = _called_name(call)
    if name == "ValueError" and relative in VALUE_ERROR_MODULES and call.args:
        return template(call.args[0]), name
    if name not in RAISED or not call.args:
        return None
    if name == "HookError":
        cause = template(call.args[1]) if len(call.args) > 1 else PLACEHOLDER
        return f"hook {PLACEHOLDER} failed: {cause}", name
    return template(call.args[0]), name


def _logged(call: ast.Call) -> tuple[str, str] | None:
    func = call.func
    if (isinstance(func, ast.Attribute) and func.attr in LOG_METHODS
            and isinstance(func.value, ast.Name) and func.value.id in ("log", "logger")
            and call.args):
        return PERCENT_FORMAT.sub(PLACEHOLDER, template(call.args[0])), "log"
    if (isinstance(func, ast.Name) and func.id == "print" and call.args
            and any(k.arg == "file" and ast.unparse(k.value) == "sys.stderr"
                    for k in call.keywords)):
        return template(call.args[0]), "stderr"
    return None


def messages_in(source: str, relative: str) -> list[Message]:
    """The messages of one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
            what = _raised(call, relative)
        elif isinstance(node, ast.Call):
            call = node
            what = _logged(call)
        else:
            continue
        if what is None:
            continue
        text, kind = what
        text = " ".join(text.split())
        if not _is_placeholder_only(text):
            found.append(Message(text, kind, relative, call.lineno))
    return found


def collect(package: Path) -> dict[str, list[Message]]:
    """Every message under ``package`` (the safefcgi directory), by template."""
    by_text: dict[str, list[Message]] = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        for message in messages_in(path.read_text(), relative):
            by_text.setdefault(message.text, []).append(message)
    return by_text

"""Fork hooks: the built-in Django lifecycle first, then the user's, in order.

A hook is any callable taking one argument, the server (the prefork master).
``before_fork`` hooks run in the parent right before every fork;
``after_fork`` hooks run in the new child before it accepts anything.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from safefcgi.errors import HookError

log = logging.getLogger("safefcgi.hooks")

HookFunc = Callable[[Any], object]


@dataclass(frozen=True)
class Hook:
    """A callable and the name it is reported by."""

    path: str
    func: HookFunc


def load_hook(path: str) -> Hook:
    """Import ``package.module.callable`` (or ``package.module:callable``)."""
    module_path, sep, attribute = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_path or not attribute:
        raise HookError(path, "not a dotted path such as mysite.hooks.after_fork")
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise HookError(path, f"cannot import {module_path}: {exc}") from None
    func = getattr(module, attribute, None)
    if func is None:
        raise HookError(path, f"{module_path} has no attribute {attribute!r}")
    if not callable(func):
        raise HookError(path, f"{attribute!r} is not callable")
    return Hook(path, func)


def load_hooks(paths: Iterable[str]) -> list[Hook]:
    return [load_hook(path) for path in paths]


@dataclass
class ForkHooks:
    """The ordered hooks around the one place that forks."""

    before_fork: list[Hook] = field(default_factory=list)
    after_fork: list[Hook] = field(default_factory=list)

    def run_before_fork(self, server: Any) -> None:
        _run_all(self.before_fork, server, "before-fork")

    def run_after_fork(self, server: Any) -> None:
        _run_all(self.after_fork, server, "after-fork")


def _run_all(hooks: list[Hook], server: Any, stage: str) -> None:
    for hook in hooks:
        try:
            hook.func(server)
        # A hook is user code and may raise anything; report it with its name.
        except Exception as exc:  # noqa: BLE001
            log.error("%s hook %s raised %s: %s", stage, hook.path, type(exc).__name__, exc,
                      exc_info=True)
            raise HookError(hook.path, exc) from exc

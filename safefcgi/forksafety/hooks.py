"""Hooks: around the one place that forks, and at the master's moments.

A hook is any callable whose first argument is the server (the prefork master).
``before_fork`` hooks run in the parent right before every fork;
``after_fork`` hooks run in the new child before it accepts anything: the
built-in Django lifecycle first, then the user's, in order, and a failure
stops what was being started.

The master's own moments: ``child_exit(server, pid, status)`` for each child
that exits (status as ``os.waitstatus_to_exitcode`` gives it: negative for a
signal), ``when_ready(server)`` once children accept, ``on_reload(server)`` at
SIGHUP. These run in the master's loop, so a failure is logged and the loop
goes on: a monitoring hook must never take the server down.
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
    """The ordered hooks around the one place that forks, and the master's own."""

    before_fork: list[Hook] = field(default_factory=list)
    after_fork: list[Hook] = field(default_factory=list)
    child_exit: list[Hook] = field(default_factory=list)
    when_ready: list[Hook] = field(default_factory=list)
    on_reload: list[Hook] = field(default_factory=list)

    def run_before_fork(self, server: Any) -> None:
        _run_all(self.before_fork, server, "before-fork")

    def run_after_fork(self, server: Any) -> None:
        _run_all(self.after_fork, server, "after-fork")

    def run_child_exit(self, server: Any, pid: int, status: int) -> None:
        run_logging_failures(self.child_exit, "child-exit", server, pid, status)

    def run_when_ready(self, server: Any) -> None:
        run_logging_failures(self.when_ready, "when-ready", server)

    def run_on_reload(self, server: Any) -> None:
        run_logging_failures(self.on_reload, "on-reload", server)


def run_logging_failures(hooks: list[Hook], stage: str, *args: Any) -> None:
    """Run each hook; one that raises is logged with its name and the next one runs."""
    for hook in hooks:
        try:
            hook.func(*args)
        # User code in the master's loop: whatever it raises (SystemExit included) is
        # reported, never allowed to stop the master.
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            log.error("%s hook %s raised %s: %s (the server goes on)", stage, hook.path,
                      type(exc).__name__, exc, exc_info=True)


def _run_all(hooks: list[Hook], server: Any, stage: str) -> None:
    for hook in hooks:
        try:
            hook.func(server)
        # A hook is user code and may raise anything; report it with its name.
        except Exception as exc:  # noqa: BLE001
            log.error("%s hook %s raised %s: %s", stage, hook.path, type(exc).__name__, exc,
                      exc_info=True)
            raise HookError(hook.path, exc) from exc

"""Hook loading, ordering and failure handling (no forking here)."""

import sys
import types

import pytest

from safefcgi.cli import parse_run_arguments
from safefcgi.errors import HookError
from safefcgi.forksafety import lifecycle
from safefcgi.forksafety.hooks import ForkHooks, load_hook
from safefcgi.server import build_fork_hooks


@pytest.fixture
def hook_module(monkeypatch):
    calls = []
    module = types.ModuleType("fake_hooks")
    module.first = lambda server: calls.append(("first", server))
    module.second = lambda server: calls.append(("second", server))
    module.not_callable = 42

    def broken(server):
        raise RuntimeError("database unreachable")

    module.broken = broken
    monkeypatch.setitem(sys.modules, "fake_hooks", module)
    return calls


def test_hooks_load_by_dotted_path_or_colon(hook_module):
    assert load_hook("fake_hooks.first").path == "fake_hooks.first"
    assert load_hook("fake_hooks:second").func is sys.modules["fake_hooks"].second


@pytest.mark.parametrize("path, reason", [
    ("nohooks_here.after", "cannot import nohooks_here"),
    ("fake_hooks.missing", "no attribute 'missing'"),
    ("fake_hooks.not_callable", "not callable"),
    ("justaname", "not a dotted path"),
])
def test_a_bad_hook_path_is_reported_with_its_name(hook_module, path, reason):
    with pytest.raises(HookError) as caught:
        load_hook(path)
    assert path in str(caught.value) and reason in str(caught.value)


def test_hooks_run_in_the_order_given(hook_module):
    hooks = ForkHooks(after_fork=[load_hook("fake_hooks.first"), load_hook("fake_hooks.second")])
    hooks.run_after_fork("the-server")
    assert hook_module == [("first", "the-server"), ("second", "the-server")]


def test_the_server_puts_builtin_hooks_first_then_settings_then_command_line(hook_module,
                                                                            monkeypatch):
    # The project's SAFEFCGI_*_FORK lists; Django settings are not configured here.
    monkeypatch.setattr(lifecycle, "settings_hook_paths",
                        lambda name: ("fake_hooks.second",))
    config = parse_run_arguments(["mysite.settings", "--before-fork", "fake_hooks.first",
                                  "--after-fork", "fake_hooks.first"])
    hooks = build_fork_hooks(config, application=None)
    for stage, builtin in ((hooks.before_fork, "before_fork"), (hooks.after_fork, "after_fork")):
        assert [hook.path for hook in stage] == [
            f"safefcgi.forksafety.lifecycle.{builtin}", "fake_hooks.second", "fake_hooks.first"]


def test_a_raising_hook_stops_the_rest_and_names_itself(hook_module, caplog):
    hooks = ForkHooks(after_fork=[load_hook("fake_hooks.broken"), load_hook("fake_hooks.first")])
    with pytest.raises(HookError) as caught:
        hooks.run_after_fork(None)
    assert caught.value.path == "fake_hooks.broken"
    assert "RuntimeError: database unreachable" in str(caught.value)
    assert hook_module == []
    assert "after-fork hook fake_hooks.broken raised RuntimeError" in caplog.text

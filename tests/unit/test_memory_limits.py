"""The memory limits' rules, on fake children and a fake clock (no process involved)."""

from dataclasses import dataclass

import pytest

from safefcgi.cli import parse_run_arguments
from safefcgi.errors import ConfigError
from safefcgi.process.memory import KILL, MB, REPLACE, MemoryLimits, MemoryWatchdog


@dataclass
class FakeChild:
    pid: int
    ready: bool = True
    retiring: bool = False
    memory_action: str | None = None


@pytest.mark.parametrize("rss, ready, expected", [
    (99 * MB, True, None), (101 * MB, True, REPLACE), (101 * MB, False, None),
    (201 * MB, True, KILL), (201 * MB, False, KILL), (None, True, None),
])
def test_verdict(rss, ready, expected):
    assert MemoryLimits.from_megabytes(100, 200).verdict(rss, ready) == expected


def test_each_child_is_named_once_per_action_and_not_more_often_than_the_check_period():
    sizes = {1: 150 * MB, 2: 50 * MB, 3: 150 * MB}
    now = [0.0]
    watchdog = MemoryWatchdog(MemoryLimits.from_megabytes(100, 200), sizes.get,
                              lambda: now[0])
    children = [FakeChild(1), FakeChild(2), FakeChild(3, retiring=True)]

    first = watchdog.over_limit(children)
    assert [(o.child.pid, o.action, o.rss) for o in first] == [(1, REPLACE, 150 * MB)]
    children[0].memory_action = REPLACE
    sizes[1] = 250 * MB
    assert watchdog.over_limit(children) == []  # too soon
    now[0] += 1
    assert [(o.child.pid, o.action) for o in watchdog.over_limit(children)] == [(1, KILL)]
    children[0].memory_action = KILL
    now[0] += 1
    assert watchdog.over_limit(children) == []


def test_no_limits_means_no_reading():
    def read(pid):
        raise AssertionError("read without a limit")

    assert MemoryWatchdog(MemoryLimits(), read).over_limit([FakeChild(1)]) == []


@pytest.mark.parametrize("args, message", [
    (["--max-child-rss", "200", "--max-child-rss-kill", "200"], "must be above"),
    (["--method", "threaded", "--max-child-rss", "200"], "needs --method=prefork"),
    (["--max-child-rss", "lots"], "expected a whole number"),
])
def test_bad_memory_limits_fail_with_a_sentence(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_run_arguments(["mysite.settings", *args])

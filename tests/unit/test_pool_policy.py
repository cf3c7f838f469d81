"""The pool's rules, reached directly: no fork, no signal, no socket."""

import random
import signal

from safefcgi.process.master import Child
from safefcgi.process.pool import (
    BACKOFF_FIRST_SECONDS,
    BACKOFF_MAX_SECONDS,
    BOARD_POLL_SECONDS,
    BOOT_FAILURES_BEFORE_SHOUTING,
    PoolLimits,
    PoolPolicy,
)


def child(pid, *, ready=True, idle=True, started_at=0.0, **state):
    return Child(pid=pid, channel=None, ready=ready, idle=idle, started_at=started_at, **state)


def policy(minspare=1, maxspare=2, maxchildren=4, **options):
    return PoolPolicy(PoolLimits(minspare, maxspare, maxchildren), **options)


# -- size ------------------------------------------------------------------------------


def test_start_up_forks_enough_children_for_both_spare_limits():
    assert policy(1, 3, 5).initial_children() == 3
    assert policy(2, 3, 2).initial_children() == 2
    assert policy(0, 0, 4).initial_children() == 1


def test_children_are_started_until_minspare_are_idle_or_starting():
    rules = policy(minspare=3, maxspare=4, maxchildren=10)
    busy = [child(1, idle=False), child(2, idle=False)]
    starting = [child(3, ready=False, idle=False)]
    assert rules.to_start(busy + starting) == 2  # the starting one counts as spare


def test_no_child_is_started_beyond_maxchildren():
    rules = policy(minspare=3, maxspare=4, maxchildren=3)
    assert rules.to_start([child(1, idle=False), child(2, idle=False)]) == 1


def test_one_spare_is_kept_even_with_minspare_0():
    rules = policy(minspare=0, maxspare=1, maxchildren=3)
    assert rules.to_start([child(1, idle=False)]) == 1
    assert rules.to_start([child(1, idle=False), child(2)]) == 0


def test_retiring_and_old_children_do_not_count_towards_the_pool():
    rules = policy(minspare=1, maxspare=2, maxchildren=2)
    leaving = [child(1, retiring=True), child(2, stale=True)]
    assert rules.to_start(leaving) == 1


def test_idle_children_beyond_maxspare_retire_oldest_first():
    rules = policy(minspare=1, maxspare=2, maxchildren=6)
    pool = [child(1, started_at=30), child(2, started_at=10), child(3, started_at=20),
            child(4, started_at=5, idle=False)]
    assert [c.pid for c in rules.to_retire(pool)] == [1]


def test_ttou_retires_the_oldest_idle_child_but_never_the_last_one():
    rules = policy()
    assert rules.to_retire_on_shrink([child(1, started_at=2), child(2, started_at=1)]).pid == 2
    assert rules.to_retire_on_shrink([child(1)]) is None
    assert rules.to_retire_on_shrink([child(1, idle=False), child(2, idle=False)]) is None


def test_the_old_generation_retires_once_every_fresh_child_is_ready():
    old = [child(1, stale=True), child(2, stale=True, retiring=True)]
    starting = [child(3), child(4, ready=False)]
    assert PoolPolicy.old_generation_to_retire(old + starting) == []
    assert [c.pid for c in PoolPolicy.old_generation_to_retire(old + starting[:1])] == [1]
    assert PoolPolicy.old_generation_to_retire(old) == []  # no fresh child yet


def test_each_child_gets_maxrequests_plus_up_to_jitter():
    rules = policy(maxrequests=100, jitter=5, rng=random.Random(3))
    assert {rules.request_budget() for _ in range(300)} == set(range(100, 106))


# -- failed starts ---------------------------------------------------------------------


def test_failed_starts_back_off_doubling_up_to_the_maximum_and_reset_on_success():
    rules = policy()
    delays = [rules.start_failed(now=100.0) for _ in range(10)]
    assert delays[:3] == [BACKOFF_FIRST_SECONDS, 2 * BACKOFF_FIRST_SECONDS,
                          4 * BACKOFF_FIRST_SECONDS]
    assert delays[-1] == BACKOFF_MAX_SECONDS
    assert not rules.may_start(100.0 + BACKOFF_MAX_SECONDS - 1)
    assert rules.may_start(100.0 + BACKOFF_MAX_SECONDS)
    rules.child_ready()
    assert rules.start_failed(now=0.0) == BACKOFF_FIRST_SECONDS


def test_repeated_failed_starts_are_shouted_about_once():
    rules = policy()
    shouts = []
    for _ in range(BOOT_FAILURES_BEFORE_SHOUTING * 2):
        rules.start_failed(now=0.0)
        shouts.append(rules.should_shout())
    assert shouts.count(True) == 1


def test_a_failing_before_fork_hook_waits_longer_than_a_failing_fork():
    rules = policy()
    rules.fork_failed(now=0.0, hook=False)
    assert rules.may_start(BACKOFF_FIRST_SECONDS)
    rules.fork_failed(now=0.0, hook=True)
    assert not rules.may_start(BACKOFF_FIRST_SECONDS)
    assert rules.may_start(BACKOFF_MAX_SECONDS)


def test_why_a_child_ended():
    reason = PoolPolicy.restart_reason
    assert reason(child(1, ready=False), 3, stopping=False) == "startup_failure"
    assert reason(child(1, ready=False), 3, stopping=True) is None
    assert reason(child(1, timed_out=True), -signal.SIGKILL, stopping=False) == "timeout"
    assert reason(child(1), -signal.SIGSEGV, stopping=False) == "crash"
    assert reason(child(1), -signal.SIGKILL, stopping=True) is None  # killed by the stop
    assert reason(child(1, budget=5, served=5), 0, stopping=False) == "maxrequests"
    assert reason(child(1, budget=5, served=2), 0, stopping=False) is None  # retired
    assert reason(child(1, memory_action="memory"), 0, stopping=False) == "memory"
    assert reason(child(1, memory_action="memory_kill"), -signal.SIGKILL,
                  stopping=False) == "memory_kill"


# -- watchdogs and the next wake-up ----------------------------------------------------


def serving(pid, since, **state):
    return child(pid, idle=False, request=("GET", "/slow"), request_since=since, **state)


def test_timeout_names_each_overdue_child_once():
    rules = policy(timeout=10)
    pool = [serving(1, since=0), serving(2, since=5), serving(3, since=0, timed_out=True),
            child(4)]
    assert [c.pid for c in rules.overdue(pool, now=12)] == [1]
    assert policy().overdue(pool, now=1000) == []  # no --timeout


def test_slow_log_names_each_slow_request_once():
    rules = policy(slowlog_timeout=2)
    pool = [serving(1, since=0), serving(2, since=0, slow_noted=0.0), serving(3, since=9)]
    assert [c.pid for c in rules.slow(pool, now=10)] == [1]


def test_the_loop_wakes_for_the_next_deadline_or_to_read_the_boards():
    rules = policy(timeout=10, slowlog_timeout=5)
    assert rules.next_wakeup([child(1)], now=0) == BOARD_POLL_SECONDS
    assert rules.next_wakeup([serving(1, since=0)], now=1) == BOARD_POLL_SECONDS
    assert abs(rules.next_wakeup([serving(1, since=0)], now=4.99) - 0.02) < 1e-9
    assert rules.next_wakeup([serving(1, since=0, slow_noted=0.0)], now=9.9) < 0.2
    assert abs(rules.next_wakeup([], now=0, drain_until=0.05) - 0.06) < 1e-9

"""Start-up errors are one clear line; hooks run in order; a failing hook is contained."""

import time

from tests.support.paths import PROJECT
from tests.support.servers import root_permission, run_safefcgi
from tests.support.waiting import wait_until

HOOKS = "fixturesite_hooks"


def run_to_completion(*args, timeout=20):
    return run_safefcgi("run", *args, *root_permission(args), timeout=timeout)


def error_lines(text):
    return [line for line in text.splitlines() if "[ERROR]" in line or "error:" in line]


def test_missing_settings_module_is_one_clear_error(tmp_path):
    result = run_to_completion("nosuchsite.settings", "--socket", str(tmp_path / "s.sock"))
    assert result.returncode == 4
    assert error_lines(result.stderr) == [result.stderr.strip().splitlines()[-1]]
    assert "settings module nosuchsite.settings not found on sys.path" in result.stderr
    assert not (tmp_path / "s.sock").exists()


def test_unknown_option_is_one_line_and_exit_status_2(tmp_path):
    result = run_to_completion("fixturesite_settings", "--maxchilden", "4")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--maxchilden" in result.stderr


def test_settings_hooks_run_before_command_line_hooks_in_parent_and_children(start_server):
    server = start_server(
        "--maxchildren", "2", "--before-fork", f"{HOOKS}.before_b",
        "--after-fork", f"{HOOKS}.after_b",
        env={"FIXTURESITE_BEFORE": f"{HOOKS}.before_a", "FIXTURESITE_AFTER": f"{HOOKS}.after_a"},
    )
    parent = str(server.process.pid)

    def hook_lines():
        return [line.split() for line in server.hook_log.read_text().splitlines()]

    # both children ran their after-fork hooks (one may still be starting when the first
    # answers)
    wait_until(lambda: len({pid for name, pid in hook_lines() if name == "after_b"}) == 2, 10,
               "after_b in both children")
    lines = hook_lines()
    before = [name for name, pid in lines if pid == parent]
    assert before[:4] == ["before_a", "before_b", "before_a", "before_b"]
    by_child = {}
    for name, pid in lines:
        if pid != parent:
            by_child.setdefault(pid, []).append(name)
    assert len(by_child) == 2
    assert all(names == ["after_a", "after_b"] for names in by_child.values())


def test_failing_after_fork_hook_exits_the_child_and_the_parent_goes_on(start_server):
    server = start_server("--maxchildren", "1", "--after-fork", f"{HOOKS}.after_fails",
                          wait=False)
    def attempts() -> int:
        return server.hook_log.read_text().count("after_fails")

    # Retried after 0.5 s, then 1 s, 2 s, 4 s...: counted, not timed, since a busy machine
    # makes each start slower.
    wait_until(lambda: attempts() >= 3, 30, "three attempts to start a child")
    seen = attempts()
    time.sleep(1.5)
    assert attempts() - seen <= 1  # the next wait is 2 s or longer: back-off, not a fork loop
    assert server.process.poll() is None
    log = server.log
    assert "after-fork hook fixturesite_hooks.after_fails raised RuntimeError: cache server " \
           "unreachable" in log
    assert "failed during start-up (its after-fork hook failed)" in log


def test_children_start_once_a_failing_after_fork_hook_recovers(start_server):
    server = start_server("--maxchildren", "1", "--after-fork", f"{HOOKS}.after_fails_twice",
                          wait=False)
    server.wait_until_serving(timeout=15)
    assert server.get("/pid").status == 200


def test_failing_before_fork_hook_stops_start_up(tmp_path):
    result = run_to_completion("fixturesite_settings", "--pythonpath", str(PROJECT),
                               "--socket", str(tmp_path / "s.sock"),
                               "--before-fork", f"{HOOKS}.before_fails")
    assert result.returncode == 1
    assert "hook fixturesite_hooks.before_fails failed: ValueError: refusing to fork" \
        in result.stderr
    assert not (tmp_path / "s.sock").exists()


def test_unimportable_hook_is_refused_before_anything_starts(tmp_path):
    result = run_to_completion("fixturesite_settings", "--pythonpath", str(PROJECT),
                               "--socket", str(tmp_path / "s.sock"),
                               "--after-fork", "fixturesite_hooks.nonexistent")
    assert result.returncode == 1
    assert "hook fixturesite_hooks.nonexistent failed" in result.stderr

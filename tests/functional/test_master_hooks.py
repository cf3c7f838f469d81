"""The master's hooks: child-exit, when-ready, on-reload; a failing one never stops it."""

import os
import signal

from tests.support.waiting import wait_until

HOOKS = "fixturesite_hooks"


def hook_lines(server) -> list[str]:
    return server.hook_log.read_text().splitlines()


def test_child_exit_hook_gets_the_pid_of_a_child_killed_by_sigterm(start_server):
    server = start_server("--maxchildren", "3", "--minspare", "2",
                          "--child-exit", f"{HOOKS}.child_exit")
    terminated, killed = sorted(wait_until(lambda: len(server.children()) >= 2
                                           and server.children(), 10, "two children"))[:2]
    master = server.process.pid

    os.kill(terminated, signal.SIGTERM)
    os.kill(killed, signal.SIGKILL)

    # The child handles TERM (serves its backlog) and exits 0; KILL shows as -9.
    expected = {f"child_exit {terminated} 0 in {master}", f"child_exit {killed} -9 in {master}"}
    wait_until(lambda: expected <= set(hook_lines(server)), 10, "both child-exit calls",
               detail=lambda: hook_lines(server))
    assert server.get("/hello").status == 200


def test_child_exit_hook_from_settings(start_server):
    server = start_server(env={"FIXTURESITE_CHILD_EXIT": f"{HOOKS}.child_exit"})
    child = min(server.children())
    os.kill(child, signal.SIGTERM)
    wait_until(lambda: any(line.startswith(f"child_exit {child} 0 ")
                           for line in hook_lines(server)), 10, "the child-exit call",
               detail=lambda: hook_lines(server))


def test_when_ready_runs_once_children_accept_and_on_reload_at_hup(start_server):
    server = start_server("--maxchildren", "2", "--minspare", "2",
                          "--when-ready", f"{HOOKS}.when_ready",
                          "--on-reload", f"{HOOKS}.on_reload")
    master = server.process.pid
    ready = f"when_ready accepting=True in {master}"
    wait_until(lambda: hook_lines(server) == [ready], 10, "when-ready",
               detail=lambda: hook_lines(server))

    server.process.send_signal(signal.SIGHUP)

    # The re-executed master (same pid) runs when-ready again once its children accept.
    wait_until(lambda: hook_lines(server) == [ready, f"on_reload {master}", ready], 30,
               "on-reload, then when-ready again",
               detail=lambda: hook_lines(server) + [server.log])
    assert server.get("/hello").status == 200


def test_failing_master_hooks_are_logged_and_the_master_goes_on(start_server):
    server = start_server("--minspare", "2", "--child-exit", f"{HOOKS}.master_hook_fails",
                          "--child-exit", f"{HOOKS}.child_exit",
                          "--when-ready", f"{HOOKS}.master_hook_exits")
    wait_until(lambda: "when-ready hook fixturesite_hooks.master_hook_exits raised "
               "SystemExit" in server.log, 10, "the failing hook's log line",
               detail=lambda: server.log)
    child = min(server.children())

    os.kill(child, signal.SIGKILL)

    # The hook after the failing one still ran.
    wait_until(lambda: any(line.startswith(f"child_exit {child} -9")
                           for line in hook_lines(server)), 10, "the next child-exit hook",
               detail=lambda: hook_lines(server))
    assert "child-exit hook fixturesite_hooks.master_hook_fails raised RuntimeError: " \
        "metrics directory is gone (the server goes on)" in server.log
    assert server.process.poll() is None
    assert server.get("/hello").status == 200

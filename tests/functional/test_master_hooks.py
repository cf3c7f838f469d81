"""The master's hooks: child-exit, when-ready, on-reload; a failing one never stops it."""

import os
import signal

from .conftest import wait_for

HOOKS = "fixturesite_hooks"


def hook_lines(server) -> list[str]:
    return server.hook_log.read_text().splitlines()


def test_child_exit_hook_gets_the_pid_of_a_child_killed_by_sigterm(start_server):
    server = start_server("--maxchildren", "3", "--minspare", "2",
                          "--child-exit", f"{HOOKS}.child_exit")
    terminated, killed = sorted(wait_for(lambda: len(server.children()) >= 2
                                         and server.children()))[:2]
    master = server.process.pid

    os.kill(terminated, signal.SIGTERM)
    os.kill(killed, signal.SIGKILL)

    # The child handles TERM (serves its backlog) and exits 0; KILL shows as -9.
    expected = {f"child_exit {terminated} 0 in {master}", f"child_exit {killed} -9 in {master}"}
    assert wait_for(lambda: expected <= set(hook_lines(server))), hook_lines(server)
    assert server.get("/hello").status == 200


def test_child_exit_hook_from_settings(start_server):
    server = start_server(env={"FIXTURESITE_CHILD_EXIT": f"{HOOKS}.child_exit"})
    child = min(server.children())
    os.kill(child, signal.SIGTERM)
    assert wait_for(lambda: any(line.startswith(f"child_exit {child} 0 ")
                                for line in hook_lines(server)))


def test_when_ready_runs_once_children_accept_and_on_reload_at_hup(start_server):
    server = start_server("--maxchildren", "2", "--minspare", "2",
                          "--when-ready", f"{HOOKS}.when_ready",
                          "--on-reload", f"{HOOKS}.on_reload")
    master = server.process.pid
    ready = f"when_ready accepting=True in {master}"
    assert wait_for(lambda: hook_lines(server) == [ready]), hook_lines(server)

    server.process.send_signal(signal.SIGHUP)

    # The re-executed master (same pid) runs when-ready again once its children accept.
    assert wait_for(lambda: hook_lines(server) == [ready, f"on_reload {master}", ready],
                    timeout=30), hook_lines(server) + [server.log]
    assert server.get("/hello").status == 200


def test_failing_master_hooks_are_logged_and_the_master_goes_on(start_server):
    server = start_server("--minspare", "2", "--child-exit", f"{HOOKS}.master_hook_fails",
                          "--child-exit", f"{HOOKS}.child_exit",
                          "--when-ready", f"{HOOKS}.master_hook_exits")
    assert wait_for(lambda: "when-ready hook fixturesite_hooks.master_hook_exits raised "
                    "SystemExit" in server.log), server.log
    child = min(server.children())

    os.kill(child, signal.SIGKILL)

    # The hook after the failing one still ran.
    assert wait_for(lambda: any(line.startswith(f"child_exit {child} -9")
                                for line in hook_lines(server)))
    assert "child-exit hook fixturesite_hooks.master_hook_fails raised RuntimeError: " \
        "metrics directory is gone (the server goes on)" in server.log
    assert server.process.poll() is None
    assert server.get("/hello").status == 200

"""--lazy: children import the project themselves; the parent never does."""

import os
import socket

from tests.support.waiting import wait_until

THREAD_ENV = {"FIXTURESITE_START_THREAD": "1"}


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_lazy_children_import_a_project_that_starts_a_thread_the_parent_never_does(
        start_server):
    server = start_server("--lazy", "--minspare", "2", "--maxchildren", "2", env=THREAD_ENV)

    assert "before the first fork" not in server.log  # no thread in the parent to warn of
    assert thread_count(server.process.pid) == 1
    children = wait_until(lambda: len(server.children()) == 2 and server.children(), 10,
                          "two children", detail=lambda: server.log)
    assert all(thread_count(pid) == 2 for pid in children)  # each its own
    pids = {int(server.get("/pid").body) for _ in range(6)}
    assert pids <= children


def test_lazy_runs_the_settings_after_fork_hooks_in_each_child(start_server):
    server = start_server("--lazy", "--minspare", "2", "--maxchildren", "2",
                          "--after-fork", "fixturesite_hooks.after_b",
                          env={"FIXTURESITE_AFTER": "fixturesite_hooks.after_a",
                               "FIXTURESITE_BEFORE": "fixturesite_hooks.before_a"})
    parent = str(server.process.pid)

    def lines():
        return [line.split() for line in server.hook_log.read_text().splitlines()]

    wait_until(lambda: len({pid for name, pid in lines() if name == "after_b"}) == 2, 10,
               "both children's after-fork hooks", detail=lines)
    by_child = {}
    for name, pid in lines():
        by_child.setdefault(pid, []).append(name)
    assert parent not in by_child  # the settings' before-fork hook is never read
    assert all(names == ["after_a", "after_b"] for names in by_child.values())


def test_lazy_child_that_cannot_import_the_project_is_retried_with_back_off(start_server):
    server = start_server("--lazy", env={"FIXTURESITE_URLS_FAIL": "1"}, wait=False)

    wait_until(lambda: "failed during start-up" in server.log, 15, "a failed child start",
               detail=lambda: server.log)
    assert "cannot load the Django project of fixturesite_settings" in server.log
    assert server.process.poll() is None


def test_a_lazy_childs_lines_reach_the_log_whatever_the_projects_logging(start_server):
    server = start_server("--lazy", "--maxchildren", "1",
                          env={"FIXTURESITE_LOGGING": "takes-safefcgi"})
    with socket.socket(socket.AF_UNIX) as garbage:  # a child's line, from the FastCGI layer
        garbage.connect(server.socket)
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
        garbage.recv(100)

    wait_until(lambda: "[child] [WARNING] safefcgi.protocol: malformed FastCGI input"
               in server.log, 10, "the child's log line", detail=lambda: server.log)


def test_lazy_children_serve_the_application_wsgi_app_names(start_server):
    server = start_server("--lazy", "--wsgi-app", "fixturesite_wsgi:alternative",
                          env={"FIXTURESITE_WSGI_APPLICATION": "fixturesite_wsgi.application"})

    response = server.get("/hello")

    assert response.status == 200 and response.headers["x-wrapped-by"] == "alternative"

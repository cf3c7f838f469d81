"""Fork with an open PostgreSQL connection and report what each side sees, as JSON.

    python fork_probe.py naive|safefcgi

naive:    the child uses the inherited connection and closes it at "request end",
          as Django does, which is what every prefork child did under flup.
safefcgi: the child runs safefcgi's built-in after-fork hook first.

Prints {"parent_backend", "child_backend", "parent_alive_after_child"}.
"""

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()

from django.db import DatabaseError, connection  # noqa: E402

from safefcgi.forksafety.lifecycle import DjangoForkSafety  # noqa: E402


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def main(mode: str) -> None:
    parent_backend = backend_pid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            if mode == "safefcgi":
                DjangoForkSafety().after_fork()
            result = {"child_backend": backend_pid()}
            connection.close()
        except Exception as exc:  # report, never raise into the parent's code
            result = {"child_error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read())
    try:
        backend_pid()
        report["parent_alive_after_child"] = True
    except DatabaseError as exc:
        report["parent_alive_after_child"] = False
        report["parent_error"] = f"{type(exc).__name__}: {exc}"
    report["parent_backend"] = parent_backend
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])

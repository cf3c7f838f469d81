"""Reading error messages out of source code, for the troubleshooting page."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "_ext"))

from safefcgi_messages import messages_in  # noqa: E402

SOURCE = '''
def f(path, exc, n):
    if n:
        raise ConfigError(f"socket {path} is taken: {exc.strerror}")
    log.error("child %d busy for %.1f s", n, 2.0)
    log.info("not an error %s", n)
    raise SocketError("no --socket given, " + "and no " + kind)
    raise HookError(path, f"cannot import {path}: {exc}")
    raise CommandError(str(exc), returncode=2)
    raise RuntimeError("not shown to users")
    print(f"safefcgi: error: {exc}", file=sys.stderr)
    print("to standard output")
'''


def test_messages_are_templates_with_an_ellipsis_for_each_computed_part():
    found = {(m.text, m.kind) for m in messages_in(SOURCE, "process/x.py")}

    assert found == {
        ("socket … is taken: …", "ConfigError"),
        ("child … busy for … s", "log"),
        ("no --socket given, and no …", "SocketError"),
        ("hook … failed: cannot import …: …", "HookError"),
    }


def test_value_errors_count_only_in_option_casts():
    source = 'def cast(text):\n    raise ValueError(f"expected {text}")\n'

    assert [m.text for m in messages_in(source, "config.py")] == ["expected …"]
    assert messages_in(source, "fastcgi/records.py") == []

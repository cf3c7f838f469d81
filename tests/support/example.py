"""The example project (example/mysite) as the tests run it: accounts, habits, commands."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .load import Account
from .paths import EXAMPLE_DIR, EXAMPLE_SETTINGS
from .processes import HarnessError, clean_environment, tail

PASSWORD = "correct horse battery staple"
ACCOUNTS = [Account(name, PASSWORD) for name in ("alice", "bob", "carol", "dave")]

# What the production sites that hit the bug had in common: persistent
# connections, and a query while the project is imported (in the master).
PRODUCTION_HABITS = {"EXAMPLE_CONN_MAX_AGE": "60", "EXAMPLE_IMPORT_TIME_QUERY": "1"}


def run_django_command(args: list[str], env: Mapping[str, str], log_path: Path) -> None:
    """Run a management command of the example project, failing loudly with its output."""
    argv = [sys.executable, "-m", "django", *args,
            "--settings", EXAMPLE_SETTINGS, "--pythonpath", str(EXAMPLE_DIR)]
    with open(log_path, "ab") as log:
        completed = subprocess.run(
            argv, env=clean_environment(env), stdout=log, stderr=subprocess.STDOUT, timeout=300
        )
    if completed.returncode != 0:
        raise HarnessError(f"{' '.join(args)} failed:\n{tail(log_path)}")


def prepare_example_database(env: Mapping[str, str], log_path: Path) -> None:
    """Create the example's tables and the users of ACCOUNTS in the database ``env`` names."""
    run_django_command(["migrate", "--noinput"], env, log_path)
    run_django_command(
        ["seedusers", *(account.username for account in ACCOUNTS), "--password", PASSWORD],
        env, log_path,
    )

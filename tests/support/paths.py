"""Where the things the tests run live: the repository, the two projects, shipped configs."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
# The small SQLite project of the functional tests (also run behind web servers).
PROJECT = REPO / "tests" / "functional" / "project"
# The example project the integration tests run on PostgreSQL.
EXAMPLE_DIR = REPO / "example"
EXAMPLE_SETTINGS = "mysite.settings"
# The console scripts of the virtualenv that runs the tests.
VENV_BIN = Path(sys.executable).parent
# Scripts the integration tests run by path.
SCRIPTS = REPO / "tests" / "integration"

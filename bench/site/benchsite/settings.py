"""The example project, plus the views the benchmark loads (see views.py).

Everything of ``mysite.settings`` is kept (apps, middleware, sessions,
templates), so memory and per-request cost are those of a real small site;
the database is the benchmark's PostgreSQL with persistent connections.
"""

import os

os.environ.setdefault("EXAMPLE_DB", "postgres")
os.environ.setdefault("EXAMPLE_CONN_MAX_AGE", "600")

from mysite.settings import *  # noqa: E402,F403 - the example site, extended

ROOT_URLCONF = "benchsite.urls"
DEBUG = False

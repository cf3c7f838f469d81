"""Settings for the example site that safefcgi serves in the demo and the integration tests.

SQLite is the default so that ``bin/demo`` needs no database server.  The
integration tests switch to PostgreSQL (directly or through pgbouncer) and turn
on the production habits that expose connection sharing between forked
children: persistent connections and a query while the app is imported.

Environment variables:

``EXAMPLE_DB``                ``sqlite`` (default) or ``postgres``
``EXAMPLE_SQLITE_PATH``       SQLite file, default ``example/db.sqlite3``
``EXAMPLE_PGHOST``            PostgreSQL host or unix socket directory
``EXAMPLE_PGPORT``            PostgreSQL port (also names the unix socket file)
``EXAMPLE_PGDATABASE``        database name, default ``example``
``EXAMPLE_PGUSER``            database user, default ``postgres``
``EXAMPLE_PGBOUNCER``         ``1`` when the connection goes through pgbouncer
                              in transaction pooling mode
``EXAMPLE_CONN_MAX_AGE``      seconds a connection is kept, default 0
``EXAMPLE_IMPORT_TIME_QUERY`` ``1`` to query the database while apps load
``EXAMPLE_DEBUG``             ``1`` for Django's debug mode
``EXAMPLE_SERVER_LOG``        the server's log file, for the home page to show
                              the fork-time warning in (bin/demo sets it)
``EXAMPLE_STATUS_PATH``       the server's --status-path, linked from the home page
``EXAMPLE_SECRET_KEY``        overrides the development secret key
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") in ("1", "true", "yes", "on")


# The fallback key only ever signs sessions of this example site.
SECRET_KEY = os.environ.get(
    "EXAMPLE_SECRET_KEY", "example-only-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
)
DEBUG = _env_flag("EXAMPLE_DEBUG")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
WSGI_APPLICATION = "mysite.wsgi.application"

# Sessions live in the database, so every logged-in request reads a row that
# belongs to one user: a connection shared between processes shows up as a
# wrong or missing user.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

CONN_MAX_AGE = int(os.environ.get("EXAMPLE_CONN_MAX_AGE", "0"))


def _database() -> dict:
    if os.environ.get("EXAMPLE_DB", "sqlite") == "postgres":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("EXAMPLE_PGHOST", ""),
            "PORT": os.environ.get("EXAMPLE_PGPORT", ""),
            "NAME": os.environ.get("EXAMPLE_PGDATABASE", "example"),
            "USER": os.environ.get("EXAMPLE_PGUSER", "postgres"),
            "CONN_MAX_AGE": CONN_MAX_AGE,
            # pgbouncer in transaction pooling mode cannot keep a cursor open
            # across transactions.
            "DISABLE_SERVER_SIDE_CURSORS": _env_flag("EXAMPLE_PGBOUNCER"),
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        "CONN_MAX_AGE": CONN_MAX_AGE,
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

IMPORT_TIME_QUERY = _env_flag("EXAMPLE_IMPORT_TIME_QUERY")
SERVER_LOG = os.environ.get("EXAMPLE_SERVER_LOG", "")
STATUS_PATH = os.environ.get("EXAMPLE_STATUS_PATH", "")

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

# Errors inside views go to stderr, where the server's log is collected; the
# default would try to mail them to ADMINS.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}

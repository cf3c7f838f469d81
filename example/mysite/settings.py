"""Settings for the example site that safefcgi serves in the demo and the integration tests.

SQLite is the default so that ``bin/demo`` needs no database server.  The
integration tests switch to PostgreSQL (directly or through pgbouncer), MariaDB
or Redis, and turn on the production habits that expose connection sharing
between forked children: persistent connections and a query (or a session
lookup) while the app is imported.

Environment variables:

``EXAMPLE_DB``                ``sqlite`` (default), ``postgres`` or ``mysql``
``EXAMPLE_SQLITE_PATH``       SQLite file, default ``example/db.sqlite3``
``EXAMPLE_SQLITE_WAL``        ``1`` for write-ahead logging (``journal_mode=WAL``)
``EXAMPLE_PGHOST``            PostgreSQL host or unix socket directory
``EXAMPLE_PGPORT``            PostgreSQL port (also names the unix socket file)
``EXAMPLE_PGDATABASE``        database name, default ``example``
``EXAMPLE_PGUSER``            database user, default ``postgres``
``EXAMPLE_PGBOUNCER``         ``1`` when the connection goes through pgbouncer
                              in transaction pooling mode
``EXAMPLE_PG_DRIVER``         ``psycopg2`` to use psycopg2 although psycopg 3 is
                              installed (Django prefers psycopg 3)
``EXAMPLE_PG_POOL``           ``1`` for Django's own psycopg 3 connection pool
``EXAMPLE_MYSQL_SOCKET``      MariaDB/MySQL unix socket
``EXAMPLE_MYSQL_DATABASE``    database name, default ``example``
``EXAMPLE_REDIS_SOCKET``      Redis unix socket: the cache, and the sessions, go there
``EXAMPLE_CONN_MAX_AGE``      seconds a connection is kept, default 0
``EXAMPLE_IMPORT_TIME_QUERY`` ``1`` to query the database while apps load
``EXAMPLE_IMPORT_TIME_SESSION`` ``1`` to look a session up while apps load
``EXAMPLE_DEBUG``             ``1`` for Django's debug mode
``EXAMPLE_SERVER_LOG``        the server's log file, for the home page to show
                              the fork-time warning in (bin/demo sets it)
``EXAMPLE_STATUS_PATH``       the server's --status-path, linked from the home page
``EXAMPLE_SECRET_KEY``        overrides the development secret key
"""

import os
import sys
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

# Sessions live in the database (or in Redis, see CACHES), so every logged-in
# request reads a row that belongs to one user: a connection shared between
# processes shows up as a wrong or missing user.
SESSION_ENGINE = "django.contrib.sessions.backends.db"

CONN_MAX_AGE = int(os.environ.get("EXAMPLE_CONN_MAX_AGE", "0"))

if os.environ.get("EXAMPLE_PG_DRIVER") == "psycopg2":
    # Django takes psycopg 3 whenever it can import it.
    sys.modules["psycopg"] = None


def _postgres() -> dict:
    database = {
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
    if _env_flag("EXAMPLE_PG_POOL"):
        # The pool keeps the connections; Django refuses persistent ones with it.
        database["OPTIONS"] = {"pool": True}
        database["CONN_MAX_AGE"] = 0
    return database


def _mysql() -> dict:
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ.get("EXAMPLE_MYSQL_DATABASE", "example"),
        "USER": "root",
        "CONN_MAX_AGE": CONN_MAX_AGE,
        "OPTIONS": {"unix_socket": os.environ.get("EXAMPLE_MYSQL_SOCKET", ""),
                    "charset": "utf8mb4"},
    }


def _sqlite() -> dict:
    database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        "CONN_MAX_AGE": CONN_MAX_AGE,
    }
    if _env_flag("EXAMPLE_SQLITE_WAL"):
        # Readers and the writer no longer block each other; IMMEDIATE takes
        # the write lock at BEGIN, so concurrent writers wait instead of failing.
        database["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL",
                               "transaction_mode": "IMMEDIATE"}
    return database


DATABASES = {
    "default": {"postgres": _postgres, "mysql": _mysql, "sqlite": _sqlite}[
        os.environ.get("EXAMPLE_DB", "sqlite")]()
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("EXAMPLE_REDIS_SOCKET"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "unix://" + os.environ["EXAMPLE_REDIS_SOCKET"],
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"

IMPORT_TIME_QUERY = _env_flag("EXAMPLE_IMPORT_TIME_QUERY")
IMPORT_TIME_SESSION = _env_flag("EXAMPLE_IMPORT_TIME_SESSION")
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

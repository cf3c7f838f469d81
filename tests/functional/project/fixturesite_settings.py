"""A minimal Django project for process-level tests (SQLite, no web server needed)."""

import os

SECRET_KEY = "functional-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "fixturesite_urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "safefcgi"]
MIDDLEWARE = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("FIXTURESITE_DB", ":memory:"),
    }
}
USE_TZ = True
# Unset: Django's plain handler. fixturesite_wsgi.application: the wrapped one.
WSGI_APPLICATION = os.environ.get("FIXTURESITE_WSGI_APPLICATION")
SAFEFCGI_BEFORE_FORK = [p for p in os.environ.get("FIXTURESITE_BEFORE", "").split(",") if p]
SAFEFCGI_AFTER_FORK = [p for p in os.environ.get("FIXTURESITE_AFTER", "").split(",") if p]

if os.environ.get("FIXTURESITE_START_THREAD"):  # a settings module that starts a thread
    import fixturesite_threads

    fixturesite_threads.start()

SAFEFCGI_CHILD_EXIT = [p for p in os.environ.get("FIXTURESITE_CHILD_EXIT", "").split(",") if p]

# A project's own LOGGING, as many are written (FIXTURESITE_LOGGING picks one).
_NULL_HANDLER = {"null": {"class": "logging.NullHandler"}}
_PROJECT_LOGGING = {
    # disable_existing_loggers left out: dictConfig then defaults it to True.
    "plain": {"version": 1, "handlers": _NULL_HANDLER,
              "root": {"handlers": ["null"], "level": "WARNING"}},
    # A project that takes the safefcgi logger and the root for itself.
    "takes-safefcgi": {"version": 1, "handlers": _NULL_HANDLER,
                       "loggers": {"safefcgi": {"handlers": ["null"], "level": "CRITICAL",
                                                "propagate": True}},
                       "root": {"handlers": ["null"], "level": "CRITICAL"}},
}
if os.environ.get("FIXTURESITE_LOGGING"):
    LOGGING = _PROJECT_LOGGING[os.environ["FIXTURESITE_LOGGING"]]

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

"""The fixture project, with things opened at import time for `safefcgi check` to find."""

import os

from fixturesite_settings import *  # noqa: F403

ROOT_URLCONF = "doctorsite_urls"
DATABASES = {  # a file, so that the connection stays open after import
    "default": {"ENGINE": "django.db.backends.sqlite3",
                "NAME": os.environ.get("DOCTORSITE_DB", "/tmp/doctorsite.sqlite3")},
}
if os.environ.get("DOCTORSITE_LOCMEM_SESSIONS"):
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DEBUG = bool(os.environ.get("DOCTORSITE_DEBUG"))
if os.environ.get("DOCTORSITE_MEMCACHED"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                          "LOCATION": os.environ["DOCTORSITE_MEMCACHED"]}}

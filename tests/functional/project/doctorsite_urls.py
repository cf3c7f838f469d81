"""URLs whose import does what real projects do by accident."""

import os
import socket

from django.db import connection
from fixturesite_urls import urlpatterns  # noqa: F401

if os.environ.get("DOCTORSITE_IMPORT_QUERY"):
    with connection.cursor() as cursor:  # DOCTOR-QUERY-LINE (connects here)
        cursor.execute("SELECT 1")

if os.environ.get("DOCTORSITE_CACHE_PORT"):
    cache_client = socket.create_connection(  # DOCTOR-SOCKET-LINE
        ("127.0.0.1", int(os.environ["DOCTORSITE_CACHE_PORT"])))

if os.environ.get("DOCTORSITE_MEMCACHED"):
    from django.core.cache import cache

    cache.get("warm-up")  # DOCTOR-CACHE-LINE (the cache client connects here)

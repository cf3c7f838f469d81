import logging
import os
from importlib import import_module

from django.apps import AppConfig
from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created

logger = logging.getLogger(__name__)

# How each database names the server session a connection talks to.
BACKEND_ID_QUERIES = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
# What the import-time query saw: the process that ran it and the server
# session that answered it. A child inherits this record from the master, so
# the demo page can set it next to the child's own.
import_time_query: dict = {}


def backend_id(cursor):
    """The server session behind ``cursor``'s connection (None for SQLite)."""
    query = BACKEND_ID_QUERIES.get(connection.vendor)
    if query is None:
        return None
    cursor.execute(query)
    return cursor.fetchone()[0]


def remember_opener(sender, connection, **kwargs) -> None:
    """Note which process opened (or took from a pool) the connection Django now holds.

    A server process that answers over a connection it did not open inherited
    it across fork. Kept on Django's wrapper: sqlite3 connections take no
    attributes and no weak references.
    """
    connection.example_opened_by = os.getpid()


class NotesConfig(AppConfig):
    name = "notes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(remember_opener, dispatch_uid="notes.remember_opener")
        # Real projects do this by accident: a cache warm-up or a settings
        # lookup that touches the database while the app is imported.  Under
        # a prefork server the query runs in the master, so the connection it
        # opens exists before the first fork.  The tests and the demo switch it
        # on to reproduce exactly that situation.
        if settings.IMPORT_TIME_QUERY:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
                import_time_query.update(pid=os.getpid(), backend=backend_id(cursor))
            logger.info("queried the database while the app was loading")
        # The same with the session store (a cache when sessions live in Redis).
        if settings.IMPORT_TIME_SESSION:
            store = import_module(settings.SESSION_ENGINE).SessionStore
            store().exists("warm-up")
            logger.info("looked a session up while the app was loading")

import logging
import os

from django.apps import AppConfig
from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created

logger = logging.getLogger(__name__)

# What the import-time query saw: the process that ran it and, on PostgreSQL,
# the server process (backend) that answered it. A child inherits this record
# from the master, so the demo page can set it next to the child's own.
import_time_query: dict = {}
# The process each database connection was opened in, by alias; rewritten by
# every process that opens a connection of its own.
opened_in: dict[str, int] = {}


def _remember_opener(sender, connection, **kwargs) -> None:
    opened_in[connection.alias] = os.getpid()


def backend_pid(cursor) -> int | None:
    """The PostgreSQL server process behind ``cursor``'s connection (None elsewhere)."""
    if connection.vendor != "postgresql":
        return None
    cursor.execute("SELECT pg_backend_pid()")
    return cursor.fetchone()[0]


class NotesConfig(AppConfig):
    name = "notes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(_remember_opener)
        # Real projects do this by accident: a cache warm-up or a settings
        # lookup that touches the database while the app is imported.  Under
        # a prefork server the query runs in the master, so the connection it
        # opens exists before the first fork.  The tests and the demo switch
        # it on to reproduce exactly that situation.
        if settings.IMPORT_TIME_QUERY:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
                import_time_query.update(pid=os.getpid(), backend=backend_pid(cursor))
            logger.info("queried the database while the app was loading")

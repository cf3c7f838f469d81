import logging

from django.apps import AppConfig
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


class NotesConfig(AppConfig):
    name = "notes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Real projects do this by accident: a cache warm-up or a settings
        # lookup that touches the database while the app is imported.  Under
        # a prefork server the query runs in the master, so the connection it
        # opens exists before the first fork.  The tests switch it on to
        # reproduce exactly that situation.
        if settings.IMPORT_TIME_QUERY:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            logger.info("queried the database while the app was loading")

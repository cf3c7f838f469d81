"""The fixture project's wsgi.py, wrapping Django's handler as real projects do.

An error reporter, a static-files server or, here, a middleware that adds a
response header: whatever WSGI_APPLICATION names must be what serves.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixturesite_settings")


class AddHeader:
    """WSGI middleware: an ``X-Wrapped-By`` header on every response."""

    def __init__(self, application, value: str):
        self.application = application
        self.value = value

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, ("X-Wrapped-By", self.value)], exc_info)

        return self.application(environ, start)


django_application = get_wsgi_application()
application = AddHeader(django_application, "wsgi.py")
alternative = AddHeader(django_application, "alternative")

if os.environ.get("FIXTURESITE_WSGI_QUERY"):
    # A query while wsgi.py is imported: under a prefork server, in the parent.
    from django.db import connection

    with connection.cursor() as cursor:  # WSGI-QUERY-LINE: connects
        cursor.execute("SELECT 1")

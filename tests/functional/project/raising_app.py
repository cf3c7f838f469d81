"""A WSGI-level failure Django would never let through: the application raises."""

import django.core.handlers.wsgi


def broken_application(environ, start_response):
    raise RuntimeError("secret-detail-in-traceback")


def install(server=None):
    django.core.handlers.wsgi.WSGIHandler.__call__ = lambda self, e, s: broken_application(e, s)

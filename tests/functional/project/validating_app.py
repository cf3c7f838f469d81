"""Wrap Django's WSGI handler in wsgiref.validate: every request is checked against PEP 3333."""

import warnings
from wsgiref.validate import WSGIWarning, validator

import django.core.handlers.wsgi


def install(server=None):
    # A warning from the validator becomes an error, and so a 500 the test sees.
    warnings.simplefilter("error", WSGIWarning)
    original = django.core.handlers.wsgi.WSGIHandler.__call__

    def validated(self, environ, start_response):
        return validator(lambda e, s: original(self, e, s))(environ, start_response)

    django.core.handlers.wsgi.WSGIHandler.__call__ = validated

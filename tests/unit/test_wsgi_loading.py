"""Finding Django's handler inside a project's WSGI wrappers, and naming the callable."""

import functools

import pytest
from django.core.handlers.wsgi import WSGIHandler

from safefcgi.config import cast_option
from safefcgi.errors import ConfigError
from safefcgi.forksafety.lifecycle import django_handler_of


def bare_handler() -> WSGIHandler:
    """A WSGIHandler without its middleware (which would need settings): only its type counts."""
    return WSGIHandler.__new__(WSGIHandler)


class Middleware:
    """Keeps the wrapped application as an attribute, as WhiteNoise and Sentry do."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def closure_middleware(app):
    def wrapped(environ, start_response):
        return app(environ, start_response)
    return wrapped


def decorated_middleware(app):
    @functools.wraps(app)
    def wrapped(environ, start_response):
        return app(environ, start_response)
    return wrapped


def test_the_plain_handler_is_its_own_handler():
    handler = bare_handler()
    assert django_handler_of(handler) is handler


def test_the_handler_is_found_through_attribute_closure_and_method_wrappers():
    handler = bare_handler()
    application = Middleware(closure_middleware(Middleware(handler).__call__))
    assert django_handler_of(application) is handler


def test_the_handler_is_found_behind_functools_wraps():
    handler = bare_handler()
    assert django_handler_of(decorated_middleware(Middleware(handler))) is handler


def test_an_application_without_django_has_no_handler():
    def application(environ, start_response):
        return [b""]
    assert django_handler_of(Middleware(application)) is None


def test_a_wrapper_that_refers_to_itself_ends_the_search():
    wrapper = Middleware(None)
    wrapper.app = wrapper
    assert django_handler_of(wrapper) is None


@pytest.mark.parametrize("value", ["mysite.wsgi:application", "mysite.wsgi.application",
                                   "wsgi:app"])
def test_wsgi_app_takes_both_spellings(value):
    assert cast_option("wsgi_app", value) == value


@pytest.mark.parametrize("value", ["application", "my site.wsgi:app", "mysite.wsgi:",
                                   ":app", "mysite.wsgi:app.attr", "mysite..wsgi:app"])
def test_wsgi_app_refuses_what_cannot_name_a_callable(value):
    with pytest.raises(ConfigError, match="expected MODULE:CALLABLE"):
        cast_option("wsgi_app", value)

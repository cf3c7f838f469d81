"""Django around fork: load the project once, and never let children share a socket.

The parent imports the project; anything that queried the database (or a
cache) during that import left a socket open. A child that inherits it shares
one server session with the parent and every sibling: they read each other's
results, and the first one to close it sends Terminate and kills it for all.

So: the parent closes everything right before each fork, and each child
discards whatever it still inherited *without sending a byte* on it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from safefcgi.errors import AppLoadError

log = logging.getLogger("safefcgi.django")

# Objects whose destructors must never run in this process: dropping the last
# reference to an inherited driver object would close it, and closing talks to
# the server on the socket the parent and siblings still use.
_QUARANTINE: list[object] = []

BUILTIN_SESSION_ENGINES = "django.contrib.sessions.backends."


# -- loading the project (parent, once) ---------------------------------------

def load_application(settings_module: str, wsgi_app: str | None = None) -> Any:
    """Import the project like the first request would, so children share the work.

    The application served is the one the project names, as runserver and
    runfcgi took it: ``wsgi_app`` when given, else ``settings.WSGI_APPLICATION``,
    else Django's plain handler. A wsgi.py that wraps Django's handler (an
    error reporter, a static-files or header middleware) is served through
    its wrapper.
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    _require_module(settings_module)
    try:
        import django
        from django.conf import settings
        from django.urls import get_resolver

        django.setup(set_prefix=False)  # as manage.py has done before runserver loads it
        app_path = wsgi_app or settings.WSGI_APPLICATION
    # Importing a project runs arbitrary user code; whatever it raises is a load failure.
    except Exception as exc:  # noqa: BLE001
        raise _load_failure(f"the Django project of {settings_module}", exc) from exc
    source = "--wsgi-app" if wsgi_app else "WSGI_APPLICATION"
    what = f"{source} {app_path}" if app_path else f"the Django project of {settings_module}"
    try:
        application = import_wsgi_application(app_path) if app_path else _django_handler()
        get_resolver().url_patterns  # noqa: B018 - imports urls.py and every view now
    except WSGIAppNotFound as exc:  # a wrong name: no traceback of ours to show
        raise AppLoadError(f"cannot load {what}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code, as above
        raise _load_failure(what, exc) from exc
    if app_path:
        log.info("serving %s %s", source, app_path)
    return application


def _load_failure(what: str, exc: Exception) -> AppLoadError:
    log.error("loading %s failed", what, exc_info=exc)
    return AppLoadError(f"cannot load {what}: {type(exc).__name__}: {exc}")


def _django_handler() -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


class WSGIAppNotFound(Exception):
    """The named module or attribute does not exist, or is not callable."""


def import_wsgi_application(path: str) -> Any:
    """The callable named ``module:name`` (or ``module.name``, as in WSGI_APPLICATION)."""
    module_name, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_package_of(exc.name, module_name):
            raise  # the module exists; something it imports does not
        raise WSGIAppNotFound(f"no module named {exc.name} on sys.path "
                              "(add the project directory with --pythonpath)") from None
    application = getattr(module, name, None)
    if application is None:
        raise WSGIAppNotFound(f"module {module_name} has no attribute {name!r}")
    if not callable(application):
        raise WSGIAppNotFound(f"{name} is a {type(application).__name__}, not a WSGI callable")
    return application


def _is_package_of(missing: str, module_name: str) -> bool:
    """True when ``missing`` is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")


def django_handler_of(application: Any) -> Any | None:
    """Django's WSGIHandler inside a project's WSGI wrappers, or None.

    Wrappers keep the application they wrap as an attribute (WhiteNoise's
    ``application``, Sentry's ``app``, ``__wrapped__``) or in a closure; the
    search looks a few levels deep through both.
    """
    from django.core.handlers.wsgi import WSGIHandler

    level, seen = [application], set()
    for _ in range(WRAPPER_SEARCH_DEPTH):
        found = next((item for item in level if isinstance(item, WSGIHandler)), None)
        if found is not None:
            return found
        inner = []
        for item in level:
            if id(item) not in seen:
                seen.add(id(item))
                inner.extend(_wrapped_callables(item))
        level = inner
    return None


WRAPPER_SEARCH_DEPTH = 5


def _wrapped_callables(wrapper: Any) -> list[Any]:
    """Callables a wrapper holds: its attributes' values and its closure's cells."""
    function = getattr(wrapper, "__func__", wrapper)  # a bound method's function
    held = list(getattr(wrapper, "__dict__", {}).values())
    if hasattr(wrapper, "__self__"):
        held.append(wrapper.__self__)
    for cell in getattr(function, "__closure__", None) or ():
        with contextlib.suppress(ValueError):  # an empty cell
            held.append(cell.cell_contents)
    return [value for value in held if callable(value)]


def check_settings_module(settings_module: str) -> None:
    """--lazy: the parent only makes sure the settings module can be found (no import)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    _require_module(settings_module)


class LazyLoad:
    """--lazy: the child's first after-fork hook imports the project, in the child.

    The parent never imports it, so nothing the project starts at import (a
    thread, a connection) exists before a fork; each child pays the import.
    The project's own SAFEFCGI_AFTER_FORK hooks are read from its settings
    here, in the child, since the parent never read them.
    """

    def __init__(self, settings_module: str, wsgi_app: str | None = None):
        self.settings_module = settings_module
        self.wsgi_app = wsgi_app

    def __call__(self, server: Any) -> None:
        from safefcgi import logs
        from safefcgi.forksafety.hooks import load_hooks

        server.app.application = load_application(self.settings_module, self.wsgi_app)
        logs.reclaim()  # the project's LOGGING ran with its import, here in the child
        for hook in load_hooks(settings_hook_paths("SAFEFCGI_AFTER_FORK")):
            hook.func(server)


def _require_module(dotted: str) -> None:
    try:
        found = importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:
        found = False
    except ImportError as exc:
        raise AppLoadError(f"cannot import settings module {dotted}: {exc}") from None
    if not found:
        raise AppLoadError(
            f"settings module {dotted} not found on sys.path "
            "(add the project directory with --pythonpath)"
        )


def settings_hook_paths(name: str) -> tuple[str, ...]:
    """Dotted hook paths listed in the project's settings (SAFEFCGI_BEFORE_FORK, ...)."""
    from django.conf import settings

    value = getattr(settings, name, ())
    if isinstance(value, str):
        value = (value,)
    return tuple(value)


# -- the built-in hooks ----------------------------------------------------------

class DjangoForkSafety:
    """The built-in before-fork and after-fork hooks."""

    def __init__(self, application: Any = None):
        self.application = application
        self._warned_about_import_time_queries = False

    def before_fork(self, server: Any = None) -> None:
        """Parent: close every open connection and cache client before a child copies it."""
        open_aliases = close_parent_connections()
        if open_aliases and not self._warned_about_import_time_queries:
            self._warned_about_import_time_queries = True
            names = ", ".join(f"'{alias}'" for alias in open_aliases)
            log.warning(
                "database connection %s was open at fork time: something queried the "
                "database while the app was imported (a query in urls.py, at module level "
                "or in AppConfig.ready()). safefcgi closed it so that every child opens its "
                "own. 'safefcgi check %s' shows the file and line that opened it",
                names, os.environ.get("DJANGO_SETTINGS_MODULE", "SETTINGS_MODULE"))
        close_parent_caches()

    def after_fork(self, server: Any = None) -> None:
        """Child: drop everything inherited, silently, so first use opens our own."""
        discard_inherited_connections()
        discard_inherited_pools()
        reset_caches()
        reset_session_engine(self.application)


# -- database connections -----------------------------------------------------------

def close_parent_connections() -> list[str]:
    """Close the parent's open connections; return the aliases that were open.

    Lenient on purpose: a connection the server or pgbouncer already dropped
    raises InterfaceError/OperationalError on close, and that must not stop a fork.
    """
    from django.db import Error as DatabaseError
    from django.db import connections

    was_open = []
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            was_open.append(conn.alias)
            try:
                conn.close()
            except DatabaseError as exc:
                log.info("closing dead connection %r: %s", conn.alias, exc)
            _forget_connection(conn)
        _close_pool(conn)
    return was_open


def _close_pool(conn: Any) -> None:
    """Django 5.1+ keeps psycopg pools at class level; close ours before forking."""
    pools = getattr(type(conn), "_connection_pools", None)
    if pools and conn.alias in pools:
        try:
            conn.close_pool()
        except Exception as exc:  # noqa: BLE001 - psycopg_pool errors vary; never block a fork
            log.warning("closing connection pool %r failed: %s", conn.alias, exc)


def discard_inherited_connections() -> None:
    """Child: make every inherited connection harmless, then forget it."""
    from django.db import Error as DatabaseError
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is None:
            continue
        if neutralise_socket_of(raw):
            # Its fd now points at /dev/null: the driver's goodbye goes nowhere,
            # and closing releases the fd number.
            with contextlib.suppress(DatabaseError):
                conn.close()
        else:
            _QUARANTINE.append(raw)
        _forget_connection(conn)


def _forget_connection(conn: Any) -> None:
    """Leave the Django wrapper as if it had never connected."""
    conn.connection = None
    conn.in_atomic_block = False
    conn.savepoint_ids = []
    conn.atomic_blocks = []
    conn.needs_rollback = False
    conn.closed_in_transaction = False
    conn.run_on_commit = []
    conn.close_at = None
    conn.errors_occurred = False


def discard_inherited_pools() -> None:
    """Child: forget class-level psycopg pools without closing their connections."""
    from django.db import connections

    seen: set[int] = set()
    for conn in connections.all(initialized_only=True):
        pools = getattr(type(conn), "_connection_pools", None)
        if pools is None or id(pools) in seen:
            continue
        seen.add(id(pools))
        for alias in list(pools):
            pool = pools.pop(alias)
            for pooled in list(getattr(pool, "_pool", ())):
                neutralise_socket_of(pooled)
            _QUARANTINE.append(pool)


def neutralise_socket_of(raw_connection: Any) -> bool:
    """Point a driver connection's socket fd at /dev/null; False if it has no fd.

    dup2 keeps the fd number taken, so no new socket can land on it before the
    driver closes it, and nothing the driver sends reaches the shared session.
    """
    fileno = getattr(raw_connection, "fileno", None)
    if fileno is None:
        return False
    try:
        fd = fileno()
    except Exception:  # noqa: BLE001 - drivers raise their own types for a closed conn
        return False
    if not isinstance(fd, int) or fd < 0:
        return False
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return True


# -- caches and sessions -------------------------------------------------------------

def close_parent_caches() -> None:
    """Parent: close initialised cache backends (memcached/redis clients hold sockets)."""
    from django.core.cache import caches

    for backend in caches.all(initialized_only=True):
        try:
            backend.close()
        # Cache client libraries raise their own error types; a failed close must not
        # stop the fork, the child builds its own backend anyway.
        except Exception as exc:  # noqa: BLE001
            log.warning("closing cache backend %s failed: %s", type(backend).__name__, exc)


def reset_caches() -> None:
    """Child: fresh cache backend objects, so no client socket is shared."""
    from asgiref.local import Local
    from django.core.cache import caches

    _QUARANTINE.extend(caches.all(initialized_only=True))
    caches._connections = Local(caches.thread_critical)


def reset_session_engine(application: Any) -> None:
    """Child: a session engine of its own.

    Django's engines keep no client of their own (cache-backed ones look the
    cache up per store, and reset_caches() renewed those); a third-party engine
    may create a client at import, so its module is imported afresh and the
    session middleware pointed at the new store class.
    """
    from django.conf import settings

    engine = getattr(settings, "SESSION_ENGINE", "")
    if not engine or engine.startswith(BUILTIN_SESSION_ENGINES) or engine not in sys.modules:
        return
    _QUARANTINE.append(sys.modules.pop(engine))
    fresh = importlib.import_module(engine)
    from django.contrib.sessions.middleware import SessionMiddleware

    for middleware in iter_middleware(django_handler_of(application)):
        if isinstance(middleware, SessionMiddleware):
            middleware.SessionStore = fresh.SessionStore


def iter_middleware(application: Any) -> Iterator[Any]:
    """Walk a WSGIHandler's middleware chain, outermost first."""
    current = getattr(application, "_middleware_chain", None)
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if hasattr(current, "get_response") and not callable(getattr(current, "__wrapped__",
                                                                       None)):
            yield current
            current = current.get_response
        else:
            current = getattr(current, "__wrapped__", None)

"""Start-up in order: load the project, bind, detach, then hand over to a master."""

from __future__ import annotations

import logging
import os
import sys

from . import django_lifecycle
from .config import ServerConfig
from .errors import EXIT_OK
from .hooks import ForkHooks, Hook, load_hooks
from .master import PreforkMaster
from .process import change_directory, daemonize, pidfile, redirect_output
from .protocol import FastCGIApplication, Limits, ThreadedFastCGIServer
from .sockets import open_listener

log = logging.getLogger("safefcgi.server")


def serve(config: ServerConfig) -> int:
    """Run a server for ``config`` until it is told to stop; return the exit status.

    Everything that can fail because of the user's input (settings module,
    hooks, socket) fails here, on the terminal, before detaching or forking.
    """
    extend_sys_path(config.pythonpath)
    application = django_lifecycle.load_application(config.settings_module)
    hooks = build_fork_hooks(config, application) if config.method == "prefork" else None
    if config.umask is not None:
        os.umask(config.umask)  # as runfcgi did: for the socket file and the app's files
    listener = open_listener(config.address)
    try:
        redirect_output(config.outlog, config.errlog)
        if config.daemonize:
            daemonize()
        change_directory(config.workdir)
        with pidfile(config.pidfile):
            log.info("safefcgi serving %s on %s (%s, pid %d)", config.settings_module,
                     listener.description, config.method, os.getpid())
            if config.method == "threaded":
                return serve_threaded(config, application, listener.sock)
            return serve_prefork(config, application, listener.sock, hooks)
    finally:
        listener.close()


def extend_sys_path(directories: tuple[str, ...]) -> None:
    """Put --pythonpath entries (and the current directory, as manage.py does) first."""
    for directory in reversed((os.getcwd(), *directories)):
        absolute = os.path.abspath(directory)
        if absolute not in sys.path:
            sys.path.insert(0, absolute)


def build_fork_hooks(config: ServerConfig, application: object) -> ForkHooks:
    """Built-in Django hooks first, then the settings' lists, then the command line's."""
    safety = django_lifecycle.DjangoForkSafety(application)
    before = [Hook("safefcgi.django_lifecycle.before_fork", safety.before_fork)]
    after = [Hook("safefcgi.django_lifecycle.after_fork", safety.after_fork)]
    before += load_hooks(django_lifecycle.settings_hook_paths("SAFEFCGI_BEFORE_FORK"))
    after += load_hooks(django_lifecycle.settings_hook_paths("SAFEFCGI_AFTER_FORK"))
    before += load_hooks(config.before_fork)
    after += load_hooks(config.after_fork)
    return ForkHooks(before_fork=before, after_fork=after)


def serve_prefork(config: ServerConfig, application: object, sock, hooks: ForkHooks) -> int:
    app = FastCGIApplication(application, debug=config.debug, multithreaded=False,
                             max_connections=config.maxchildren, limits=protocol_limits(config),
                             script_name=config.script_name)
    return PreforkMaster(config, sock, app, hooks).run()


def serve_threaded(config: ServerConfig, application: object, sock) -> int:
    server = ThreadedFastCGIServer(application, debug=config.debug,
                                   min_spare=config.minspare, max_spare=config.maxspare,
                                   max_threads=config.thread_limit,
                                   limits=protocol_limits(config),
                                   script_name=config.script_name)
    server.serve_forever(sock)
    log.info("threaded server stopped")
    return EXIT_OK


def protocol_limits(config: ServerConfig) -> Limits:
    return Limits(max_params_bytes=config.max_params_bytes,
                  max_body_bytes=config.max_body_bytes, read_timeout=config.read_timeout)

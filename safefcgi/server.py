"""Start-up in order: load the project, bind, detach, then hand over to a master.

After a reload (SIGHUP) the master re-executes this same start-up with a
handover in its environment: it then adopts the listening socket and the
old children instead of binding and detaching again (see reload.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys

from safefcgi import logs
from safefcgi.config import ServerConfig, listen_address, protocol_limits
from safefcgi.errors import EXIT_OK, SafeFCGIError
from safefcgi.fastcgi.protocol import FastCGIApplication
from safefcgi.forksafety import lifecycle, threads
from safefcgi.forksafety.doctor import check_project, print_report
from safefcgi.forksafety.hooks import ForkHooks, Hook, load_hooks
from safefcgi.ops.operability import Operability
from safefcgi.process import signals, systemd
from safefcgi.process.daemon import (
    change_directory,
    check_pidfile,
    daemonize,
    pidfile,
    redirect_output,
    remove_pidfile,
)
from safefcgi.process.master import InheritedChild, PreforkMaster
from safefcgi.process.peers import PeerFilter, peer_filter
from safefcgi.process.privileges import children_identity, drop_privileges, resolve_owner
from safefcgi.process.reload import Handover, Reloader, is_probe, take_handover
from safefcgi.process.sockets import (
    Listener,
    adopt_fd,
    open_listener,
    remove_socket_file,
    set_socket_access,
)
from safefcgi.process.threaded import ThreadedFastCGIServer

log = logging.getLogger("safefcgi.server")


def serve(config: ServerConfig) -> int:
    """Run a server for ``config`` until it is told to stop; return the exit status.

    Everything that can fail because of the user's input (settings module,
    hooks, socket, users) fails here, on the terminal, before detaching or forking.
    """
    ignore_master_signals()
    if is_probe():
        logs.set_role("probe")
    handover = take_handover()
    if handover is not None:  # the socket and the old children are ours already
        signals.hold()
    signals.unblock()  # blocked across the exec of a reload (see reload.py)
    try:
        return _serve(config, handover)
    except signals.StopNow as exc:
        log.info("%s while starting: stopped before serving", exc)
        if handover is not None:
            abandon_handover(handover, config.pidfile)
        return EXIT_OK


def _serve(config: ServerConfig, handover: Handover | None) -> int:
    launch_dir = handover.launch_dir if handover else os.getcwd()
    extend_sys_path(config.pythonpath)
    identity = children_identity(config.user, config.group, config.allow_root)
    if config.lazy and not is_probe():  # the probe checks that the new code loads
        lifecycle.check_settings_module(config.settings_module)
        application, hooks = None, build_lazy_hooks(config)
    else:
        application = lifecycle.load_application(config.settings_module, config.wsgi_app)
        # The project's LOGGING ran with its import: safefcgi's lines stay safefcgi's.
        logs.reclaim()
        hooks = build_fork_hooks(config, application) if config.method == "prefork" else None
    if is_probe():
        log.info("reload probe: the new code of %s loads", config.settings_module)
        return EXIT_OK
    if config.method == "prefork":
        threads.warn_about_threads(config.settings_module)  # before any fork, daemon's too
    # From here on there is something to clean up: a stop signal waits for the server.
    signals.hold()
    if handover is None:
        check_pidfile(config.pidfile)
    if config.umask is not None:
        os.umask(config.umask)  # as runfcgi did: for the socket file and the app's files
    listener = acquire_listener(config, handover)
    ops = Operability.from_config(config)
    status_listener = None
    try:
        status_listener = open_status_listener(config)
        if status_listener is not None:
            ops.status_socket = status_listener.sock
        peers = _peer_filter(config, listener)
        redirect_output(config.outlog, config.errlog)
        # Before daemonizing and dropping privileges: relative paths and root-owned
        # log directories work as they did for --errlog.
        ops.open()
        if config.daemonize and handover is None:
            daemonize()
        change_directory(config.workdir)
        with pidfile(config.pidfile):
            log.info("safefcgi serving %s on %s (%s, pid %d)", config.settings_module,
                     listener.description, config.method, os.getpid())
            if config.method == "threaded":
                drop_privileges(identity)  # this process serves: it must not stay root
                return serve_threaded(config, application, listener, peers=peers, ops=ops)
            reloader = Reloader(launch_dir, listener.sock, listener.description,
                                listener.unix_path, listener.unix_inode)
            inherited = [InheritedChild(pid, fd) for pid, fd in handover.children] \
                if handover else []
            return serve_prefork(config, application, listener, hooks, identity=identity,
                                 peers=peers, reloader=reloader, inherited=inherited, ops=ops,
                                 **kept_handover(handover))
    finally:
        ops.close()
        if status_listener is not None:
            status_listener.close()
        listener.close()


def kept_handover(handover: Handover | None) -> dict[str, object]:
    """The idle kept-open connections and the ready queue a re-executed master takes over."""
    if handover is None or len(handover.queue) != 2:
        return {}
    queue = tuple(socket.socket(fileno=fd) for fd in handover.queue)
    for sock in queue:
        sock.set_inheritable(False)
        sock.setblocking(False)
    for fd, _ in handover.kept:
        os.set_inheritable(fd, False)
    return {"kept": handover.kept, "queue": queue}


def open_status_listener(config: ServerConfig) -> Listener | None:
    """--status-listen: bound here, with the main socket, so a taken address fails start-up."""
    if config.status_listen is None:
        return None
    status_listener = open_listener(listen_address(config.status_listen))
    log.info("the master answers the status page on %s", status_listener.description)
    return status_listener


def check_startup(config: ServerConfig) -> int:
    """``--check-config``: what start-up checks before binding, then stop; nothing is served.

    The project is imported as the master imports it (and what that import left open
    is reported, as ``safefcgi check`` does), the children's user is looked up and the
    fork hooks are loaded. No socket is bound, no file written, nothing forked.
    """
    extend_sys_path(config.pythonpath)
    children_identity(config.user, config.group, config.allow_root)
    report = check_project(config.settings_module, config.wsgi_app)
    if config.method == "prefork":
        for setting in ("SAFEFCGI_BEFORE_FORK", "SAFEFCGI_AFTER_FORK", *MASTER_HOOK_SETTINGS):
            load_hooks(lifecycle.settings_hook_paths(setting))
        load_hooks(config.before_fork + config.after_fork + config.child_exit
                   + config.when_ready + config.on_reload)
    print_report(report)
    log.info("configuration checked: %s imports and would be served", config.settings_module)
    return EXIT_OK


def abandon_handover(handover: Handover, pidfile_path: str | None) -> None:
    """Stop now during a reload's start-up: kill the old children, remove what was ours."""
    for pid, _ in handover.children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid, _ in handover.children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if handover.unix_path is not None:
        remove_socket_file(handover.unix_path, handover.unix_inode)
    remove_pidfile(pidfile_path)


def ignore_master_signals() -> None:
    """Until the master handles them, HUP/USR1/TTIN/TTOU must not kill or stop us.

    Their default actions terminate (HUP, USR1) or stop (TTIN, TTOU) the
    process; a second ``systemctl reload`` arriving while a re-executed
    master imports the project would otherwise end the service.
    """
    # SIGUSR2 is how the master asks a child for its stack (--slowlog-timeout); sent to
    # the whole process group it must not kill the master.
    for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def acquire_listener(config: ServerConfig, handover: Handover | None) -> Listener:
    """The socket of our previous image, else systemd's, else one we bind now."""
    if handover is not None:
        return adopt_fd(handover.listener_fd, handover.description, handover.unix_path,
                        handover.unix_inode)
    passed = systemd.activation_fds()
    if passed:
        if len(passed) > 1:
            log.warning("systemd passed %d sockets; serving the first only", len(passed))
        listener = adopt_fd(passed[0])
        log.info("using the socket passed by systemd: %s", listener.description)
        return listener
    listener = open_listener(config.address)
    owner = resolve_owner(config.socket_owner) if config.socket_owner else None
    set_socket_access(listener, config.socket_mode, owner)
    return listener


def _peer_filter(config: ServerConfig, listener: Listener):
    try:
        peers = peer_filter(config.allowed_clients, listener.is_tcp)
    except ValueError as exc:
        raise SafeFCGIError(f"bad FCGI_WEB_SERVER_ADDRS: {exc}") from None
    if peers is not None:
        log.info("accepting connections only from %s (%s)",
                 ", ".join(map(str, peers.networks)), peers.source)
    return peers


def extend_sys_path(directories: tuple[str, ...]) -> None:
    """Put --pythonpath entries (and the current directory, as manage.py does) first."""
    for directory in reversed((os.getcwd(), *directories)):
        absolute = os.path.abspath(directory)
        if absolute not in sys.path:
            sys.path.insert(0, absolute)


MASTER_HOOKS = ("child_exit", "when_ready", "on_reload")
MASTER_HOOK_SETTINGS = tuple(f"SAFEFCGI_{name.upper()}" for name in MASTER_HOOKS)


def build_fork_hooks(config: ServerConfig, application: object) -> ForkHooks:
    """Built-in Django hooks first, then the settings' lists, then the command line's."""
    safety = lifecycle.DjangoForkSafety(application)
    before = [Hook("safefcgi.forksafety.lifecycle.before_fork", safety.before_fork)]
    after = [Hook("safefcgi.forksafety.lifecycle.after_fork", safety.after_fork)]
    before += load_hooks(lifecycle.settings_hook_paths("SAFEFCGI_BEFORE_FORK"))
    after += load_hooks(lifecycle.settings_hook_paths("SAFEFCGI_AFTER_FORK"))
    before += load_hooks(config.before_fork)
    after += load_hooks(config.after_fork)
    master_hooks = {name: load_hooks(lifecycle.settings_hook_paths(setting))
                    + load_hooks(getattr(config, name))
                    for name, setting in zip(MASTER_HOOKS, MASTER_HOOK_SETTINGS, strict=True)}
    return ForkHooks(before_fork=before, after_fork=after, **master_hooks)


def build_lazy_hooks(config: ServerConfig) -> ForkHooks:
    """--lazy: the settings are never read in the parent, so its hooks come from the
    command line only; each child loads the project first, then the settings' hooks."""
    loader = Hook("safefcgi.forksafety.lifecycle.LazyLoad", lifecycle.LazyLoad(
        config.settings_module, config.wsgi_app))
    return ForkHooks(before_fork=load_hooks(config.before_fork),
                     after_fork=[loader, *load_hooks(config.after_fork)],
                     child_exit=load_hooks(config.child_exit),
                     when_ready=load_hooks(config.when_ready),
                     on_reload=load_hooks(config.on_reload))


def serve_prefork(config: ServerConfig, application: object, listener: Listener,
                  hooks: ForkHooks, **master_options) -> int:
    app = fastcgi_application(config, application, multithreaded=False,
                              max_connections=config.maxchildren)
    master = PreforkMaster(config, listener.sock, app, hooks,
                           stop_accepting=listener.stop_accepting, **master_options)
    return master.run()


def serve_threaded(config: ServerConfig, application: object, listener: Listener, *,
                   peers: PeerFilter | None = None, ops: Operability | None = None) -> int:
    app = fastcgi_application(config, application, multithreaded=True,
                              max_connections=config.thread_limit)
    server = ThreadedFastCGIServer(app, min_spare=config.minspare, max_spare=config.maxspare,
                                   max_threads=config.thread_limit, peers=peers, ops=ops)
    server.serve_forever(listener.sock, graceful_timeout=config.graceful_timeout,
                         stop_accepting=listener.stop_accepting)
    log.info("threaded server stopped")
    return EXIT_OK


def fastcgi_application(config: ServerConfig, application: object, *, multithreaded: bool,
                        max_connections: int) -> FastCGIApplication:
    """The project's WSGI application as the FastCGI layer serves it, for either mode.

    The operator pages go around it in the process that serves (see worker.py).
    """
    return FastCGIApplication(application, debug=config.debug, multithreaded=multithreaded,
                              max_connections=max_connections,
                              limits=protocol_limits(config),
                              script_name=config.script_name)


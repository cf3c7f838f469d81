"""The listening socket: bind it, refuse a taken path, remove what we created."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass

from safefcgi.errors import SocketError

log = logging.getLogger("safefcgi.sockets")

FCGI_LISTENSOCK_FILENO = 0  # where a web server that spawns us passes the socket
LISTEN_BACKLOG = socket.SOMAXCONN


@dataclass
class Listener:
    """A bound, listening socket and what is needed to clean it up on exit."""

    sock: socket.socket
    description: str
    unix_path: str | None = None
    unix_inode: int | None = None

    @property
    def is_tcp(self) -> bool:
        return self.sock.family in (socket.AF_INET, socket.AF_INET6)

    def stop_accepting(self) -> None:
        """On stop, in the master: make new connections be refused once the children let go.

        A unix socket file we created is removed now, so new connections are
        refused at once. A TCP socket is closed in this process, which never
        accepts: the kernel refuses new connections as soon as the last child
        has closed its copy too (children take the queued connections first,
        then close it). Connections already queued keep their place. A socket
        passed by systemd or a web server stays open in its owner (and systemd
        keeps queueing for the next start).
        """
        if self.is_tcp:
            self.sock.close()
        if self.unix_path is None:
            return
        self._unlink_if_ours()
        self.unix_path = None

    def close(self) -> None:
        """Close the socket and remove a unix socket file that we created."""
        self.sock.close()
        if self.unix_path is not None:
            self._unlink_if_ours()

    def _unlink_if_ours(self) -> None:
        remove_socket_file(self.unix_path, self.unix_inode)


def remove_socket_file(path: str, inode: int | None) -> None:
    """Remove the socket file at ``path`` if it is still the one we created (``inode``)."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove socket file %s: %s", path, exc)


def open_listener(address: str | tuple[str, int] | None, umask: int | None = None) -> Listener:
    """Bind and listen on a unix path, a (host, port) pair, or adopt fd 0."""
    if address is None:
        return _adopt_fd0()
    if isinstance(address, str):
        return _bind_unix(address, umask)
    return _bind_tcp(*address)


def set_socket_access(listener: Listener, mode: int | None,
                      owner: tuple[int, int] | None) -> None:
    """--socket-mode and --socket-owner, applied to the socket file we just created."""
    if listener.unix_path is None:
        return
    try:
        if owner is not None:
            os.chown(listener.unix_path, *owner)
        if mode is not None:
            os.chmod(listener.unix_path, mode)
    except OSError as exc:
        listener.close()
        raise SocketError(f"cannot set owner/mode of {listener.unix_path}: "
                          f"{exc.strerror}") from None


def adopt_fd(fd: int, description: str | None = None, unix_path: str | None = None,
             unix_inode: int | None = None) -> Listener:
    """A listening socket we were handed (by systemd, or by our previous image)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketError(f"fd {fd} is not a socket: {exc.strerror}") from None
    sock.set_inheritable(False)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise SocketError(f"the socket passed on fd {fd} is not listening")
    if description is None:
        description = f"fd:{fd} ({_describe_address(sock)})"
    return Listener(sock, description, unix_path=unix_path, unix_inode=unix_inode)


def _describe_address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    return f"tcp:{name[0]}:{name[1]}"


def _bind_unix(path: str, umask: int | None) -> Listener:
    path = os.path.abspath(path)
    _clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(umask) if umask is not None else None
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        # "AF_UNIX path too long" comes without an errno, so strerror is None.
        raise SocketError(f"cannot bind unix socket {path}: {exc.strerror or exc}") from None
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    sock.listen(LISTEN_BACKLOG)
    return Listener(sock, f"unix:{path}", unix_path=path, unix_inode=os.stat(path).st_ino)


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file a crashed server left; refuse one still in use."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketError(f"socket path {path} is taken by a file that is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket file %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        raise SocketError(f"socket path {path} is unusable: {exc.strerror}") from None
    finally:
        probe.close()
    raise SocketError(f"socket path {path} is taken: a running server is listening on it")


def _bind_tcp(host: str, port: int) -> Listener:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SocketError(f"cannot resolve listen address {host}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        reason = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise SocketError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.listen(LISTEN_BACKLOG)
    return Listener(sock, f"tcp:{host}:{port}")


def _adopt_fd0() -> Listener:
    """Serve on the socket a web server passed as stdin (lighttpd bin-path, spawn-fcgi)."""
    try:
        sock = socket.socket(fileno=FCGI_LISTENSOCK_FILENO)
    except OSError:
        raise SocketError(
            "no --socket or --host/--port given, and standard input is not a listening "
            "socket (safefcgi was not spawned by a web server)"
        ) from None
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise SocketError(
            "no --socket or --host/--port given, and standard input is a socket that is "
            "not listening"
        )
    # Keep fd 0 itself free for /dev/null: children must not read requests from stdin.
    moved = socket.socket(fileno=os.dup(FCGI_LISTENSOCK_FILENO))
    sock.detach()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, FCGI_LISTENSOCK_FILENO)
    os.close(devnull)
    return Listener(moved, "fd:0 (passed by the web server)")

"""What a prefork child and a threaded worker share before and around serving.

Both wait on the listener the same way (polling.py) and serve connections
with the same FastCGI layer; what they set up for that is done here, once:
the listener's preparation, the peer check on each connection, and the
operator pages around the application.
"""

from __future__ import annotations

import socket
from typing import Any

from safefcgi.fastcgi import protocol
from safefcgi.fastcgi.protocol import FastCGIApplication
from safefcgi.ops.operability import Operability, PoolView
from safefcgi.process.peers import PeerFilter
from safefcgi.process.polling import ListenerKind, listener_kind


def prepare_listener(listener: socket.socket) -> ListenerKind:
    """Non-blocking (a sibling may win any connection), connection options set once.

    Returns the listener's kind, which accept() needs on every call.
    """
    listener.setblocking(False)
    protocol.prepare_listener(listener)
    return listener_kind(listener)


def admitted(peers: PeerFilter | None, conn: socket.socket, addr: Any) -> bool:
    """True if ``conn`` may be served; a refused one is closed and logged."""
    return peers is None or peers.admit(conn, addr)


def add_pages(app: FastCGIApplication, ops: Operability | None, view: PoolView) -> None:
    """Put the operator pages and the access log around the application.

    ``view`` answers what the pages ask about the pool: a prefork child asks
    its master; threaded mode has no master to ask.
    """
    if ops is not None:
        app.application = ops.wrap(app.application, view)

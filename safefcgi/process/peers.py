"""Which TCP peers may talk to us: --allowed-clients, or FCGI_WEB_SERVER_ADDRS.

The FastCGI specification names FCGI_WEB_SERVER_ADDRS: a comma-separated
list of the web servers' addresses. Networks in CIDR form are accepted too.
A unix socket has no peer address; its file mode decides who may connect.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("safefcgi.peers")

WEB_SERVER_ADDRS_ENV = "FCGI_WEB_SERVER_ADDRS"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Each entry an address or a network; ValueError names the first bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


@dataclass(frozen=True)
class PeerFilter:
    """Decides, per accepted connection, whether its peer may be served."""

    networks: tuple[Network, ...]
    source: str  # "--allowed-clients" or the environment variable, for log lines

    def allows(self, peer: object) -> bool:
        """``peer`` is what accept() returned; anything but an IP address is refused."""
        address = _peer_ip(peer)
        if address is None:
            return False
        candidates = [address]
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:  # an IPv4 client of a dual-stack (::) listener
            candidates.append(mapped)
        return any(candidate in network for candidate in candidates
                   for network in self.networks if candidate.version == network.version)

    def admit(self, conn: socket.socket, peer: object) -> bool:
        """True if ``peer`` may be served; otherwise close ``conn`` and log one line."""
        if self.allows(peer):
            return True
        log.warning("refused a connection from %s: not allowed by %s",
                    describe_peer(peer), self.source)
        conn.close()
        return False


def describe_peer(peer: object) -> str:
    """The peer's address for a log line: an IPv4 client of a dual-stack listener as IPv4."""
    address = _peer_ip(peer)
    if address is None:
        return str(peer[0] if isinstance(peer, tuple) and peer else peer)
    return str(getattr(address, "ipv4_mapped", None) or address)


def _peer_ip(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None


def peer_filter(allowed_clients: tuple[str, ...] | None, is_tcp: bool,
                environ: dict[str, str] | None = None) -> PeerFilter | None:
    """The filter for this server, or None when every peer may connect.

    --allowed-clients wins over FCGI_WEB_SERVER_ADDRS; the variable is ignored
    for a unix socket, as the specification describes it for TCP only.
    """
    if allowed_clients is not None:
        return PeerFilter(parse_networks(allowed_clients), "--allowed-clients")
    value = (os.environ if environ is None else environ).get(WEB_SERVER_ADDRS_ENV, "")
    if not value.strip() or not is_tcp:
        return None
    entries = [item for item in value.split(",") if item.strip()]
    return PeerFilter(parse_networks(entries), WEB_SERVER_ADDRS_ENV)

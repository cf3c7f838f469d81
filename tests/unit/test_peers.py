"""How a peer address is matched and named: dual-stack listeners see IPv4 clients as mapped."""

from safefcgi.peers import PeerFilter, describe_peer, parse_networks


def allowlist(*entries: str) -> PeerFilter:
    return PeerFilter(parse_networks(entries), "--allowed-clients")


def test_an_ipv4_client_of_a_dual_stack_listener_matches_an_ipv4_network():
    assert allowlist("10.231.0.0/29").allows(("::ffff:10.231.0.1", 4000, 0, 0))
    assert not allowlist("10.231.0.0/29").allows(("::ffff:10.231.0.99", 4000, 0, 0))


def test_a_refused_ipv4_client_of_a_dual_stack_listener_is_named_as_ipv4():
    assert describe_peer(("::ffff:10.231.0.99", 4000, 0, 0)) == "10.231.0.99"


def test_other_peers_are_named_as_accept_returned_them():
    assert describe_peer(("fd00:231::99", 4000, 0, 0)) == "fd00:231::99"
    assert describe_peer(("fe80::1%eth0", 4000, 0, 2)) == "fe80::1"
    assert describe_peer(("192.0.2.7", 4000)) == "192.0.2.7"
    assert describe_peer("") == ""

"""How a peer address is matched and named: dual-stack listeners see IPv4 clients as mapped."""

from safefcgi.process.peers import PeerFilter, describe_peer, parse_networks, peer_filter


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


def test_peers_match_addresses_and_networks_of_both_families():
    peers = PeerFilter(parse_networks(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]), "test")
    assert peers.allows(("127.0.0.1", 40000))
    assert peers.allows(("10.20.30.40", 1))
    assert peers.allows(("2001:db8::5", 1, 0, 0))
    assert not peers.allows(("127.0.0.2", 1))
    assert not peers.allows(("::1", 1, 0, 0))


def test_a_peer_without_an_ip_address_is_refused():
    peers = PeerFilter(parse_networks(["127.0.0.1"]), "test")
    assert not peers.allows("")
    assert not peers.allows(("not an address", 1))


def test_the_option_wins_over_fcgi_web_server_addrs():
    env = {"FCGI_WEB_SERVER_ADDRS": "192.0.2.1"}
    assert peer_filter(("10.0.0.1",), True, env).source == "--allowed-clients"
    assert peer_filter(None, True, env).source == "FCGI_WEB_SERVER_ADDRS"


def test_fcgi_web_server_addrs_does_not_apply_to_a_unix_socket():
    assert peer_filter(None, False, {"FCGI_WEB_SERVER_ADDRS": "192.0.2.1"}) is None
    assert peer_filter(None, True, {}) is None

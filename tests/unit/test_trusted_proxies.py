"""The client address behind load balancers: only a trusted proxy's X-Forwarded-For counts."""

from types import SimpleNamespace

from api.public import client_address
from infrastructure.proxies import TrustedProxies


def request_from(peer: str, forwarded: str | None, trusted: str) -> SimpleNamespace:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    services = SimpleNamespace(trusted_proxies=TrustedProxies(trusted))
    return SimpleNamespace(scope={"client": (peer, 5000), "headers": headers}, app=SimpleNamespace(state=SimpleNamespace(services=services)))


def test_without_trusted_proxies_the_connection_address_counts_whatever_is_forwarded() -> None:
    assert client_address(request_from("203.0.113.9", "198.51.100.1", "")) == "203.0.113.9"


def test_a_trusted_proxy_names_the_rightmost_address_it_did_not_add_itself() -> None:
    # The visitor may forge the left part; the load balancer appends the address it saw.
    request = request_from("10.0.0.5", "1.2.3.4, 198.51.100.7, 10.0.0.9", "10.0.0.0/8")
    assert client_address(request) == "198.51.100.7"


def test_an_untrusted_peer_cannot_choose_its_address_by_forwarding_one() -> None:
    assert client_address(request_from("198.51.100.7", "10.0.0.1", "10.0.0.0/8")) == "198.51.100.7"


def test_a_trusted_proxy_with_nothing_forwarded_is_the_client() -> None:
    assert client_address(request_from("10.0.0.5", None, "10.0.0.0/8")) == "10.0.0.5"

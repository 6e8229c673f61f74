"""Webhook endpoint URLs over the space of addresses and texts: what may be stored and what must be refused.

The checks hold for every address of each range, in every spelling a resolver
accepts, and for any text at all (which is refused with the field named, or
kept as given: never another error).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import ValidationError
from domain.webhook_url import check_endpoint_url, is_public_address

SETTINGS = settings(max_examples=300)
NOT_PUBLIC_V4 = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4")]  # IANA's special-purpose IPv4 blocks, written down apart from the code under test
NOT_PUBLIC_V6 = [ipaddress.IPv6Network(n) for n in ("::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8", "::ffff:0:0/96",
                                                     "2001:db8::/32", "100::/64", "2001::/23", "fec0::/10")]


def refused(url: str, allow_private: bool = False) -> str:
    with pytest.raises(ValidationError) as caught:
        check_endpoint_url(url, allow_private)
    assert [e.field for e in caught.value.errors] == ["url"]
    return caught.value.errors[0].message


def literal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def in_networks(networks: list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network]) -> st.SearchStrategy[object]:
    return st.one_of(*(st.ip_addresses(network=n) for n in networks))


public_v4 = st.ip_addresses(v=4).filter(lambda a: not any(a in n for n in NOT_PUBLIC_V4) and a.is_global)
paths = st.text(st.sampled_from("abcxyz019-_/.~%"), max_size=30).map(lambda p: "/" + p)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
labels = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
dns_names = st.tuples(st.lists(labels, min_size=1, max_size=3), st.from_regex(r"\A[a-z]{2,10}\Z")).map(
    lambda parts: ".".join([*parts[0], parts[1]])).filter(lambda name: name != "localhost" and not name.endswith(".localhost"))


@SETTINGS
@given(in_networks(NOT_PUBLIC_V4), ports, paths)
def test_every_non_public_ipv4_literal_is_refused(address: ipaddress.IPv4Address, port: str, path: str) -> None:
    refused(f"https://{address}{port}{path}")


@SETTINGS
@given(in_networks(NOT_PUBLIC_V6), ports, paths)
def test_every_non_public_ipv6_literal_is_refused(address: ipaddress.IPv6Address, port: str, path: str) -> None:
    refused(f"https://[{address}]{port}{path}")


@SETTINGS
@given(st.ip_addresses(v=4))
def test_an_ipv4_address_inside_ipv6_is_refused_when_mapped_always_and_otherwise_when_not_public(address: ipaddress.IPv4Address) -> None:
    refused(f"https://[::ffff:{address}]/")
    public = is_public_address(address)
    for wrapped in (ipaddress.IPv6Address(f"64:ff9b::{address}"), ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80))):
        if not public:
            refused(f"https://[{wrapped}]/")


@SETTINGS
@given(st.ip_addresses(v=4), st.sampled_from(["decimal", "hex", "short", "octal"]))
def test_an_ipv4_address_in_a_legacy_spelling_is_refused(address: ipaddress.IPv4Address, spelling: str) -> None:
    value = int(address)
    host = {"decimal": str(value), "hex": hex(value), "short": f"{value >> 24}.{value & 0xFFFFFF}",
            "octal": ".".join(f"0{int(octet):o}" for octet in str(address).split("."))}[spelling]
    refused(f"https://{host}/")


@SETTINGS
@given(public_v4, ports, paths)
def test_a_public_ipv4_literal_is_kept(address: ipaddress.IPv4Address, port: str, path: str) -> None:
    url = f"https://{address}{port}{path}"
    assert check_endpoint_url(url) == url


@SETTINGS
@given(dns_names, ports, paths)
def test_an_https_dns_name_is_kept_and_http_only_in_development(name: str, port: str, path: str) -> None:
    assert check_endpoint_url(f"https://{name}{port}{path}") == f"https://{name}{port}{path}"
    assert "https" in refused(f"http://{name}{port}{path}")
    assert check_endpoint_url(f"http://{name}{port}{path}", allow_private=True) == f"http://{name}{port}{path}"


@SETTINGS
@given(st.ip_addresses(), st.sampled_from(["http", "https"]))
def test_the_development_switch_allows_any_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, scheme: str) -> None:
    url = f"{scheme}://{literal(address)}:8080/hook"
    assert check_endpoint_url(url, allow_private=True) == url


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.builds(lambda s, rest: s + rest, st.sampled_from(["https://", "http://", "https://["]),
                                                  st.text(max_size=60))))
def test_any_text_is_kept_as_given_or_refused_naming_url(text: str) -> None:
    try:
        kept = check_endpoint_url(text)
    except ValidationError as error:
        assert [e.field for e in error.errors] == ["url"] and error.errors[0].message
        return
    assert kept == text
    parts = urlsplit(text)
    assert parts.scheme.lower() == "https" and parts.hostname and parts.username is None
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    assert is_public_address(address)

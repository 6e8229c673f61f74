"""A webhook endpoint's URL, checked before it is stored.

Only what the URL itself says is checked here: https (http only in development),
a host that is a DNS name or a public address literal. An address literal in a
private, loopback, link-local, multicast or reserved range is refused, and so
is any IPv4-mapped IPv6 literal, a private address inside NAT64, 6to4 or Teredo,
and an address written in one of the legacy numeric forms resolvers still accept (`127.1`, `2130706433`,
`0x7f.0.0.1`). Names are resolved only when a delivery is sent, and the sender
checks every address then: a name may point anywhere later.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from domain.errors import FieldError, ValidationError

MAX_URL_LENGTH = 2048
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NOT_PUBLIC_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4"))
_NOT_PUBLIC_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


def check_endpoint_url(url: str, allow_private: bool = False, field: str = "url") -> str:
    """The URL as given, if a delivery may be sent to it; else a ValidationError naming `field`."""
    problem = _problem(url, allow_private)
    if problem:
        raise ValidationError([FieldError(field, problem)], "The webhook endpoint URL is not allowed.")
    return url


def _problem(url: str, allow_private: bool) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must be an absolute URL of printable ASCII characters (encode international names as punycode)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "must be an absolute URL with a valid host and port"
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        return "must use https" if not allow_private else "must use https or http"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.fragment or url.endswith("#"):
        return "must not have a fragment"
    host = (parts.hostname or "").rstrip(".")
    if not host or port == 0:
        return "must name a host (and a port from 1 to 65535)"
    if allow_private:
        return None
    return _host_problem(host)


def _host_problem(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return None if is_public_address(address) else "must not be a loopback, private, link-local, multicast or reserved address"
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # No top-level domain is numeric: this is an address in a form resolvers still accept (127.1, 0x7f000001).
        return "must be a DNS name or an IP address in standard form"
    if not all(_LABEL.match(label) for label in labels):
        return "must be a valid DNS name"
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return "must not be a loopback name"
    return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a delivery may go to `address`: globally routable unicast, also for an IPv4 address inside IPv6.

    The ranges are IANA's special-purpose blocks that are not globally reachable, listed here rather than
    left to `ipaddress.is_global`, whose tables differ between Python releases (3.11 calls 192.0.0.8 global)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return False  # an IPv4 address written as IPv6 only ever serves to get past a check like this one
        embedded = (address.teredo[1] if address.teredo else None) or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        blocked: tuple[ipaddress.IPv4Network, ...] | tuple[ipaddress.IPv6Network, ...] = _NOT_PUBLIC_V6
    else:
        blocked = _NOT_PUBLIC_V4
    if any(address in network for network in blocked):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved

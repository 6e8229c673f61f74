"""The origin a browser says a request comes from, parsed as strictly as browsers write it.

Also the host grammar (LDH host names, canonical IPv4, bracketed IPv6, ports) that
allowed-domain entries share with origins, so both sides agree on what a host is.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass

import idna

DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}

MAX_HOSTNAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

_LDH = frozenset(string.ascii_lowercase + string.digits + "-")
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x21, 0x7F))
_HEX_DIGITS = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class Origin:
    """A web origin: lower-case scheme and host, and the port with the default filled in.

    `host` is a lower-case A-label host name, a canonical dotted-quad IPv4 address,
    or a compressed IPv6 address in brackets.
    """

    scheme: str
    host: str
    port: int

    @property
    def key(self) -> str:
        """The origin with an explicit port, as `https://example.com:443`."""
        return origin_key(self.scheme, self.host, self.port)

    @property
    def is_ip_literal(self) -> bool:
        """Whether the host is an IP address rather than a host name."""
        return self.host.startswith("[") or looks_like_ipv4(self.host)

    def __str__(self) -> str:
        if self.port == DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def origin_key(scheme: str, host: str, port: int) -> str:
    """The one string that names an origin: scheme, host and explicit port."""
    return f"{scheme}://{host}:{port}"


def parse_origin(header: str | None) -> Origin | None:
    """The origin an `Origin` header names, or None when it is absent, `null` or not strictly valid.

    Accepts only `scheme://host[:port]` with scheme http or https, in printable ASCII,
    with no path (not even `/`), query, fragment, userinfo, backslash or trailing dot.
    """
    if not header or not all(c in _PRINTABLE_ASCII for c in header):
        return None
    scheme, separator, authority = header.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        return None
    return _parse_authority(scheme, authority)


def origin_from_referer(referer: str | None) -> Origin | None:
    """The origin part of a `Referer` URL, or None when the URL is absent or not strictly valid.

    Browsers send Referer with a path, without fragment or userinfo; anything else is refused.
    """
    if not referer or not all(c in _PRINTABLE_ASCII for c in referer):
        return None
    if "\\" in referer or "#" in referer:
        return None
    scheme, separator, rest = referer.partition("://")
    if not separator:
        return None
    authority = rest.partition("/")[0]
    if "?" in authority:
        return None
    return parse_origin(f"{scheme}://{authority}")


def _parse_authority(scheme: str, authority: str) -> Origin | None:
    if any(c in authority for c in "/?#@\\"):
        return None
    if authority.startswith("["):
        address, bracket, after = authority[1:].partition("]")
        host = normalise_ipv6(address) if bracket else None
        port_text, has_port = after[1:], after.startswith(":")
        if after and not has_port:
            return None
    else:
        name, has_colon, port_text = authority.partition(":")
        host = normalise_host(name)
        has_port = bool(has_colon)
    if host is None:
        return None
    port = parse_port(port_text) if has_port else DEFAULT_PORTS[scheme]
    if port is None:
        return None
    return Origin(scheme, host, port)


def normalise_host(name: str) -> str | None:
    """A lower-cased ASCII host name or canonical IPv4 address, or None when it is neither."""
    host = name.lower()
    if looks_like_ipv4(host):
        return host if is_canonical_ipv4(host) else None
    return host if is_valid_hostname(host) else None


def is_valid_hostname(host: str) -> bool:
    """Whether `host` is a lower-case LDH host name with valid A-labels and no trailing dot."""
    if not host or len(host) > MAX_HOSTNAME_LENGTH:
        return False
    return all(_is_valid_label(label) for label in host.split("."))


def _is_valid_label(label: str) -> bool:
    if not label or len(label) > MAX_LABEL_LENGTH:
        return False
    if not set(label) <= _LDH or label.startswith("-") or label.endswith("-"):
        return False
    return not label.startswith("xn--") or _is_valid_a_label(label)


def _is_valid_a_label(label: str) -> bool:
    try:
        return idna.encode(idna.decode(label)).decode("ascii") == label
    except (idna.IDNAError, UnicodeError):
        return False


def looks_like_ipv4(host: str) -> bool:
    """Whether browsers would read `host` as an IPv4 address: its last label is a number.

    That includes forms such as `2130706433` and `0x7f.1`, which browsers rewrite and
    which are therefore never valid as written.
    """
    last = host.removesuffix(".").rpartition(".")[2]
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and set(last[2:]) <= _HEX_DIGITS


def is_canonical_ipv4(host: str) -> bool:
    """Whether `host` is an IPv4 address in dotted-quad decimal with no leading zeros."""
    parts = host.split(".")
    return len(parts) == 4 and all(_is_canonical_octet(part) for part in parts)


def _is_canonical_octet(part: str) -> bool:
    if not (part.isascii() and part.isdigit()) or (len(part) > 1 and part.startswith("0")):
        return False
    return int(part) <= 255


def normalise_ipv6(address: str) -> str | None:
    """`[address]` in compressed form, for an IPv6 address written without brackets; or None."""
    if "%" in address or not address.isascii():
        return None
    try:
        return f"[{ipaddress.IPv6Address(address).compressed}]"
    except ValueError:
        return None


def parse_port(text: str) -> int | None:
    """The port 1-65535 written in plain decimal without leading zeros, or None."""
    if not (text.isascii() and text.isdigit()) or text.startswith("0") or len(text) > 5:
        return None
    port = int(text)
    return port if port <= 65535 else None

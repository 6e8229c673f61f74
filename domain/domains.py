"""The sites allowed to embed a widget: entries as admins write them, and a matcher for origins.

An entry is `host`, `host:port`, `*.host` or `*.host:port`, optionally prefixed by
`http://` or `https://`, which then names the one scheme allowed. Matching is label
by label on parsed origins, never by substring or pattern.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import idna
import msgspec
from publicsuffixlist import PSLFILE, PublicSuffixList

from domain.errors import FieldError, ValidationError
from domain.origin import (
    DEFAULT_PORTS,
    Origin,
    is_canonical_ipv4,
    is_valid_hostname,
    looks_like_ipv4,
    normalise_ipv6,
    origin_key,
    parse_port,
)

MAX_ENTRIES = 1000
_MAX_ENTRY_LENGTH = 512
_SHOWN_ENTRY_LENGTH = 80
# What an entry admits, said wherever an entry is refused for its form.
ENTRY_FORMS = ("an entry is a host (example.com: https only, port 443), a host and port (localhost:3000), "
               "a scheme and host (http://example.com: that scheme only), or *.host (its subdomains at any depth, "
               "not the host itself)")
_FORBIDDEN_PARTS = (
    ("@", f"must not contain userinfo ('@'): {ENTRY_FORMS}"),
    ("\\", f"must not contain a backslash: {ENTRY_FORMS}"),
    ("/", f"must not contain a path: {ENTRY_FORMS}"),
    ("?", f"must not contain a query: {ENTRY_FORMS}"),
    ("#", f"must not contain a fragment: {ENTRY_FORMS}"),
)


class _RefusedEntry(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Entry:
    scheme: str | None
    wildcard: bool
    host: str
    port: int | None

    @property
    def admitted_schemes(self) -> tuple[str, ...]:
        if self.scheme is not None:
            return (self.scheme,)
        if not self.wildcard and (self.host == "localhost" or _is_ip_literal(self.host)):
            return ("http", "https")
        return ("https",)

    def keys(self) -> Iterator[str]:
        for scheme in self.admitted_schemes:
            yield origin_key(scheme, self.host, self.port or DEFAULT_PORTS[scheme])

    def admits(self) -> str:
        """What this entry lets in, in words: the origins, or the subdomains, it matches."""
        host = f"*.{self.host}" if self.wildcard else self.host
        origins = " and ".join(
            f"{scheme}://{host}" + (f":{self.port}" if self.port else "") for scheme in self.admitted_schemes)
        port = f" (port {self.port})" if self.port else " (" + " and ".join(
            f"port {DEFAULT_PORTS[s]}" for s in self.admitted_schemes) + " only)"
        if self.wildcard:
            return f"{origins}{port}: the subdomains of {self.host} at any depth, not {self.host} itself"
        return f"{origins}{port}"

    def __str__(self) -> str:
        scheme = f"{self.scheme}://" if self.scheme else ""
        wildcard = "*." if self.wildcard else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{scheme}{wildcard}{self.host}{port}"

    @classmethod
    def from_normalised(cls, text: str) -> _Entry:
        """Split an entry already in canonical written form; no validation, never raises on one."""
        scheme, separator, rest = text.partition("://")
        if not separator:
            scheme, rest = "", text
        wildcard = rest.startswith("*.")
        rest = rest.removeprefix("*.")
        if rest.startswith("["):
            host, _, after = rest.partition("]")
            host, port_text = host + "]", after.removeprefix(":")
        else:
            host, _, port_text = rest.partition(":")
        return cls(scheme or None, wildcard, host, int(port_text) if port_text else None)


class CompiledDomains(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Allowed domains prepared for matching, as stored in the public read model.

    `exact` holds origin keys such as `https://example.com:443`; `wildcard` holds keys
    whose host's strict subdomains are allowed on that scheme and port. Checking an
    origin costs one set lookup per label of its host, however many entries there are.
    Encode with `order="deterministic"` when the stored bytes should not vary.
    """

    exact: frozenset[str] = frozenset()
    wildcard: frozenset[str] = frozenset()

    def allows(self, origin: Origin) -> bool:
        """Whether a page on `origin` may use the widget."""
        if origin.key in self.exact:
            return True
        if origin.is_ip_literal:
            return False  # an address has no parent domains, and no wildcard covers one
        parent = origin.host
        while "." in parent:
            parent = parent.partition(".")[2]
            if origin_key(origin.scheme, parent, origin.port) in self.wildcard:
                return True
        return False


@dataclass(frozen=True)
class AllowedDomains:
    """The list of sites allowed to embed a widget, normalised; empty allows no site.

    Build it from input with `parse`, which validates. The constructor trusts its
    entries to be normalised already (as stored in an event), so that replaying
    history never raises, even after the public suffix list has changed.
    """

    entries: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowedDomains:
        """Validate and normalise entries; raises ValidationError naming every bad one."""
        if isinstance(entries, str):
            raise ValidationError([FieldError("domains", "must be a list of entries, not one string")])
        if len(entries) > MAX_ENTRIES:
            message = f"must list at most {MAX_ENTRIES} entries, not {len(entries)}"
            raise ValidationError([FieldError("domains", message)])
        normalised: list[str] = []
        errors: list[FieldError] = []
        for index, text in enumerate(entries):
            try:
                normalised.append(str(_normalise_entry(text)))
            except _RefusedEntry as refused:
                errors.append(FieldError(f"domains[{index}]", refused.message))
        if errors:
            raise ValidationError(errors)
        return cls(tuple(dict.fromkeys(normalised)))

    def explained(self) -> list[tuple[str, str]]:
        """Each stored entry and what it admits, in words."""
        return [(entry, _Entry.from_normalised(entry).admits()) for entry in self.entries]

    def compile(self) -> CompiledDomains:
        """The entries as origin keys in sets, ready for matching and for storing."""
        exact: set[str] = set()
        wildcard: set[str] = set()
        for text in self.entries:
            entry = _Entry.from_normalised(text)
            (wildcard if entry.wildcard else exact).update(entry.keys())
        return CompiledDomains(frozenset(exact), frozenset(wildcard))

    def allows(self, origin: Origin) -> bool:
        """Whether a page on `origin` may use the widget."""
        return self._compiled.allows(origin)

    @functools.cached_property
    def _compiled(self) -> CompiledDomains:
        return self.compile()


def _normalise_entry(text: object) -> _Entry:
    if not isinstance(text, str):
        raise _RefusedEntry("must be a string")
    shown = repr(text[:_SHOWN_ENTRY_LENGTH] + ("…" if len(text) > _SHOWN_ENTRY_LENGTH else ""))
    if not text:
        raise _RefusedEntry("must not be empty")
    if len(text) > _MAX_ENTRY_LENGTH:
        raise _RefusedEntry(f"{shown} is longer than {_MAX_ENTRY_LENGTH} characters")
    if any(c.isspace() for c in text):
        raise _RefusedEntry(f"{shown} must not contain whitespace")
    scheme, rest = _split_scheme(text, shown)
    if rest.endswith("/") and rest.count("/") == 1:
        rest = rest[:-1]  # a harmless spelling (example.com/): the root path is no path
    for character, problem in _FORBIDDEN_PARTS:
        if character in rest:
            raise _RefusedEntry(f"{shown} {problem}")
    host_text, port_text = _split_port(rest, shown)
    port = _parse_entry_port(port_text, shown)
    wildcard, host = _split_wildcard(host_text, shown)
    entry = _Entry(scheme, wildcard, host, port)
    schemes = entry.admitted_schemes
    if len(schemes) == 1 and port == DEFAULT_PORTS[schemes[0]]:
        return replace(entry, port=None)
    return entry


def _split_scheme(text: str, shown: str) -> tuple[str | None, str]:
    scheme, separator, rest = text.partition("://")
    if not separator:
        return None, text
    if scheme.lower() not in DEFAULT_PORTS:
        raise _RefusedEntry(f"{shown} must start with http://, https:// or no scheme at all: {ENTRY_FORMS}")
    return scheme.lower(), rest


def _split_port(rest: str, shown: str) -> tuple[str, str | None]:
    if rest.removeprefix("*.").startswith("["):
        address, bracket, after = rest.partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _RefusedEntry(f"{shown} is not a valid bracketed IPv6 address")
        return address + "]", after[1:] if after else None
    host, colon, port_text = rest.partition(":")
    if ":" in port_text:
        raise _RefusedEntry(f"{shown} has more than one ':'; write IPv6 addresses in brackets")
    return host, port_text if colon else None


def _split_wildcard(host_text: str, shown: str) -> tuple[bool, str]:
    if host_text == "*":
        raise _RefusedEntry(f"{shown}: '*' alone would allow every site")
    wildcard = host_text.startswith("*.")
    host_text = host_text.removeprefix("*.")
    if "*" in host_text:
        raise _RefusedEntry(f"{shown}: a wildcard must be the whole leftmost label, as in *.example.com")
    if host_text.startswith("["):
        if wildcard:
            raise _RefusedEntry(f"{shown}: a wildcard cannot cover an IP address")
        host = normalise_ipv6(host_text[1:-1])
        if host is None:
            raise _RefusedEntry(f"{shown} is not a valid IPv6 address")
        return wildcard, host
    return wildcard, _normalise_name(host_text, wildcard, shown)


def _normalise_name(name: str, wildcard: bool, shown: str) -> str:
    try:
        host = idna.encode(name, uts46=True, std3_rules=True).decode("ascii").removesuffix(".")
    except (idna.IDNAError, UnicodeError) as error:
        raise _RefusedEntry(f"{shown} is not a valid host name ({error})") from None
    if looks_like_ipv4(host):
        if not is_canonical_ipv4(host):
            raise _RefusedEntry(f"{shown} is not an IPv4 address written as four decimal numbers")
        if wildcard:
            raise _RefusedEntry(f"{shown}: a wildcard cannot cover an IP address")
        return host
    if not is_valid_hostname(host):
        raise _RefusedEntry(f"{shown} is not a valid host name")
    if host != "localhost" and _public_suffixes().is_public(host):
        if wildcard:
            raise _RefusedEntry(f"{shown} is a wildcard over the public suffix {host!r}, which unrelated sites share")
        raise _RefusedEntry(f"{shown} is a public suffix or top-level name, which unrelated sites share")
    beneath = _suffixes_beneath().get(host) if wildcard else None
    if beneath is not None:
        raise _RefusedEntry(f"{shown} is a wildcard over {host!r}, beneath which lies the public suffix {beneath!r}, "
                            "whose subdomains unrelated sites own")
    return host


def _parse_entry_port(port_text: str | None, shown: str) -> int | None:
    if port_text is None:
        return None
    port = parse_port(port_text)
    if port is None:
        raise _RefusedEntry(f"{shown} has a bad port: it must be a number from 1 to 65535 without leading zeros")
    return port


def _is_ip_literal(host: str) -> bool:
    return host.startswith("[") or looks_like_ipv4(host)


@functools.cache
def _rules() -> tuple[str, ...]:
    """The public suffix list's rules (`com`, `s3.amazonaws.com`, `*.kawasaki.jp`, `!city.kawasaki.jp`), from the
    data file the package ships, read once."""
    with open(PSLFILE, encoding="utf-8") as source:
        return tuple(line.split()[0].lower() for line in source if line.strip() and not line.startswith("//"))


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Private-section suffixes (github.io, vercel.app) count too: their subdomains
    # belong to unrelated customers. Unknown top-level labels count as suffixes.
    return PublicSuffixList(_rules(), accept_unknown=True, only_icann=False)


@functools.cache
def _suffixes_beneath() -> dict[str, str]:
    """For every name with a public suffix strictly beneath it (`amazonaws.com`), one such suffix to name in a
    refusal: the shortest, a plain rule before a wildcard one (`s3.amazonaws.com`). Private section included."""
    found: dict[str, str] = {}
    for rule in _rules():
        if rule.startswith("!"):
            continue  # an exception says a name is not a suffix
        try:
            suffix = ".".join(label if label == "*" or label.isascii() else label.encode("idna").decode("ascii")
                              for label in rule.split("."))
        except UnicodeError:
            continue
        labels = suffix.split(".")
        for start in range(1, len(labels)):
            parent = ".".join(labels[start:])
            known = found.get(parent)
            if known is None or _naming_order(suffix) < _naming_order(known):
                found[parent] = suffix
    return found


def _naming_order(suffix: str) -> tuple[bool, int, int, str]:
    return suffix.startswith("*"), suffix.count("."), len(suffix), suffix

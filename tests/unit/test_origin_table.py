"""Which `Origin` headers a list of allowed domains admits, including the usual bypass attempts."""

from __future__ import annotations

import pytest

from domain.domains import AllowedDomains
from domain.origin import Origin, origin_from_referer, parse_origin

EXAMPLE = ["example.com"]
WILDCARD = ["*.example.com"]
LOCALHOST = ["localhost"]

ORIGIN_TABLE: list[tuple[list[str], str | None, bool]] = [
    # The exact entry: https on 443, written or not.
    (EXAMPLE, "https://example.com", True),
    (EXAMPLE, "https://example.com:443", True),
    (EXAMPLE, "https://EXAMPLE.com", True),
    (EXAMPLE, "HTTPS://Example.Com", True),
    (["ExAmPlE.CoM"], "https://example.com", True),
    # Other schemes, ports and hosts.
    (EXAMPLE, "http://example.com", False),
    (EXAMPLE, "http://example.com:443", False),
    (EXAMPLE, "https://example.com:8443", False),
    (EXAMPLE, "https://example.com:80", False),
    (EXAMPLE, "https://www.example.com", False),
    (EXAMPLE, "ftp://example.com", False),
    (EXAMPLE, "ws://example.com", False),
    (EXAMPLE, "javascript:alert(1)", False),
    (EXAMPLE, "javascript://example.com", False),
    # Suffix and prefix tricks.
    (EXAMPLE, "https://example.com.evil.com", False),
    (EXAMPLE, "https://evilexample.com", False),
    (EXAMPLE, "https://evil-example.com", False),
    (EXAMPLE, "https://example.co", False),
    (EXAMPLE, "https://example.comm", False),
    (EXAMPLE, "https://example.com-evil.com", False),
    (WILDCARD, "https://evilexample.com", False),
    (WILDCARD, "https://a.evilexample.com", False),
    (WILDCARD, "https://example.com.evil.com", False),
    (WILDCARD, "https://a.example.com.evil.com", False),
    # Userinfo, backslash, paths and the rest of a URL.
    (EXAMPLE, "https://example.com@evil.com", False),
    (EXAMPLE, "https://evil.com@example.com", False),
    (EXAMPLE, "https://example.com\\@evil.com", False),
    (EXAMPLE, "https://example.com\\evil.com", False),
    (EXAMPLE, "https://example.com/", False),
    (EXAMPLE, "https://example.com/path", False),
    (EXAMPLE, "https://example.com?x=1", False),
    (EXAMPLE, "https://example.com#top", False),
    (EXAMPLE, "https:/example.com", False),
    (EXAMPLE, "https:example.com", False),
    (EXAMPLE, "//example.com", False),
    (EXAMPLE, "example.com", False),
    # Null, missing, empty and whitespace.
    (EXAMPLE, "null", False),
    (EXAMPLE, None, False),
    (EXAMPLE, "", False),
    (EXAMPLE, " https://example.com", False),
    (EXAMPLE, "https://example.com ", False),
    (EXAMPLE, "https://example.com\n", False),
    (EXAMPLE, "https://exa mple.com", False),
    (EXAMPLE, "https://example.com\t", False),
    # Trailing dots and empty labels.
    (EXAMPLE, "https://example.com.", False),
    (["example.com."], "https://example.com.", False),
    (EXAMPLE, "https://example..com", False),
    (EXAMPLE, "https://.example.com", False),
    # Ports written oddly.
    (EXAMPLE, "https://example.com:", False),
    (EXAMPLE, "https://example.com:0443", False),
    (EXAMPLE, "https://example.com:+443", False),
    (EXAMPLE, "https://example.com:443:443", False),
    (EXAMPLE, "https://example.com:99999", False),
    (["example.com:8443"], "https://example.com:8443", True),
    (["example.com:8443"], "https://example.com", False),
    # IDNA: non-ASCII origins, full-width dots, homoglyphs, punycode.
    (EXAMPLE, "https://exаmple.com", False),  # Cyrillic а
    (["exаmple.com"], "https://exаmple.com", False),
    (EXAMPLE, "https://xn--exmple-4nf.com", False),  # the same homoglyph, as punycode
    (["exаmple.com"], "https://xn--exmple-4nf.com", True),
    (EXAMPLE, "https://example。com", False),
    (EXAMPLE, "https://ｅxample.com", False),
    (["BÜCHER.example"], "https://xn--bcher-kva.example", True),
    (["BÜCHER.example"], "https://bücher.example", False),
    (["BÜCHER.example"], "https://bucher.example", False),
    (["xn--bcher-kva.example"], "https://xn--zz.example", False),
    # Wildcards: any depth, never the apex.
    (WILDCARD, "https://a.example.com", True),
    (WILDCARD, "https://a.b.c.example.com", True),
    (WILDCARD, "https://A.Example.COM", True),
    (WILDCARD, "https://example.com", False),
    (WILDCARD, "http://a.example.com", False),
    (WILDCARD, "https://a.example.com:8443", False),
    (["*.example.com", "example.com"], "https://example.com", True),
    (["*.b.example.com"], "https://b.example.com", False),
    (["*.b.example.com"], "https://a.b.example.com", True),
    (["*.b.example.com"], "https://a.c.example.com", False),
    (["http://*.example.com:8080"], "http://a.example.com:8080", True),
    (["http://*.example.com:8080"], "https://a.example.com:8080", False),
    # Localhost.
    (LOCALHOST, "http://localhost", True),
    (LOCALHOST, "https://localhost", True),
    (LOCALHOST, "http://localhost:80", True),
    (LOCALHOST, "http://LOCALHOST", True),
    (LOCALHOST, "http://localhost.", False),
    (["localhost."], "http://localhost", True),
    (LOCALHOST, "http://localhost:3000", False),
    (["localhost:3000"], "http://localhost:3000", True),
    (["localhost:3000"], "https://localhost:3000", True),
    (["localhost:3000"], "http://localhost", False),
    (LOCALHOST, "http://app.localhost", False),
    (LOCALHOST, "http://localhost.evil.com", False),
    (["app.localhost"], "http://app.localhost", False),
    # IP literals, v4 and v6, match exactly and only in canonical form.
    (["127.0.0.1"], "http://127.0.0.1", True),
    (["127.0.0.1"], "https://127.0.0.1", True),
    (["127.0.0.1"], "http://127.0.0.1:8080", False),
    (["127.0.0.1:8080"], "http://127.0.0.1:8080", True),
    (["127.0.0.1"], "http://2130706433", False),
    (["127.0.0.1"], "http://0x7f.1", False),
    (["127.0.0.1"], "http://127.1", False),
    (["127.0.0.1"], "http://0177.0.0.1", False),
    (["127.0.0.1"], "http://127.0.0.01", False),
    (["127.0.0.1"], "http://127.0.0.1.", False),
    (["127.0.0.1"], "http://127.0.0.2", False),
    (["127.0.0.1"], "http://[::ffff:127.0.0.1]", False),
    (LOCALHOST, "http://127.0.0.1", False),
    (["[::1]"], "http://[::1]", True),
    (["[::1]"], "https://[::1]", True),
    (["[::1]"], "http://[0:0:0:0:0:0:0:1]", True),
    (["[::1]:8080"], "http://[::1]:8080", True),
    (["[::1]:8080"], "http://[::1]", False),
    (["[::1]"], "http://::1", False),
    (["[::1]"], "http://[::1", False),
    (["[::1]"], "http://[fe80::1%25eth0]", False),
    (["[::1]"], "http://[::2]", False),
    # Explicit schemes.
    (["http://example.com"], "http://example.com", True),
    (["http://example.com"], "https://example.com", False),
    (["http://example.com"], "http://example.com:8080", False),
    (["https://example.com"], "https://example.com", True),
    # An empty list allows nothing.
    ([], "https://example.com", False),
    ([], "http://localhost", False),
]


@pytest.mark.parametrize(("entries", "origin_header", "expected_allowed"), ORIGIN_TABLE)
def test_origin_table(entries: list[str], origin_header: str | None, expected_allowed: bool) -> None:
    domains = AllowedDomains.parse(entries)
    origin = parse_origin(origin_header)

    allowed = origin is not None and domains.allows(origin)

    assert allowed is expected_allowed
    if origin is not None:
        assert domains.compile().allows(origin) is expected_allowed


def test_the_table_covers_at_least_sixty_cases_and_admits_some() -> None:
    assert len(ORIGIN_TABLE) >= 60
    assert sum(expected for _, _, expected in ORIGIN_TABLE) >= 20


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("https://example.com", Origin("https", "example.com", 443)),
        ("http://example.com", Origin("http", "example.com", 80)),
        ("https://example.com:8443", Origin("https", "example.com", 8443)),
        ("HTTPS://EXAMPLE.COM", Origin("https", "example.com", 443)),
        ("http://[0::1]:3000", Origin("http", "[::1]", 3000)),
        ("http://127.0.0.1", Origin("http", "127.0.0.1", 80)),
        ("https://ab--cd.example.com", Origin("https", "ab--cd.example.com", 443)),
    ],
)
def test_parses_origins_into_scheme_host_and_explicit_port(header: str, expected: Origin) -> None:
    assert parse_origin(header) == expected


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        ("https://example.com/page?x=1", Origin("https", "example.com", 443)),
        ("https://example.com/", Origin("https", "example.com", 443)),
        ("https://example.com", Origin("https", "example.com", 443)),
        ("https://example.com:8443/a/b", Origin("https", "example.com", 8443)),
        ("http://localhost:3000/app", Origin("http", "localhost", 3000)),
        ("https://example.com?x=1", None),
        ("https://example.com/#top", None),
        ("https://user@example.com/", None),
        ("https://example.com\\@evil.com/", None),
        ("https://exаmple.com/", None),
        ("https://example.com./", None),
        ("https:///example.com", None),
        ("ftp://example.com/", None),
        ("about:blank", None),
        ("null", None),
        ("", None),
        (None, None),
    ],
)
def test_only_the_origin_part_of_a_referer_counts(referer: str | None, expected: Origin | None) -> None:
    assert origin_from_referer(referer) == expected


@pytest.mark.parametrize(
    "header",
    [
        "null",
        "",
        "https://example.com/",
        "https://example.com.",
        "https://example.com@evil.com",
        "https://example.com\\evil.com",
        "https://exаmple.com",
        "https://a_b.example.com",
        "https://-a.example.com",
        "https://" + "a" * 64 + ".com",
        "https://" + ".".join(["a" * 63] * 4) + ".com",
        "https://xn--zz.example.com",
        "https://example.com:",
        "https://example.com:0",
        "https://example.com:0443",
        "http://2130706433",
        "http://0x7f.1",
        "http://0x7f.0.0.1",
        "http://127.1",
        "http://127.0.0.01",
        "http://256.0.0.1",
        "http://example.123",
        "http://::1",
        "http://[::1]x",
        "http://[::1]:",
        "http://[fe80::1%25eth0]",
        "ftp://example.com",
        "file://",
        "https://",
    ],
)
def test_refuses_origins_that_browsers_never_write(header: str) -> None:
    assert parse_origin(header) is None

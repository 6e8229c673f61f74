"""Allowed-domain entries: what is accepted, how it is normalised, and what is refused."""

from __future__ import annotations

import re

import msgspec
import pytest
from publicsuffixlist import PublicSuffixList

from domain.domains import MAX_ENTRIES, AllowedDomains, CompiledDomains
from domain.errors import ValidationError
from domain.origin import Origin, parse_origin


def refusal(entries: list[str]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        AllowedDomains.parse(entries)
    return caught.value


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("example.com", "example.com"),
        ("*.shop.example.org", "*.shop.example.org"),
        ("localhost:3000", "localhost:3000"),
        ("http://example.com", "http://example.com"),
        ("https://example.com", "https://example.com"),
        ("[::1]:8080", "[::1]:8080"),
        ("127.0.0.1", "127.0.0.1"),
        ("*.example.com:8443", "*.example.com:8443"),
        ("http://*.example.com:8080", "http://*.example.com:8080"),
        ("foo.github.io", "foo.github.io"),
        ("*.foo.github.io", "*.foo.github.io"),
        ("city.kawasaki.jp", "city.kawasaki.jp"),
        ("localhost", "localhost"),
        ("*.localhost", "*.localhost"),
    ],
)
def test_accepts_entries_in_the_documented_grammar(written: str, normalised: str) -> None:
    assert AllowedDomains.parse([written]).entries == (normalised,)


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("*.Bücher.example", "*.xn--bcher-kva.example"),
        ("ｅxample.com", "example.com"),
        ("example。com", "example.com"),
        ("example．com", "example.com"),
        ("Example.COM", "example.com"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),
        ("example.com.", "example.com"),
        ("*.example.com.", "*.example.com"),
        ("example.com.:8080", "example.com:8080"),
        ("localhost.", "localhost"),
        ("HTTPS://Example.com", "https://example.com"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[2001:DB8::0:1]:3000", "[2001:db8::1]:3000"),
    ],
)
def test_normalises_to_lower_case_a_labels_without_trailing_dot(written: str, normalised: str) -> None:
    assert AllowedDomains.parse([written]).entries == (normalised,)


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("example.com:443", "example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://localhost:80", "http://localhost"),
        ("example.com:80", "example.com:80"),
        ("localhost:443", "localhost:443"),
        ("127.0.0.1:80", "127.0.0.1:80"),
    ],
)
def test_drops_a_port_only_where_it_is_the_default_of_the_one_admitted_scheme(written: str, normalised: str) -> None:
    assert AllowedDomains.parse([written]).entries == (normalised,)


def test_normalising_twice_changes_nothing() -> None:
    written = ["BÜCHER.example.", "*.Shop.Example.org", "HTTP://LocalHost:3000", "[0::1]:8080", "example.com:443"]
    once = AllowedDomains.parse(written)

    assert AllowedDomains.parse(once.entries) == once


def test_deduplicates_after_normalising_keeping_first_occurrence_order() -> None:
    entries = ["b.example.com", "Example.com", "a.example.com", "example.com.", "ｅxample.com", "B.EXAMPLE.COM"]

    assert AllowedDomains.parse(entries).entries == ("b.example.com", "example.com", "a.example.com")


def test_an_empty_list_is_valid_and_allows_no_site() -> None:
    domains = AllowedDomains.parse([])

    assert domains.entries == ()
    assert not domains.allows(Origin("https", "example.com", 443))
    assert not domains.allows(Origin("http", "localhost", 80))


@pytest.mark.parametrize(
    ("entry", "mentions"),
    [
        ("example.com//", "path"),  # one trailing slash is a harmless spelling, normalised away (below)
        ("example.com/path", "path"),
        ("https://example.com/a/", "path"),
        ("example.com?x=1", "query"),
        ("example.com#top", "fragment"),
        ("user@example.com", "userinfo"),
        ("https://user:pw@example.com", "userinfo"),
        ("example.com\\evil", "backslash"),
        ("exa mple.com", "whitespace"),
        (" example.com", "whitespace"),
        ("example.com\t", "whitespace"),
        ("example.com\u3000", "whitespace"),
        ("", "empty"),
        ("*", "alone"),
        ("*foo.com", "leftmost label"),
        ("a.*.com", "leftmost label"),
        ("**.com", "leftmost label"),
        ("*.*.example.com", "leftmost label"),
        ("foo*.example.com", "leftmost label"),
        ("com", "public suffix"),
        ("co.uk", "public suffix"),
        ("github.io", "public suffix"),
        ("vercel.app", "public suffix"),
        ("*.com", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("*.github.io", "public suffix"),
        ("*.vercel.app", "public suffix"),
        ("*.kawasaki.jp", "public suffix"),
        ("intranet", "public suffix"),
        ("a_b.example.com", "host name"),
        ("-a.example.com", "host name"),
        ("a-.example.com", "host name"),
        ("a" * 64 + ".example.com", "host name"),
        (".".join(["a" * 63] * 4) + ".com", "host name"),
        ("example..com", "host name"),
        ("example.com..", "host name"),
        (".example.com", "host name"),
        ("xn--zz.example.com", "host name"),
        ("*.", "host name"),
        ("example.com:0", "port"),
        ("example.com:65536", "port"),
        ("example.com:080", "port"),
        ("example.com:", "port"),
        ("example.com:+80", "port"),
        ("example.com:http", "port"),
        ("javascript:alert(1)", "port"),
        ("ftp://example.com", "http://"),
        ("ws://example.com", "http://"),
        ("*.127.0.0.1", "IP address"),
        ("*.[::1]", "IP address"),
        ("127.1", "IPv4"),
        ("2130706433", "IPv4"),
        ("0x7f.0.0.1", "IPv4"),
        ("127.000.0.1", "IPv4"),
        ("256.0.0.1", "IPv4"),
        ("::1", "brackets"),
        ("[::1", "IPv6"),
        ("[::1]x", "IPv6"),
        ("[fe80::1%eth0]", "IPv6"),
        ("[not-an-address]", "IPv6"),
    ],
)
def test_refuses_each_class_of_bad_entry_with_a_clear_message(entry: str, mentions: str) -> None:
    error = refusal(["example.org", entry])

    assert [e.field for e in error.errors] == ["domains[1]"]
    assert mentions in error.errors[0].message


def test_a_wildcard_over_a_name_with_public_suffixes_beneath_it_is_refused_naming_one() -> None:
    with pytest.raises(ValidationError) as refused:
        AllowedDomains.parse(["*.amazonaws.com"])
    message = refused.value.errors[0].message
    named = re.search(r"public suffix '([^']+)'", message)
    assert named is not None and named.group(1).endswith(".amazonaws.com"), message
    assert PublicSuffixList(only_icann=False).is_public(named.group(1))  # e.g. s3.amazonaws.com, a bucket per customer


@pytest.mark.parametrize("entry", ["amazonaws.com", "*.example.com", "*.shop.example.com", "*.bucket.s3.amazonaws.com",
                                   "*.city.kawasaki.jp"])
def test_a_name_with_no_public_suffix_at_or_beneath_it_may_be_a_wildcard(entry: str) -> None:
    assert AllowedDomains.parse([entry]).entries == (entry,)


def test_refuses_a_non_string_entry() -> None:
    error = refusal(["example.com", 42])  # type: ignore[list-item]

    assert [e.field for e in error.errors] == ["domains[1]"]


def test_lists_every_bad_entry_at_once_by_its_index() -> None:
    error = refusal(["example.com", "com", "ok.example.org", "*", "a/b", "example.net", "x:99999"])

    assert [e.field for e in error.errors] == ["domains[1]", "domains[3]", "domains[4]", "domains[6]"]


def test_a_refusal_names_the_entry_it_refuses() -> None:
    error = refusal(["*.co.uk"])

    assert "'*.co.uk'" in error.errors[0].message


def test_accepts_exactly_the_maximum_number_of_entries() -> None:
    entries = [f"site{i}.example.com" for i in range(MAX_ENTRIES)]

    assert len(AllowedDomains.parse(entries).entries) == 1000


def test_refuses_one_entry_over_the_maximum_with_one_error_on_the_list() -> None:
    error = refusal([f"site{i}.example.com" for i in range(MAX_ENTRIES + 1)])

    assert [e.field for e in error.errors] == ["domains"]
    assert "1000" in error.errors[0].message


def test_compiles_entries_into_origin_keys_with_explicit_ports() -> None:
    compiled = AllowedDomains.parse(
        ["example.com", "*.shop.example.org", "localhost", "localhost:3000", "http://[::1]:8080"]
    ).compile()

    assert compiled.exact == {
        "https://example.com:443",
        "http://localhost:80",
        "https://localhost:443",
        "http://localhost:3000",
        "https://localhost:3000",
        "http://[::1]:8080",
    }
    assert compiled.wildcard == {"https://shop.example.org:443"}


def test_compiled_domains_survive_a_json_round_trip_as_sets() -> None:
    compiled = AllowedDomains.parse(["example.com", "*.example.org"]).compile()

    decoded = msgspec.json.decode(msgspec.json.encode(compiled), type=CompiledDomains)

    assert decoded == compiled
    assert isinstance(decoded.exact, frozenset)
    assert isinstance(decoded.wildcard, frozenset)
    assert decoded.allows(Origin("https", "a.b.example.org", 443))


def test_an_entry_with_a_scheme_admits_only_that_scheme() -> None:
    domains = AllowedDomains.parse(["http://example.com", "https://localhost"])

    assert domains.allows(Origin("http", "example.com", 80))
    assert not domains.allows(Origin("https", "example.com", 443))
    assert domains.allows(Origin("https", "localhost", 443))
    assert not domains.allows(Origin("http", "localhost", 80))


def test_a_wildcard_entry_admits_https_only_even_over_localhost() -> None:
    domains = AllowedDomains.parse(["*.localhost"])

    assert domains.allows(Origin("https", "app.localhost", 443))
    assert not domains.allows(Origin("http", "app.localhost", 80))
    assert not domains.allows(Origin("https", "localhost", 443))


def test_stored_entries_are_trusted_without_revalidation() -> None:
    # Replaying history must not raise even if the suffix list has moved since.
    stored = AllowedDomains(("now-a-suffix.example",))

    assert stored.allows(parse_origin("https://now-a-suffix.example"))  # type: ignore[arg-type]


def test_refuses_a_single_string_in_place_of_a_list() -> None:
    error = refusal("example.com")  # type: ignore[arg-type]

    assert [e.field for e in error.errors] == ["domains"]


# ---- harmless spellings, and what an entry admits (issue 31) ----


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("www.example.com/", "www.example.com"),
        ("https://www.example.com/", "https://www.example.com"),
        ("example.com:443/", "example.com"),
        ("http://example.com:80", "http://example.com"),
        ("*.shop.example.org/", "*.shop.example.org"),
        ("localhost:3000/", "localhost:3000"),
    ],
)
def test_a_trailing_slash_and_the_default_port_are_normalised_away(written: str, stored: str) -> None:
    assert AllowedDomains.parse([written]).entries == (stored,)


@pytest.mark.parametrize("written", ["example.com/shop", "example.com//", "example.com/?", "https://example.com/a/"])
def test_a_path_is_still_refused_and_the_message_says_what_an_entry_admits(written: str) -> None:
    with pytest.raises(ValidationError) as refused:
        AllowedDomains.parse([written])
    (error,) = refused.value.errors
    assert "must not contain a" in error.message
    assert "https only" in error.message and "*.host" in error.message


@pytest.mark.parametrize(
    ("entry", "admits"),
    [
        ("example.com", "https://example.com (port 443 only)"),
        ("http://example.com", "http://example.com (port 80 only)"),
        ("localhost:3000", "http://localhost:3000 and https://localhost:3000 (port 3000)"),
        ("*.example.com", "https://*.example.com (port 443 only): the subdomains of example.com at any depth, "
                          "not example.com itself"),
    ],
)
def test_each_stored_entry_says_what_it_admits(entry: str, admits: str) -> None:
    assert AllowedDomains.parse([entry]).explained() == [(entry, admits)]

"""Properties of allowed-domain matching, checked against a naive reading of the rules."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from publicsuffixlist import PSLFILE, PublicSuffixList

from domain.domains import AllowedDomains, CompiledDomains
from domain.errors import ValidationError
from domain.origin import Origin, parse_origin

LABELS = ["a", "b", "shop", "example", "xn--bcher-kva"]
SUFFIXES = ["com", "org", "co.uk", "github.io"]
PORTS = [None, 80, 443, 3000]
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class WrittenEntry:
    """An entry as the reference reads it, and the text an admin might have typed for it."""

    scheme: str | None
    wildcard: bool
    labels: tuple[str, ...]
    port: int | None
    text: str


names = st.builds(
    lambda labels, suffix: (*labels, *suffix.split(".")),
    st.lists(st.sampled_from(LABELS), max_size=3),
    st.sampled_from(SUFFIXES),
)
hosts = st.one_of(names, st.sampled_from([("localhost",), ("127", "0", "0", "1"), ("[::1]",)]))


def spelled(labels: tuple[str, ...], style: str) -> str:
    """The host written the way an admin might: upper case, Unicode, a trailing or full-width dot."""
    host = ".".join(labels)
    if style == "upper":
        return host.upper()
    if style == "unicode":
        return host.replace("xn--bcher-kva", "BÜCHER")
    if style == "trailing dot" and not host.startswith("["):
        return host + "."
    if style == "full-width dot":
        return host.replace(".", "。")
    return host


@st.composite
def written_entries(draw: st.DrawFn) -> WrittenEntry:
    scheme = draw(st.sampled_from([None, "http", "https"]))
    wildcard = draw(st.booleans())
    labels = draw(hosts)
    port = draw(st.sampled_from(PORTS))
    style = draw(st.sampled_from(["plain", "upper", "unicode", "trailing dot", "full-width dot"]))
    text = ("*." if wildcard else "") + spelled(labels, style)
    if port is not None:
        text += f":{port}"
    if scheme is not None:
        text = f"{scheme.upper() if style == 'upper' else scheme}://{text}"
    return WrittenEntry(scheme, wildcard, labels, port, text)


def accepted(entry: WrittenEntry) -> bool:
    try:
        AllowedDomains.parse([entry.text])
    except ValidationError:
        return False
    return True


valid_entry_lists = st.lists(written_entries(), min_size=1, max_size=6).map(
    lambda entries: [entry for entry in entries if accepted(entry)]
)


@st.composite
def origin_headers(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = ".".join(draw(hosts))
    if draw(st.booleans()):
        host = host.upper()
    port = draw(st.sampled_from(PORTS))
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def parsed(header: str) -> Origin:
    origin = parse_origin(header)
    assert origin is not None, header
    return origin


origins = origin_headers().map(parsed)


@st.composite
def origins_near(draw: st.DrawFn, entries: list[WrittenEntry]) -> Origin:
    """An origin on or just under one of the entries' hosts, so that matches and near misses are common."""
    entry = draw(st.sampled_from(entries))
    scheme = draw(st.sampled_from([entry.scheme or "https", "http", "https"]))
    fitting_prefix = "a." if entry.wildcard else ""
    prefix = draw(st.sampled_from([fitting_prefix, "", "a.", "x.b."]))
    if entry.labels[-1] in ("1", "[::1]"):
        prefix = ""
    port = draw(st.sampled_from([entry.port, entry.port, *PORTS]))
    host = prefix + ".".join(entry.labels)
    return parsed(f"{scheme}://{host}" + (f":{port}" if port is not None else ""))


@st.composite
def entries_and_origins(draw: st.DrawFn) -> tuple[list[WrittenEntry], Origin]:
    entries = draw(valid_entry_lists)
    near = bool(entries) and draw(st.integers(0, 3)) > 0
    return entries, draw(origins_near(entries) if near else origins)


def reference_allows(entries: list[WrittenEntry], origin: Origin) -> bool:
    """The rules of API.md applied literally, entry by entry."""
    origin_labels = tuple(origin.host.split("."))
    for entry in entries:
        is_ip = entry.labels in (("127", "0", "0", "1"), ("[::1]",))
        if entry.scheme is not None:
            schemes = {entry.scheme}
        elif not entry.wildcard and (entry.labels == ("localhost",) or is_ip):
            schemes = {"http", "https"}
        else:
            schemes = {"https"}
        if origin.scheme not in schemes:
            continue
        if (entry.port or DEFAULT_PORTS[origin.scheme]) != origin.port:
            continue
        if entry.wildcard:
            depth = len(entry.labels)
            if len(origin_labels) > depth and origin_labels[-depth:] == entry.labels:
                return True
        elif origin_labels == entry.labels:
            return True
    return False


@given(entries=st.lists(written_entries(), max_size=6))
def test_normalising_an_entry_list_twice_changes_nothing(entries: list[WrittenEntry]) -> None:
    texts = [entry.text for entry in entries if accepted(entry)]
    once = AllowedDomains.parse(texts)

    assert AllowedDomains.parse(once.entries) == once


@given(text=st.text(alphabet="abc.*:/[]1-_ÜＡ。xn", max_size=20))
def test_normalising_any_accepted_text_twice_changes_nothing(text: str) -> None:
    try:
        once = AllowedDomains.parse([text])
    except ValidationError:
        return

    assert AllowedDomains.parse(once.entries) == once


@given(case=entries_and_origins())
def test_compiled_matcher_agrees_with_the_reference(case: tuple[list[WrittenEntry], Origin]) -> None:
    entries, origin = case
    compiled = AllowedDomains.parse([entry.text for entry in entries]).compile()

    assert compiled.allows(origin) is reference_allows(entries, origin)


@given(entry=written_entries().filter(lambda e: e.wildcard and accepted(e)))
def test_a_wildcard_never_matches_its_apex(entry: WrittenEntry) -> None:
    domains = AllowedDomains.parse([entry.text])

    for scheme, default_port in DEFAULT_PORTS.items():
        apex = Origin(scheme, ".".join(entry.labels), entry.port or default_port)
        assert not domains.allows(apex)
        subdomain = Origin(scheme, "x." + apex.host, apex.port)
        assert domains.allows(subdomain) is (scheme == (entry.scheme or "https"))


@given(data=st.data(), entries=valid_entry_lists)
def test_matching_is_the_same_after_a_json_round_trip(data: st.DataObject, entries: list[WrittenEntry]) -> None:
    nearby = st.one_of(origins, origins_near(entries)) if entries else origins
    checked = data.draw(st.lists(nearby, min_size=1, max_size=10))
    compiled = AllowedDomains.parse([entry.text for entry in entries]).compile()

    decoded = msgspec.json.decode(msgspec.json.encode(compiled), type=CompiledDomains)

    assert isinstance(decoded.exact, frozenset) and isinstance(decoded.wildcard, frozenset)
    assert [decoded.allows(origin) for origin in checked] == [compiled.allows(origin) for origin in checked]


def test_generated_cases_are_allowed_often_enough_to_mean_something() -> None:
    outcomes: list[bool] = []

    @settings(max_examples=400, derandomize=True, database=None)
    @given(case=entries_and_origins())
    def record(case: tuple[list[WrittenEntry], Origin]) -> None:
        entries, origin = case
        outcomes.append(AllowedDomains.parse([entry.text for entry in entries]).allows(origin))

    record()

    allowed_share = sum(outcomes) / len(outcomes)
    assert 0.15 <= allowed_share <= 0.85, allowed_share


# ---- wildcards over names with public suffixes beneath them ------------------------------------------------------


@functools.cache
def suffix_rules() -> tuple[str, ...]:
    """Every suffix the public suffix list names (private section included; exceptions left out), as A-labels."""
    rules = []
    for line in open(PSLFILE, encoding="utf-8"):
        rule = line.split()[0].lower() if line.strip() and not line.startswith("//") else ""
        if rule and not rule.startswith("!"):
            rules.append(".".join(p if p == "*" or p.isascii() else p.encode("idna").decode() for p in rule.split(".")))
    return tuple(rules)


PSL = PublicSuffixList(accept_unknown=True, only_icann=False)


def named_suffix(message: str) -> str | None:
    found = re.search(r"public suffix '([^']+)'", message)
    return found.group(1) if found else None


def refusal_message(entry: str) -> str | None:
    try:
        AllowedDomains.parse([entry])
    except ValidationError as refused:
        return refused.errors[0].message
    return None


@given(rule=st.sampled_from(suffix_rules()).filter(lambda r: r.count(".") >= 1), depth=st.integers(1, 4))
def test_a_wildcard_over_any_ancestor_of_a_listed_suffix_is_refused_naming_a_suffix(rule: str, depth: int) -> None:
    labels = rule.split(".")
    ancestor = ".".join(labels[min(depth, len(labels) - 1):])
    message = refusal_message(f"*.{ancestor}")

    assert message is not None, f"*.{ancestor} was accepted, yet {rule} lies beneath it"
    named = named_suffix(message)
    assert named == ancestor or named is not None and named.endswith("." + ancestor), message
    assert named in suffix_rules() or PSL.is_public(named), message


TAILS = ["example.com", "amazonaws.com", "s3.amazonaws.com", "github.io", "example.co.uk", "kawasaki.jp",
         "city.kawasaki.jp", "blogspot.com", "herokuapp.com", "example.org", "shop.example"]


@given(labels=st.lists(st.sampled_from(["a", "b", "s3", "www", "compute", "xn--bcher-kva"]), max_size=2),
       tail=st.sampled_from(TAILS))
def test_a_wildcard_is_accepted_exactly_when_no_public_suffix_is_at_or_beneath_its_name(labels: list[str], tail: str) -> None:
    host = ".".join([*labels, tail])
    beneath = [rule for rule in suffix_rules() if rule.endswith("." + host)]
    expected_refused = PSL.is_public(host) or bool(beneath)
    message = refusal_message(f"*.{host}")

    assert (message is not None) is expected_refused, (host, beneath[:3], message)
    if beneath and not PSL.is_public(host):
        assert named_suffix(message or "") in beneath

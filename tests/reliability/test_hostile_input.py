"""Hostile input on every admin and public endpoint, on both wirings.

Oversized bodies and headers (each header within the 32 KiB all headers may
take together, api/request_limits.py, and over it), 10,000-level nesting, invalid UTF-8, NUL bytes,
numbers no store can hold, 10,000-element arrays, malformed UUIDs and duplicate
keys are each refused with a 4xx problem document that says what is wrong;
nothing is written, and the process answers normally afterwards. Text in any
script is either kept exactly or refused naming the field, never mangled.
Through the real server, what it refuses before the app sees it (a huge
request line or header, too many headers, a NUL byte) is a 4xx as well.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import ADMIN_BODY_LIMIT, create_app
from api.public import PUBLIC_BODY_LIMIT
from api.request_limits import HEADERS_LIMIT
from application.store import EventStore
from infrastructure.settings import Settings
from tests.reliability.conftest import Tenant, record, served, stored_events

PROBLEM_JSON = "application/problem+json"
SLOT = "\u2603slot\u2603"  # where a hostile JSON fragment replaces a field's value
MALFORMED_UUIDS = ["not-a-uuid", "", "1234", "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000",
                   "zzzzzzzz-e89b-12d3-a456-426614174000", "123e4567e89b12d3a456", "../../etc/passwd", "\u0000"]


@pytest.fixture
def app(settings: Settings) -> Litestar:
    """The app with the bounds on public writes lifted: each hostile value must be refused for what it is (400, 404),
    never for coming too often or once too many (429, tests/api/test_conversation_bounds.py)."""
    return create_app(dataclasses.replace(settings, rate_resumes="1000000/minute", rate_submissions="1000000/minute",
                                          form_submissions=1_000_000))


@dataclass
class Endpoint:
    method: str
    path: str
    body: dict[str, Any] | None = None
    strings: list[str] = field(default_factory=list)  # dotted paths of the body's text fields
    uuids: list[str] = field(default_factory=list)  # dotted paths of the body's id fields

    @property
    def public(self) -> bool:
        return self.path.startswith("/public/")

    @property
    def limit(self) -> int:
        return PUBLIC_BODY_LIMIT if self.public else ADMIN_BODY_LIMIT

    def headers(self, tenant: Tenant) -> dict[str, str]:
        return {"Origin": "https://example.com"} if self.public else dict(tenant.admin.headers)


def endpoints(t: Tenant) -> list[Endpoint]:
    """Every endpoint that takes a body, with a valid body whose fields the hostile inputs replace one at a time."""
    ids = t.ids
    widget, conversation = f"/v1/widgets/{ids['draft_widget_id']}", f"/public/v1/widgets/{ids['widget_id']}/conversations"
    token = ids["resume_token"]
    return [
        Endpoint("POST", "/v1/agents", {"name": "Support"}, ["name"]),
        Endpoint("POST", f"/v1/agents/{ids['agent_id']}/versions", {"label": "next"}, ["label"]),
        Endpoint("POST", "/v1/widgets",
                 {"agent_id": ids["agent_id"], "agent_version_id": ids["version_id"], "domains": ["example.com"],
                  "config": {"v1": {"branding": {"display_name": "Help"}}}},
                 ["domains.0", "config.v1.branding.display_name"], ["agent_id", "agent_version_id"]),
        Endpoint("PUT", f"{widget}/domains", {"domains": ["example.com", "shop.example.org"]}, ["domains.0", "domains.1"]),
        Endpoint("PUT", f"{widget}/agent-version", {"agent_version_id": ids["version_id"], "agent_id": ids["agent_id"]},
                 [], ["agent_version_id", "agent_id"]),
        Endpoint("PUT", f"{widget}/config", {"v1": {"branding": {"display_name": "Help"}, "text": {"welcome_message": "Hi"}}},
                 ["v1.branding.display_name", "v1.text.welcome_message"]),
        Endpoint("PATCH", f"{widget}/config", {"v1": {"appearance": {"launcher_label": "Chat"}}}, ["v1.appearance.launcher_label"]),
        Endpoint("POST", conversation, {"visitor": {"name": "Ada", "locale": "en"}}, ["visitor.name", "visitor.locale"]),
        Endpoint("POST", f"{conversation}/{ids['cid']}/resume", {"resume_token": token}, ["resume_token"]),
        Endpoint("POST", f"{conversation}/{ids['cid']}/forms/pre",
                 {"resume_token": token, "values": {"email": "ada@example.com", "topic": "Sales", "note": "Call me"}},
                 ["resume_token", "values.email", "values.topic", "values.note"]),
        Endpoint("POST", f"{conversation}/{ids['cid']}/feedback", {"resume_token": token, "rating": 5, "comment": "Great"},
                 ["resume_token", "comment"]),
        Endpoint("POST", f"{conversation}/{ids['cid']}/end", {"resume_token": token}, ["resume_token"]),
    ]


def calls_without_body(t: Tenant) -> list[Endpoint]:
    ids = t.ids
    widget, agent = f"/v1/widgets/{ids['draft_widget_id']}", f"/v1/agents/{ids['agent_id']}"
    return [
        Endpoint("GET", "/v1/widgets"), Endpoint("GET", widget), Endpoint("GET", f"{widget}/history"),
        Endpoint("GET", f"{widget}/conversations"), Endpoint("GET", "/v1/audit/events"), Endpoint("GET", agent),
        Endpoint("POST", f"{widget}/publish"), Endpoint("POST", f"{widget}/unpublish"), Endpoint("DELETE", widget),
        Endpoint("POST", f"{agent}/versions/{ids['draft_version_id']}/publish"),
        Endpoint("POST", f"{agent}/versions/{ids['version_id']}/unpublish"),
        Endpoint("GET", f"/public/v1/widgets/{ids['widget_id']}"),
    ]


def with_slot(body: dict[str, Any], dotted: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    *parents, last = dotted.split(".")
    target: Any = copy
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = SLOT
    else:
        target[last] = SLOT
    return copy


def raw(body: dict[str, Any], dotted: str, fragment: bytes) -> bytes:
    """The body's JSON with one field's value replaced by a raw fragment (which need not be valid JSON)."""
    return json.dumps(with_slot(body, dotted)).encode().replace(json.dumps(SLOT).encode(), fragment)


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# name -> the fragment, given the room (bytes) left under the endpoint's body limit
FRAGMENTS: dict[str, Callable[[int], bytes]] = {
    "10,000-level nesting": lambda room: deep(10_000) if room > 20_000 else deep(room // 2 - 8),
    "invalid UTF-8": lambda room: b'"\xff\xfe\xfd"',
    "overlong UTF-8": lambda room: b'"\xc0\xaf"',
    "UTF-8 of a lone surrogate": lambda room: b'"\xed\xa0\x80"',
    "escaped lone surrogate": lambda room: b'"\\ud800"',
    "escaped NUL": lambda room: b'"a\\u0000b"',
    "raw NUL": lambda room: b'"a\x00b"',
    "escaped control character": lambda room: b'"a\\u001b[31mred"',
    "1e400": lambda room: b"1e400",
    "-1e400": lambda room: b"-1e400",
    "2**70": lambda room: str(2**70).encode(),
    "10,000-element array": lambda room: json.dumps(["a"] * 10_000).encode(),
    "object instead of text": lambda room: b'{"$gt": ""}',
    "truncated": lambda room: b'"unterminated',
}


def expected_statuses(endpoint: Endpoint, dotted: str, body: bytes) -> set[int]:
    if len(body) > endpoint.limit:
        return {413}
    if dotted == "resume_token":
        return {400, 404}  # a well-formed string that is no conversation's token finds nothing
    return {400}


def assert_refused(response: httpx.Response, statuses: set[int], what: str) -> dict[str, Any]:
    assert response.status_code in statuses, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), what
    problem = response.json()
    assert problem["status"] == response.status_code and problem["code"] and problem["title"], what
    if response.status_code == 413:
        assert problem["code"] == "body_too_large", what
    if response.status_code == 400:
        assert problem["code"] == "invalid_request", what
        assert problem.get("detail") or problem.get("errors"), f"{what}: a 400 must say what is wrong"
    text = response.text.lower()
    assert "traceback" not in text and "sqlite3." not in text and "psycopg." not in text, what
    return problem


class Hostile:
    """Sends hostile requests and counts them; the store must not move."""

    def __init__(self, client: TestClient[Litestar], store: EventStore) -> None:
        self.client, self.store = client, store
        self.before = stored_events(store)
        self.sent = 0

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.sent += 1
        return self.client.request(method, path, **kwargs)

    def nothing_written(self) -> None:
        assert stored_events(self.store) == self.before, "a refused request wrote an event"


@pytest.fixture
def hostile(client: TestClient[Litestar], store: EventStore, tenants: tuple[Tenant, Tenant]) -> Iterator[Hostile]:
    sender = Hostile(client, store)
    yield sender
    sender.nothing_written()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    tenant = tenants[0]  # and it still works: a valid command succeeds
    assert tenant.admin.call("PUT", f"/v1/widgets/{tenant.ids['draft_widget_id']}/domains",
                             json={"domains": ["after.example.com"]}).status_code == 200
    record("hostile.requests", sender.sent)


def test_hostile_field_values_are_refused_on_every_endpoint_and_write_nothing(
    hostile: Hostile, tenants: tuple[Tenant, Tenant]
) -> None:
    tenant = tenants[0]
    for endpoint in endpoints(tenant):
        for dotted in endpoint.strings + endpoint.uuids:
            room = endpoint.limit - len(json.dumps(endpoint.body))
            for name, fragment in FRAGMENTS.items():
                body = raw(endpoint.body or {}, dotted, fragment(room))
                response = hostile.send(endpoint.method, endpoint.path, content=body,
                                        headers={**endpoint.headers(tenant), "Content-Type": "application/json"})
                assert_refused(response, expected_statuses(endpoint, dotted, body), f"{name} in {dotted} of {endpoint.method} {endpoint.path}")
        for dotted in endpoint.uuids:
            for malformed in MALFORMED_UUIDS:
                body = raw(endpoint.body or {}, dotted, json.dumps(malformed).encode())
                response = hostile.send(endpoint.method, endpoint.path, content=body,
                                        headers={**endpoint.headers(tenant), "Content-Type": "application/json"})
                problem = assert_refused(response, {400}, f"{malformed!r} as {dotted} of {endpoint.method} {endpoint.path}")
                assert any(dotted in e["field"] for e in problem.get("errors") or []), problem


def test_hostile_whole_bodies_are_refused_on_every_endpoint_and_write_nothing(
    hostile: Hostile, tenants: tuple[Tenant, Tenant]
) -> None:
    tenant = tenants[0]
    for endpoint in endpoints(tenant):
        headers = {**endpoint.headers(tenant), "Content-Type": "application/json"}
        valid = json.dumps(endpoint.body).encode()
        first_key = next(iter(endpoint.body or {}))
        bodies = {
            "one byte over the limit": raw(endpoint.body or {}, endpoint.strings[0] if endpoint.strings else first_key,
                                           json.dumps("x" * (endpoint.limit + 1 - len(valid))).encode()),
            "a key given twice": b"{" + json.dumps({first_key: (endpoint.body or {})[first_key]}).encode()[1:-1] + b"," + valid[1:],
            "a key given twice, escaped": valid[:-1] + b', "' + "".join(f"\\u{ord(c):04x}" for c in first_key).encode() + b'": null}',
            "not JSON": b"{'single': 'quotes'}",
            "JSON text that is not an object": b'"just a string"',
            "10,000 levels of nesting": deep(10_000),
        }
        for name, body in bodies.items():
            statuses = {413} if len(body) > endpoint.limit else {400}
            response = hostile.send(endpoint.method, endpoint.path, content=body, headers=headers)
            problem = assert_refused(response, statuses, f"{name}: {endpoint.method} {endpoint.path}")
            if "twice" in name:
                assert "more than once" in problem["detail"], problem

        def chunks(size: int = endpoint.limit + 1024, piece: int = 1024) -> Iterator[bytes]:
            yield b'{"x": "'
            for _ in range(size // piece):
                yield b"y" * piece
            yield b'"}'

        # Chunked, with no Content-Length to refuse it up front: still cut off at the limit.
        response = hostile.send(endpoint.method, endpoint.path, content=chunks(), headers=headers)
        assert_refused(response, {413}, f"chunked oversized body: {endpoint.method} {endpoint.path}")


def test_malformed_ids_in_paths_find_nothing(hostile: Hostile, tenants: tuple[Tenant, Tenant]) -> None:
    tenant = tenants[0]
    ids = tenant.ids
    real = [ids[k] for k in ("agent_id", "version_id", "draft_widget_id", "widget_id", "cid")]
    for endpoint in endpoints(tenant) + calls_without_body(tenant):
        for value in real:
            if value not in endpoint.path:
                continue
            for malformed in ["not-a-uuid", value[:-1], value + "0", value.replace("-", "g", 1), "%00", "%2e%2e", "%ff%fe", "\u0661" * 8]:
                path = endpoint.path.replace(value, malformed)
                headers = endpoint.headers(tenant)
                body = json.dumps(endpoint.body).encode() if endpoint.body is not None else None
                response = hostile.send(endpoint.method, path, content=body, headers={**headers, "Content-Type": "application/json"})
                assert_refused(response, {400, 404}, f"{malformed!r} in {endpoint.method} {path}")


def test_hostile_headers_are_refused_or_ignored_on_every_endpoint(hostile: Hostile, tenants: tuple[Tenant, Tenant]) -> None:
    tenant = tenants[0]
    huge = "x" * 20_000  # far beyond any valid value, within the headers' limit: the header's own check refuses it
    for endpoint in endpoints(tenant) + calls_without_body(tenant):
        body = json.dumps(endpoint.body).encode() if endpoint.body is not None else None
        base = {**endpoint.headers(tenant), "Content-Type": "application/json"}

        def call(headers: dict[str, Any], endpoint: Endpoint = endpoint, body: bytes | None = body) -> httpx.Response:
            return hostile.send(endpoint.method, endpoint.path, content=body, headers=headers)

        what = f"{endpoint.method} {endpoint.path}"
        over = assert_refused(call({**base, "X-Padding": "x" * HEADERS_LIMIT}), {431}, f"headers over the limit: {what}")
        assert over["code"] == "request_header_fields_too_large", what
        if endpoint.public:
            assert_refused(call({**base, "Origin": "https://" + huge + ".example.com"}), {403}, f"huge Origin: {what}")
            assert_refused(call({**base, "Origin": b"https://exa\x00mple.com"}), {403}, f"NUL in Origin: {what}")
            assert_refused(call({**base, "Origin": "https://bücher.example".encode()}), {403}, f"UTF-8 Origin: {what}")
            no_origin = {k: v for k, v in base.items() if k != "Origin"}
            assert_refused(call({**no_origin, "Referer": "https://" + huge + ".example.com/"}), {403}, f"huge Referer: {what}")
            continue
        assert_refused(call({**base, "Authorization": "Bearer " + huge}), {401}, f"huge Authorization: {what}")
        assert_refused(call({**base, "Authorization": b"Bearer " + "\u00ff".encode("latin-1") * 64}), {401}, f"Latin-1 Authorization: {what}")
        assert_refused(call({**base, "Authorization": b"Bearer a\x00b.c.d"}), {401}, f"NUL in Authorization: {what}")
        creates = endpoint.method == "POST" and endpoint.path.endswith(("/v1/agents", "/v1/widgets", "/versions"))
        if endpoint.method != "GET" and not creates:
            assert_refused(call({**base, "If-Match": '"' + "9" * 20_000 + '"'}), {400}, f"huge If-Match: {what}")
            assert_refused(call({**base, "If-Match": '"1\u00e9"'.encode()}), {400}, f"non-ASCII If-Match: {what}")
        if creates:
            assert_refused(call({**base, "Idempotency-Key": huge}), {400}, f"huge Idempotency-Key: {what}")
            assert_refused(call({**base, "Idempotency-Key": "k\u00e9y".encode()}), {400}, f"non-ASCII Idempotency-Key: {what}")

    # Headers that mean nothing to the service change nothing: a read still answers 200.
    widget = f"/v1/widgets/{tenant.ids['widget_id']}"
    response = hostile.send("GET", widget, headers={**tenant.admin.headers, "X-Request-Id": huge})
    assert response.status_code == 200 and response.headers["x-request-id"] != huge
    junk = {f"X-Junk-{i}": "v" * 100 for i in range(250)}  # 27 KB in all: within the headers' limit
    assert hostile.send("GET", widget, headers={**tenant.admin.headers, **junk}).status_code == 200


UNICODE = [
    "Ünïcødé ßupport",
    "客服助手",
    "مساعد الدعم",
    "🤖 Bot 🚀",
    "e\u0301\u0301\u0301",  # combining marks
    "\u202eevil\u202c",  # right-to-left override
    "zero\u200bwidth",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",  # outside the BMP
]
# Fields of free text, which keep any script; the others have a syntax (domains, locale, email, a form's options, tokens).
FREE_TEXT = {"name", "label", "display_name", "welcome_message", "launcher_label", "note", "comment"}


def test_text_in_any_script_is_kept_exactly_or_refused_naming_the_field(
    client: TestClient[Litestar], tenants: tuple[Tenant, Tenant], store: EventStore
) -> None:
    tenant = tenants[0]
    kept = refused = 0
    for endpoint in endpoints(tenant):
        for dotted in endpoint.strings:
            for text in UNICODE:
                body = with_slot(endpoint.body or {}, dotted)
                encoded = json.dumps(body, ensure_ascii=False).replace(json.dumps(SLOT, ensure_ascii=False), json.dumps(text, ensure_ascii=False))
                before = stored_events(store)
                response = client.request(endpoint.method, endpoint.path, content=encoded.encode(),
                                          headers={**endpoint.headers(tenant), "Content-Type": "application/json"})
                what = f"{text!r} in {dotted} of {endpoint.method} {endpoint.path}"
                assert response.status_code < 500, what
                if dotted.split(".")[-1] in FREE_TEXT:
                    assert response.status_code < 300, f"{what}: free text refused: {response.text[:300]}"
                if response.status_code < 300:
                    kept += 1
                    if endpoint.public or "domains" in dotted:
                        continue  # visitor answers are not echoed; domains are stored normalised (IDNA), see test_domains
                    assert text in set(_text_values(response.json())), f"{what}: not kept exactly: {response.text[:300]}"
                else:
                    refused += 1
                    problem = assert_refused(response, {400, 404, 409}, what)
                    assert stored_events(store) == before, what
                    if response.status_code == 400:
                        leaf = dotted.split(".")[-1]
                        assert any(leaf in e["field"] for e in problem.get("errors") or []), f"{what}: {problem}"
    record("hostile.unicode_kept", kept)
    record("hostile.unicode_refused", refused)


def _text_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _text_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _text_values(v)


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and read the status line and headers of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_the_real_server_refuses_what_never_reaches_the_app_with_a_4xx_and_stays_up(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    """Through `widgets serve` (granian): limits the HTTP server applies before the app sees the request.

    These answers come from the server itself, with an empty body rather than a problem document (their bounds are
    measured in tests/api/test_request_limits.py); what passes them meets the app's own limits, as a problem.
    """
    with served(embedded_settings, tmp_path / "serve.log") as server:
        refused = {
            "a 100 KB request line": (b"GET /v1/widgets/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
            "a 1 MB header": (b"GET /v1/widgets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 1_000_000 + b"\r\n\r\n", b"431"),
            "a NUL byte in a header": (b"GET /v1/widgets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x00b\r\n\r\n", b"400"),
            "200 headers": (b"GET /v1/widgets HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-J%d: v\r\n" % i for i in range(200)) + b"\r\n", b"431"),
        }
        for what, (request, status) in refused.items():
            answer = raw_exchange(server.url, request)
            assert answer.startswith(b"HTTP/1.1 " + status), f"{what}: {answer[:200]!r}"
        # What does reach the app gets the app's problem answer: a 20 KB token, invalid UTF-8 in a header, a 200 KB token.
        for token, status in ((b"x" * 20_000, b"401"), (b"\xff\xfe", b"401"), (b"x" * 200_000, b"431")):
            answer = raw_exchange(server.url, b"GET /v1/widgets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + token + b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 " + status) and b"application/problem+json" in answer, answer[:300]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert server.process.poll() is None
    record("hostile.server_level_refusals", len(refused))

"""Admin tokens: no valid token is 401, a token without the scope is 403, and neither changes anything."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from application.store import EventStore
from infrastructure.auth import TokenAuthority
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)


def token(settings: Settings, **claims: Any) -> str:
    now = int(time.time())
    defaults = {"sub": "alice", "org_id": "org_a", "scope": "widgets:write widgets:read audit:read", "iat": now, "exp": now + 600}
    return jwt.encode({k: v for k, v in (defaults | claims).items() if v is not None}, settings.auth_secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key="", algorithm="none")


def bad_authorizations(settings: Settings) -> dict[str, dict[str, str]]:
    now = int(time.time())
    valid_claims = {"sub": "alice", "org_id": "org_a", "scope": "widgets:write widgets:read", "exp": now + 600}
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "not bearer": {"Authorization": f"Basic {token(settings)}"},
        "bearer without token": {"Authorization": "Bearer "},
        "garbage": bearer("not.a.jwt"),
        "expired": bearer(TokenAuthority(settings.auth_secret).mint("org_a", "alice", ["widgets:write", "widgets:read"], ttl=-60)),
        "other secret": bearer(jwt.encode(valid_claims, "another-secret-that-is-long-enough-for-hs256", algorithm="HS256")),
        "alg none": bearer(unsigned(valid_claims)),
        "tampered": bearer(token(settings)[:-4] + "AAAA"),
        "no exp": bearer(token(settings, exp=None)),
        "no org": bearer(token(settings, org_id=None)),
        "empty org": bearer(token(settings, org_id="")),
        "no sub": bearer(token(settings, sub=None)),
        "scope not a string": bearer(token(settings, scope=["widgets:write"])),
    }


CASES = [
    "missing", "empty", "not bearer", "bearer without token", "garbage", "expired", "other secret", "alg none",
    "tampered", "no exp", "no org", "empty org", "no sub", "scope not a string",
]


@pytest.mark.parametrize("case", CASES)
def test_a_request_without_a_valid_token_is_401(org_a: Admin, store: EventStore, settings: Settings, case: str) -> None:
    widget = org_a.widget()
    headers = bad_authorizations(settings)[case]
    before = store.recorder.max_notification_id()
    calls = [
        ("GET", f"/v1/widgets/{widget['id']}", None),
        ("PUT", f"/v1/widgets/{widget['id']}/domains", {"domains": []}),
        ("DELETE", f"/v1/widgets/{widget['id']}", None),
        ("POST", "/v1/agents", {"name": "bot"}),
        ("GET", f"/v1/agents/{widget['agent_id']}", None),
    ]
    for method, path, body in calls:
        response = org_a.client.request(method, path, json=body, headers=headers)
        assert_problem(response, 401, "invalid_token")
        assert response.headers.get("www-authenticate", "").startswith("Bearer")
    assert store.recorder.max_notification_id() == before


def test_an_expired_token_says_so(org_a: Admin, settings: Settings) -> None:
    response = org_a.client.get(f"/v1/agents/{uuid.uuid4()}", headers=bad_authorizations(settings)["expired"])
    body = assert_problem(response, 401, "invalid_token")
    assert "expired" in body["detail"]


WRITES = [
    ("POST", "/v1/agents", {"name": "bot"}),
    ("POST", "/v1/agents/{agent_id}/versions", None),
    ("POST", "/v1/agents/{agent_id}/versions/{agent_version_id}/publish", None),
    ("POST", "/v1/agents/{agent_id}/versions/{agent_version_id}/unpublish", None),
    ("POST", "/v1/widgets", {"agent_id": "{agent_id}", "agent_version_id": "{agent_version_id}"}),
    ("PUT", "/v1/widgets/{id}/domains", {"domains": ["other.example.com"]}),
    ("PUT", "/v1/widgets/{id}/agent-version", {"agent_version_id": "{agent_version_id}"}),
    ("PUT", "/v1/widgets/{id}/config", {"v1": {"locale": "en"}}),
    ("PATCH", "/v1/widgets/{id}/config", {"v1": {"locale": "en"}}),
    ("POST", "/v1/widgets/{id}/publish", None),
    ("POST", "/v1/widgets/{id}/unpublish", None),
    ("DELETE", "/v1/widgets/{id}", None),
]
READS = [
    ("GET", "/v1/agents/{agent_id}", None),
    ("GET", "/v1/widgets/{id}", None),
]


def fill(template: Any, widget: dict[str, Any]) -> Any:
    if isinstance(template, str):
        return template.format(**widget)
    if isinstance(template, dict):
        return {k: fill(v, widget) for k, v in template.items()}
    return template


def test_a_token_without_widgets_write_is_403_on_every_change(org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget()
    read_only = org_a.with_scopes("widgets:read", "audit:read")
    before = store.recorder.max_notification_id()
    for method, path, body in WRITES:
        response = org_a.client.request(method, fill(path, widget), json=fill(body, widget), headers=read_only)
        problem = assert_problem(response, 403, "insufficient_scope")
        assert "widgets:write" in problem["detail"]
    assert store.recorder.max_notification_id() == before
    assert org_a.get_widget(widget["id"]) == widget


def test_a_token_without_widgets_read_is_403_on_reads(org_a: Admin) -> None:
    widget = org_a.widget()
    write_only = org_a.with_scopes("widgets:write")
    for method, path, _ in READS:
        assert_problem(org_a.client.request(method, fill(path, widget), headers=write_only), 403, "insufficient_scope")


def test_a_token_with_no_scopes_can_do_nothing(org_a: Admin, settings: Settings) -> None:
    widget = org_a.widget()
    nothing = bearer(token(settings, scope=""))
    for method, path, body in [*WRITES, *READS]:
        response = org_a.client.request(method, fill(path, widget), json=fill(body, widget), headers=nothing)
        assert_problem(response, 403, "insufficient_scope")


def test_a_valid_token_names_the_actor_on_the_events(org_a: Admin, store: EventStore, settings: Settings) -> None:
    widget = org_a.widget()
    response = org_a.client.put(
        f"/v1/widgets/{widget['id']}/domains", json={"domains": []}, headers=bearer(token(settings, sub="user_42"))
    )
    assert response.status_code == 200
    events = list(store.events.get(uuid.UUID(widget["id"])))
    assert [e.actor for e in events] == ["alice", "user_42"]

"""Tenant isolation as a property: two organizations, the same Idempotency-Keys, each other's real ids.

For any key, both organizations create an agent, a version and a widget with
it (ids derived from the key are per organization, so they differ), and a
conversation on the widget. Then each, in both directions, calls every
endpoint with the other's real ids: the answer is always 404 `not_found`, the
very answer a random id gets, showing nothing of the other organization; the
other's resources are unchanged, nothing is written, and lists and feeds show
each organization only its own.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from application.store import EventStore
from infrastructure.settings import Settings
from tests.api.conftest import Admin
from tests.api.public_helpers import CONFIG, sync
from tests.reliability.conftest import record, stored_events

# Every call that names a resource, admin and public: {name} are the ids of whoever is targeted.
ADMIN_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/agents/{agent_id}", None),
    ("POST", "/v1/agents/{agent_id}/versions", {"label": "intruder"}),
    ("POST", "/v1/agents/{agent_id}/versions/{version_id}/publish", None),
    ("POST", "/v1/agents/{agent_id}/versions/{version_id}/unpublish", None),
    ("POST", "/v1/widgets", {"agent_id": "{agent_id}", "agent_version_id": "{version_id}"}),
    ("GET", "/v1/widgets/{widget_id}", None),
    ("GET", "/v1/widgets/{widget_id}?version=1", None),
    ("GET", "/v1/widgets/{widget_id}?at=2100-01-01T00:00:00Z", None),
    ("GET", "/v1/widgets/{widget_id}/history", None),
    ("GET", "/v1/widgets/{widget_id}/history?after=1&limit=5", None),
    ("GET", "/v1/widgets/{widget_id}/conversations", None),
    ("PUT", "/v1/widgets/{widget_id}/domains", {"domains": ["intruder.example.com"]}),
    ("PUT", "/v1/widgets/{widget_id}/agent-version", {"agent_version_id": "{version_id}"}),
    ("PUT", "/v1/widgets/{widget_id}/agent-version", {"agent_version_id": "{version_id}", "agent_id": "{agent_id}"}),
    ("PUT", "/v1/widgets/{widget_id}/config", {"v1": {"branding": {"display_name": "Intruder"}}}),
    ("PATCH", "/v1/widgets/{widget_id}/config", {"v1": {"branding": {"display_name": "Intruder"}}}),
    ("POST", "/v1/widgets/{widget_id}/publish", None),
    ("POST", "/v1/widgets/{widget_id}/unpublish", None),
    ("DELETE", "/v1/widgets/{widget_id}", None),
]
# The intruder's own live widget, with the target's conversation id and resume token.
PUBLIC_CALLS: list[tuple[str, Any]] = [
    ("resume", {"resume_token": "{resume_token}"}),
    ("forms/pre", {"resume_token": "{resume_token}", "values": {"email": "eve@example.com"}}),
    ("feedback", {"resume_token": "{resume_token}", "rating": 1}),
    ("end", {"resume_token": "{resume_token}"}),
]
# One app for every example (its state growing is part of the point); a dozen keys a wiring keep it to seconds.
settings_for_app = settings(
    max_examples=12, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


def fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: fill(v, ids) for k, v in template.items()}
    return template


def resources(admin: Admin, client: TestClient[Litestar], app: Litestar, key: str) -> dict[str, str]:
    """An agent, a published version, a live widget (all created with `key`) and a conversation on it."""
    idempotent = {"Idempotency-Key": key}
    agent = admin.call("POST", "/v1/agents", json={"name": "Shared key"}, headers=idempotent)
    assert agent.status_code == 201, agent.text
    version = admin.call("POST", f"/v1/agents/{agent.json()['id']}/versions", json={"label": "shared"}, headers=idempotent)
    assert version.status_code == 201, version.text
    ids = {"agent_id": agent.json()["id"], "version_id": version.json()["id"]}
    assert admin.call("POST", fill("/v1/agents/{agent_id}/versions/{version_id}/publish", ids)).status_code == 200
    body = {"agent_id": ids["agent_id"], "agent_version_id": ids["version_id"], "domains": ["example.com"], "config": CONFIG}
    widget = admin.call("POST", "/v1/widgets", json=body, headers=idempotent)
    assert widget.status_code == 201, widget.text
    ids["widget_id"] = widget.json()["id"]
    assert admin.call("POST", fill("/v1/widgets/{widget_id}/publish", ids)).status_code == 200
    sync(app)
    conversation = client.post(f"/public/v1/widgets/{ids['widget_id']}/conversations", headers={"Origin": "https://example.com"})
    assert conversation.status_code == 201, conversation.text
    ids["cid"], ids["resume_token"] = conversation.json()["conversation_id"], conversation.json()["resume_token"]
    return ids


def snapshot(admin: Admin, ids: dict[str, str]) -> tuple[Any, ...]:
    return (
        admin.call("GET", fill("/v1/agents/{agent_id}", ids)).json(),
        admin.call("GET", fill("/v1/widgets/{widget_id}", ids)).json(),
        admin.call("GET", fill("/v1/widgets/{widget_id}/conversations", ids)).json(),
    )


def strangers() -> dict[str, str]:
    return {"agent_id": str(uuid.uuid4()), "version_id": str(uuid.uuid4()), "widget_id": str(uuid.uuid4()),
            "cid": str(uuid.uuid4()), "resume_token": "x" * 43}


def answer(response: Any) -> tuple[int, str | None]:
    body = response.json() if response.content else {}
    return response.status_code, body.get("code")


def test_another_organizations_ids_are_not_found_in_either_direction_whatever_the_idempotency_key(
    app: Litestar, client: TestClient[Litestar], settings: Settings, store: EventStore, request: pytest.FixtureRequest
) -> None:
    wiring = request.node.callspec.params["settings"]
    orgs = {"org_a": Admin(client, settings, "org_a", "alice"), "org_b": Admin(client, settings, "org_b", "bob")}
    calls = 0

    @settings_for_app
    @given(key=KEYS, owner=st.sampled_from(sorted(orgs)), scopes=st.sampled_from(["all", "read", "write"]))
    def property_(key: str, owner: str, scopes: str) -> None:
        nonlocal calls
        target, intruder = orgs[owner], orgs["org_b" if owner == "org_a" else "org_a"]
        theirs = resources(target, client, app, key)
        mine = resources(intruder, client, app, key)
        assert not set(theirs.values()) & set(mine.values()), "the same key gave two organizations the same id"
        headers = {
            "all": intruder.headers,
            "read": intruder.with_scopes("widgets:read", "audit:read"),
            "write": intruder.with_scopes("widgets:write"),
        }[scopes]
        before, events = snapshot(target, theirs), stored_events(store)
        random_ids = strangers()

        for method, path, body in ADMIN_CALLS:
            extra = {**headers, "Idempotency-Key": key} if method == "POST" else headers
            real = client.request(method, fill(path, theirs), json=fill(body, theirs), headers=extra)
            fake = client.request(method, fill(path, random_ids), json=fill(body, random_ids), headers=extra)
            calls += 2
            what = f"{intruder.org} {method} {path} ({scopes})"
            assert answer(real) == answer(fake), f"{what}: another organization's id is told apart from a random one"
            if scopes == "all":
                assert answer(real) == (404, "not_found"), f"{what}: {real.text}"
            else:  # without the scope: refused before anything is looked up, exactly as for a random id
                assert answer(real) in ((404, "not_found"), (403, "insufficient_scope")), f"{what}: {real.text}"
            assert target.org not in real.text, f"{what}: names the other organization"
            given = fill(path, theirs) + json.dumps(fill(body, theirs))
            named = {v for k, v in theirs.items() if v not in given and k != "resume_token"}
            assert not [v for v in named if v in real.text], f"{what}: shows an id it was not given"

        for action, body in PUBLIC_CALLS:  # my live widget, their conversation and its real resume token
            path = f"/public/v1/widgets/{mine['widget_id']}/conversations/{theirs['cid']}/{action}"
            real = client.post(path, json=fill(body, theirs), headers={"Origin": "https://example.com"})
            fake = client.post(f"/public/v1/widgets/{mine['widget_id']}/conversations/{random_ids['cid']}/{action}",
                               json=fill(body, theirs), headers={"Origin": "https://example.com"})
            calls += 2
            assert answer(real) == answer(fake) == (404, "not_found"), f"public {action}: {real.text}"

        assert stored_events(store) == events, "a call on another organization's resources wrote an event"
        assert snapshot(target, theirs) == before
        sync(app)
        listed = client.get("/v1/widgets?limit=100", headers=intruder.headers).json()["items"]
        assert {w["organization_id"] for w in listed} == {intruder.org}
        assert theirs["widget_id"] not in {w["id"] for w in listed}
        feed = client.get("/v1/audit/events?limit=1000", headers=intruder.headers).text
        assert not [v for k, v in theirs.items() if k != "resume_token" and v in feed], "the audit feed shows the other's ids"
        assert "resume_token" not in feed and theirs["resume_token"] not in feed and mine["resume_token"] not in feed

    property_()
    record(f"tenant_isolation.{wiring}.cross_tenant_calls", calls)

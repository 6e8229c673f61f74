"""Tenant isolation: another organization's resources do not exist for you (404, never 403), and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from application.store import EventStore
from tests.api.conftest import Admin, assert_problem
from tests.conftest import ALL_WIRINGS
from tests.visitors import SiteKey

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

# Every admin call on an existing widget, agent or version; {id} etc. are the owner's ids.
CALLS_ON_ANOTHER_ORGANIZATIONS_RESOURCES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/widgets/{id}", None),
    ("GET", "/v1/widgets/{id}?version=1", None),
    ("GET", "/v1/widgets/{id}/history", None),
    ("GET", "/v1/widgets/{id}/conversations", None),
    ("PUT", "/v1/widgets/{id}/domains", {"domains": ["intruder.example.com"]}),
    ("PUT", "/v1/widgets/{id}/agent-version", {"agent_version_id": "{agent_version_id}"}),
    ("PUT", "/v1/widgets/{id}/agent-version", {"agent_version_id": "{agent_version_id}", "agent_id": "{agent_id}"}),
    ("PUT", "/v1/widgets/{id}/config", {"v1": {"branding": {"display_name": "Intruder"}}}),
    ("PATCH", "/v1/widgets/{id}/config", {"v1": {"branding": {"display_name": "Intruder"}}}),
    ("POST", "/v1/widgets/{id}/publish", None),
    ("POST", "/v1/widgets/{id}/unpublish", None),
    ("POST", "/v1/widgets/{id}/identity-keys", {"jwk": "{intruder_jwk}"}),
    ("DELETE", "/v1/widgets/{id}/identity-keys/{kid}", None),
    ("DELETE", "/v1/widgets/{id}", None),
    ("GET", "/v1/agents/{agent_id}", None),
    ("POST", "/v1/agents/{agent_id}/versions", {"label": "intruder"}),
    ("POST", "/v1/agents/{agent_id}/versions/{agent_version_id}/publish", None),
    ("POST", "/v1/agents/{agent_id}/versions/{agent_version_id}/unpublish", None),
    ("POST", "/v1/widgets", {"agent_id": "{agent_id}", "agent_version_id": "{agent_version_id}"}),
]


def fill(template: Any, ids: dict[str, Any]) -> Any:
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and not isinstance(ids.get(template[1:-1], ""), str):
            return ids[template[1:-1]]  # a whole value (an object) put in place
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: fill(v, ids) for k, v in template.items()}
    return template


@pytest.mark.parametrize("direction", ["b_on_a", "a_on_b"])
def test_another_organizations_token_finds_nothing_and_changes_nothing(
    org_a: Admin, org_b: Admin, store: EventStore, direction: str
) -> None:
    owner, intruder = (org_a, org_b) if direction == "b_on_a" else (org_b, org_a)
    # A live widget, so that publish/unpublish/pin would each change something if let through.
    widget = owner.widget(published=True, domains=["owner.example.com"])
    # An identity key of the owner's, so that removing it would change something, and one the intruder would add.
    added = owner.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": SiteKey.generate("ES256", "owners").public_jwk})
    assert added.status_code == 201, added.text
    widget = {**added.json(), "kid": "owners", "intruder_jwk": SiteKey.generate("EdDSA", "intruders").public_jwk}
    intruders_own = intruder.widget(published=True)  # the intruder has widgets and agents of their own
    agent_before = owner.call("GET", f"/v1/agents/{widget['agent_id']}").json()
    events_before = store.recorder.max_notification_id()

    for method, path, body in CALLS_ON_ANOTHER_ORGANIZATIONS_RESOURCES:
        if method == "GET":  # the 404 is for the intruder alone: the owner reads the same resource
            assert owner.call(method, fill(path, widget)).status_code == 200, path
        response = intruder.call(method, fill(path, widget), json=fill(body, widget))
        problem = assert_problem(response, 404, "not_found")
        assert widget["organization_id"] not in response.text, (method, path)
        assert problem["status"] == 404

    assert store.recorder.max_notification_id() == events_before
    after = owner.get_widget(widget["id"])
    assert after == {k: v for k, v in widget.items() if k not in ("kid", "intruder_jwk")}
    assert [k["kid"] for k in after["identity_keys"]] == ["owners"]
    assert after["version"] == widget["version"]
    assert owner.call("GET", f"/v1/agents/{widget['agent_id']}").json() == agent_before
    assert intruder.get_widget(intruders_own["id"]) == intruders_own


def test_a_widget_cannot_be_pinned_to_another_organizations_agent_version(org_a: Admin, org_b: Admin) -> None:
    widget = org_a.widget()
    foreign_agent = org_b.agent()
    foreign_version = org_b.version(foreign_agent["id"], published=True)
    path = f"/v1/widgets/{widget['id']}/agent-version"
    assert_problem(org_a.call("PUT", path, json={"agent_version_id": foreign_version["id"]}), 409, "version_not_in_agent")
    assert_problem(
        org_a.call("PUT", path, json={"agent_version_id": foreign_version["id"], "agent_id": foreign_agent["id"]}),
        404, "not_found",
    )
    assert_problem(
        org_a.call("POST", "/v1/widgets", json={"agent_id": foreign_agent["id"], "agent_version_id": foreign_version["id"]}),
        404, "not_found",
    )
    agent = org_a.agent()
    assert_problem(
        org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": foreign_version["id"]}),
        409, "version_not_in_agent",
    )
    assert org_a.get_widget(widget["id"]) == widget


def test_the_same_idempotency_key_in_two_organizations_creates_two_widgets(org_a: Admin, org_b: Admin, store: EventStore) -> None:
    created = {}
    for admin in (org_a, org_b):
        agent = admin.agent()
        version = admin.version(agent["id"])
        body = {"agent_id": agent["id"], "agent_version_id": version["id"], "domains": ["example.com"]}
        response = admin.call("POST", "/v1/widgets", json=body, headers={"Idempotency-Key": "shared-key"})
        assert response.status_code == 201, response.text
        created[admin.org] = response.json()
    assert created["org_a"]["id"] != created["org_b"]["id"]
    assert org_a.get_widget(created["org_a"]["id"])["organization_id"] == "org_a"
    assert org_b.get_widget(created["org_b"]["id"])["organization_id"] == "org_b"
    assert_problem(org_b.call("GET", f"/v1/widgets/{created['org_a']['id']}"), 404, "not_found")


def test_the_same_idempotency_key_in_two_organizations_creates_two_agents(org_a: Admin, org_b: Admin) -> None:
    headers = {"Idempotency-Key": "shared-agent-key"}
    a = org_a.call("POST", "/v1/agents", json={"name": "bot"}, headers=headers)
    b = org_b.call("POST", "/v1/agents", json={"name": "bot"}, headers=headers)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]
    assert (a.json()["organization_id"], b.json()["organization_id"]) == ("org_a", "org_b")

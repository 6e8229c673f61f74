"""Admin API for widgets: every call, its ETag, and every error it can answer, on both wirings."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from application.store import EventStore
from tests.api.conftest import Admin, assert_problem, etag
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

V1_KEYS = {"appearance", "branding", "text", "voice", "quick_actions", "forms", "feedback", "locale", "identity", "context"}


def assert_widget(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """A widget answer: the status, JSON, and an ETag equal to the widget's version."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    widget = response.json()
    assert response.headers["etag"] == etag(widget["version"])
    return widget


def events_of(store: EventStore, widget_id: str) -> list[Any]:
    return list(store.events.get(uuid.UUID(widget_id)))


# --- create and read ------------------------------------------------------------------------


def test_creating_a_widget_answers_201_with_the_record_and_etag_1(org_a: Admin) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    response = org_a.call("POST", "/v1/widgets", json={
        "agent_id": agent["id"], "agent_version_id": version["id"],
        "domains": ["Example.COM", "*.shop.example.org", "localhost:3000", "example.com"],
        "config": {"v1": {"appearance": {"theme": "dark"}}},
    })
    widget = assert_widget(response, 201)
    assert response.headers["etag"] == '"1"'
    assert widget["id"] == str(uuid.UUID(widget["id"]))
    assert widget["organization_id"] == "org_a"
    assert (widget["agent_id"], widget["agent_version_id"]) == (agent["id"], version["id"])
    assert widget["domains"] == ["example.com", "*.shop.example.org", "localhost:3000"]
    assert widget["published"] is False and widget["live"] is False
    assert set(widget["config"]["v1"]) == V1_KEYS
    assert widget["config"]["v1"]["appearance"]["theme"] == "dark"
    assert widget["version"] == 1
    assert widget["created_at"] == widget["updated_at"]


def test_a_widget_without_domains_or_config_allows_no_site_and_has_the_default_config(org_a: Admin) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    widget = assert_widget(org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": version["id"]}), 201)
    assert widget["domains"] == []
    assert widget["config"]["v1"]["branding"]["display_name"] == "Assistant"


def test_getting_a_widget_answers_it_with_its_etag(org_a: Admin) -> None:
    created = org_a.widget()
    got = assert_widget(org_a.call("GET", f"/v1/widgets/{created['id']}"))
    assert got == created


def test_getting_an_earlier_version_shows_the_widget_as_it_stood_then(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com"]})
    first = assert_widget(org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": 1}))
    assert (first["version"], first["domains"]) == (1, ["example.com"])
    current = assert_widget(org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": 2}))
    assert current["domains"] == ["a.example.com"]
    assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": 3}), 404, "not_found")
    assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": 0}), 400, "invalid_request")
    assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": "x"}), 400, "invalid_request")


def test_an_earlier_version_needs_the_audit_scope(org_a: Admin) -> None:
    widget = org_a.widget()
    path = f"/v1/widgets/{widget['id']}"
    reader = org_a.with_scopes("widgets:read")
    assert_problem(org_a.client.get(path, params={"version": 1}, headers=reader), 403, "insufficient_scope")
    assert org_a.client.get(path, headers=reader).status_code == 200
    auditor = org_a.with_scopes("widgets:read", "audit:read")
    assert org_a.client.get(path, params={"version": 1}, headers=auditor).status_code == 200


# --- changes ------------------------------------------------------------------------------------


def test_putting_domains_replaces_them_normalised_and_bumps_the_etag(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    response = org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["BÜCHER.example", "*.Example.org"]})
    changed = assert_widget(response)
    assert response.headers["etag"] == '"2"'
    assert changed["domains"] == ["xn--bcher-kva.example", "*.example.org"]
    assert org_a.get_widget(widget["id"])["domains"] == changed["domains"]


def test_putting_an_empty_domain_list_allows_no_site(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    assert assert_widget(org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": []}))["domains"] == []


def test_a_change_to_the_same_value_records_nothing_and_answers_the_unchanged_widget(org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget(published=True, domains=["example.com"])
    count = len(events_of(store, widget["id"]))
    calls = [
        ("PUT", "domains", {"domains": ["EXAMPLE.COM"]}),
        ("PUT", "agent-version", {"agent_version_id": widget["agent_version_id"]}),
        ("PUT", "config", widget["config"]),
        ("PATCH", "config", {"v1": {"appearance": {"theme": "auto"}}}),
        ("POST", "publish", None),
    ]
    for method, tail, body in calls:
        response = org_a.call(method, f"/v1/widgets/{widget['id']}/{tail}", json=body)
        assert assert_widget(response) == widget, (method, tail)
    assert len(events_of(store, widget["id"])) == count


def test_pinning_another_version_of_the_agent_answers_the_widget(org_a: Admin) -> None:
    widget = org_a.widget()
    second = org_a.version(widget["agent_id"])
    pinned = assert_widget(org_a.call("PUT", f"/v1/widgets/{widget['id']}/agent-version", json={"agent_version_id": second["id"]}))
    assert pinned["agent_version_id"] == second["id"]
    assert pinned["version"] == 2


def test_pinning_a_version_of_another_agent_names_that_agent(org_a: Admin) -> None:
    widget = org_a.widget()
    other_agent = org_a.agent("Other bot")
    other_version = org_a.version(other_agent["id"])
    path = f"/v1/widgets/{widget['id']}/agent-version"
    assert_problem(org_a.call("PUT", path, json={"agent_version_id": other_version["id"]}), 409, "version_not_in_agent")
    pinned = assert_widget(org_a.call("PUT", path, json={"agent_version_id": other_version["id"], "agent_id": other_agent["id"]}))
    assert (pinned["agent_id"], pinned["agent_version_id"]) == (other_agent["id"], other_version["id"])


def test_a_published_widget_refuses_an_unpublished_version(org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget(published=True)
    draft = org_a.version(widget["agent_id"])
    count = len(events_of(store, widget["id"]))
    body = assert_problem(
        org_a.call("PUT", f"/v1/widgets/{widget['id']}/agent-version", json={"agent_version_id": draft["id"]}),
        409, "agent_version_not_published",
    )
    assert body["detail"]
    assert len(events_of(store, widget["id"])) == count
    assert org_a.get_widget(widget["id"])["agent_version_id"] == widget["agent_version_id"]


def test_putting_config_replaces_it_whole(org_a: Admin) -> None:
    widget = org_a.widget(config={"v1": {"appearance": {"theme": "dark"}, "locale": "de"}})
    replaced = assert_widget(org_a.call("PUT", f"/v1/widgets/{widget['id']}/config", json={"v1": {"voice": {"enabled": False}}}))
    assert replaced["config"]["v1"]["voice"]["enabled"] is False
    assert replaced["config"]["v1"]["appearance"]["theme"] == "auto"
    assert replaced["config"]["v1"]["locale"] is None
    assert replaced["version"] == 2


@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
def test_patching_config_merges_the_patch_into_it(org_a: Admin, content_type: str) -> None:
    widget = org_a.widget(config={"v1": {"appearance": {"theme": "dark"}, "locale": "de"}})
    patch = {"v1": {"appearance": {"primary_color": "#000000"}, "locale": None}}
    response = org_a.call(
        "PATCH", f"/v1/widgets/{widget['id']}/config", content=json.dumps(patch), headers={"Content-Type": content_type}
    )
    patched = assert_widget(response)
    appearance = patched["config"]["v1"]["appearance"]
    assert (appearance["theme"], appearance["primary_color"]) == ("dark", "#000000")
    assert patched["config"]["v1"]["locale"] is None
    assert patched["version"] == 2


def test_a_patch_that_makes_the_config_invalid_is_400_naming_the_fields(org_a: Admin) -> None:
    widget = org_a.widget()
    patch = {"v1": {"appearance": {"primary_color": "blue", "theme": "neon"}}}
    body = assert_problem(org_a.call("PATCH", f"/v1/widgets/{widget['id']}/config", json=patch), 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == {"config.v1.appearance.primary_color", "config.v1.appearance.theme"}
    assert org_a.get_widget(widget["id"])["version"] == 1


def test_publishing_needs_a_published_agent_version_then_makes_the_widget_live(org_a: Admin) -> None:
    widget = org_a.widget()
    path = f"/v1/widgets/{widget['id']}/publish"
    body = assert_problem(org_a.call("POST", path), 409, "agent_version_not_published")
    assert body["title"] == "Agent version is not published"
    org_a.call("POST", f"/v1/agents/{widget['agent_id']}/versions/{widget['agent_version_id']}/publish")
    published = assert_widget(org_a.call("POST", path))
    assert published["published"] is True and published["live"] is True
    assert published["version"] == 2


def test_unpublishing_takes_the_widget_offline(org_a: Admin) -> None:
    widget = org_a.widget(published=True)
    unpublished = assert_widget(org_a.call("POST", f"/v1/widgets/{widget['id']}/unpublish"))
    assert unpublished["published"] is False and unpublished["live"] is False
    again = assert_widget(org_a.call("POST", f"/v1/widgets/{widget['id']}/unpublish"))
    assert again["version"] == unpublished["version"]


# --- deletion ----------------------------------------------------------------------------------


LATER_CALLS = [
    ("PUT", "/domains", {"domains": ["other.example.com"]}),
    ("PUT", "/agent-version", {"agent_version_id": "{agent_version_id}"}),
    ("PUT", "/config", {"v1": {}}),
    ("PATCH", "/config", {"v1": {"locale": "en"}}),
    ("POST", "/publish", None),
    ("POST", "/unpublish", None),
    ("DELETE", "", None),
]


def test_deleting_answers_204_then_get_is_404_and_every_change_is_409_widget_deleted(org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget(published=True)
    response = org_a.call("DELETE", f"/v1/widgets/{widget['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}"), 404, "not_found")
    count = len(events_of(store, widget["id"]))
    for method, tail, body in LATER_CALLS:
        if body and "agent_version_id" in body:
            body = {"agent_version_id": widget["agent_version_id"]}
        response = org_a.call(method, f"/v1/widgets/{widget['id']}{tail}", json=body)
        assert_problem(response, 409, "widget_deleted")
    assert len(events_of(store, widget["id"])) == count
    last = assert_widget(org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": count}))
    assert last["deleted"] is True and last["published"] is False


# --- If-Match ------------------------------------------------------------------------------------


def test_if_match_with_the_current_etag_lets_the_change_through(org_a: Admin) -> None:
    widget = org_a.widget()
    response = org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com"]},
                          headers={"If-Match": etag(widget["version"])})
    assert assert_widget(response)["version"] == 2


@pytest.mark.parametrize(("method", "tail", "body"), [
    ("PUT", "/domains", {"domains": ["b.example.com"]}),
    ("PUT", "/config", {"v1": {"locale": "fr"}}),
    ("PATCH", "/config", {"v1": {"locale": "fr"}}),
    ("POST", "/unpublish", None),
    ("DELETE", "", None),
])
def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(
    org_a: Admin, store: EventStore, method: str, tail: str, body: Any
) -> None:
    widget = org_a.widget(published=True)
    stale = etag(widget["version"] - 1)
    response = org_a.call(method, f"/v1/widgets/{widget['id']}{tail}", json=body, headers={"If-Match": stale})
    assert_problem(response, 412, "precondition_failed")
    assert len(events_of(store, widget["id"])) == widget["version"]
    assert org_a.get_widget(widget["id"]) == widget


def test_if_match_that_is_not_an_etag_is_400(org_a: Admin) -> None:
    widget = org_a.widget()
    response = org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": []}, headers={"If-Match": "yesterday"})
    body = assert_problem(response, 400, "invalid_request")
    assert [e["field"] for e in body["errors"]] == ["If-Match"]


# --- invalid input ---------------------------------------------------------------------------------


def test_a_create_with_several_invalid_fields_lists_every_one(org_a: Admin, store: EventStore) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    before = store.recorder.max_notification_id()
    response = org_a.call("POST", "/v1/widgets", json={
        "agent_id": agent["id"], "agent_version_id": version["id"],
        "domains": ["ok.example.com", "co.uk", "https://example.com/path"],
        "config": {"v1": {"appearance": {"primary_color": "red"}, "branding": {"avatar_url": "http://x.example"}}},
    })
    body = assert_problem(response, 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == {
        "domains[1]", "domains[2]", "config.v1.appearance.primary_color", "config.v1.branding.avatar_url",
    }
    assert all(e["message"] for e in body["errors"])
    assert store.recorder.max_notification_id() == before


def test_putting_invalid_domains_names_every_bad_entry(org_a: Admin) -> None:
    widget = org_a.widget()
    body = assert_problem(
        org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["*", "example.com", "user@example.com", "*.github.io"]}),
        400, "invalid_request",
    )
    assert [e["field"] for e in body["errors"]] == ["domains[0]", "domains[2]", "domains[3]"]


def test_putting_an_invalid_config_names_every_bad_field(org_a: Admin) -> None:
    widget = org_a.widget()
    config = {"v1": {"appearance": {"theme": "neon"}, "feedback": {"type": "emoji"}, "unknown": 1}}
    body = assert_problem(org_a.call("PUT", f"/v1/widgets/{widget['id']}/config", json=config), 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == {"config.v1.appearance.theme", "config.v1.feedback.type", "config.v1.unknown"}


@pytest.mark.parametrize("body", [
    b"{not json",
    b"[]",
    b'{"agent_id": 5, "agent_version_id": "x"}',
    b'{"agent_id": "00000000-0000-4000-8000-000000000001"}',
    b'{"agent_id": "00000000-0000-4000-8000-000000000001", "agent_version_id": "00000000-0000-4000-8000-000000000002", "colour": "red"}',
    b'{"agent_id": "00000000-0000-4000-8000-000000000001", "agent_version_id": "00000000-0000-4000-8000-000000000002", "domains": "example.com"}',
    b'{"agent_id": "00000000-0000-4000-8000-000000000001", "agent_version_id": "00000000-0000-4000-8000-000000000002", "config": []}',
])
def test_malformed_json_wrong_types_and_unknown_fields_are_400(org_a: Admin, body: bytes) -> None:
    response = org_a.call("POST", "/v1/widgets", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 400, "invalid_request")
    assert problem["title"] == "The request is not valid"  # a stable title; the specifics go in detail and errors


def test_a_body_over_64_kib_is_413(org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget()
    big = {"domains": [f"site{i}.example.com" for i in range(4000)]}
    assert len(json.dumps(big)) > 64 * 1024
    response = org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json=big)
    assert_problem(response, 413, "body_too_large")
    assert len(events_of(store, widget["id"])) == 1


def test_a_body_under_64_kib_is_not_refused_for_its_size(org_a: Admin) -> None:
    widget = org_a.widget()
    entries = [f"site{i}.example.com" for i in range(1000)]
    assert 16 * 1024 < len(json.dumps({"domains": entries})) < 64 * 1024
    assert assert_widget(org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": entries}))["version"] == 2


def test_an_unknown_widget_is_404_on_every_call(org_a: Admin) -> None:
    version = org_a.version(org_a.agent()["id"])
    base = f"/v1/widgets/{uuid.uuid4()}"
    calls = [("GET", "", None), *[(m, t, b) for m, t, b in LATER_CALLS]]
    for method, tail, body in calls:
        if body and "agent_version_id" in body:
            body = {"agent_version_id": version["id"]}
        assert_problem(org_a.call(method, f"{base}{tail}", json=body), 404, "not_found")
    assert_problem(org_a.call("GET", "/v1/widgets/not-a-uuid"), 404, "not_found")


def test_a_widget_on_an_unknown_agent_or_version_is_refused(org_a: Admin) -> None:
    agent = org_a.agent()
    assert_problem(
        org_a.call("POST", "/v1/widgets", json={"agent_id": str(uuid.uuid4()), "agent_version_id": str(uuid.uuid4())}),
        404, "not_found",
    )
    assert_problem(
        org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": str(uuid.uuid4())}),
        409, "version_not_in_agent",
    )


# --- idempotent create -----------------------------------------------------------------------------


def test_a_create_retried_with_the_same_key_and_body_answers_the_same_widget(org_a: Admin, store: EventStore) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    body = {"agent_id": agent["id"], "agent_version_id": version["id"], "domains": ["example.com"]}
    headers = {"Idempotency-Key": "create-widget-1"}
    first = assert_widget(org_a.call("POST", "/v1/widgets", json=body, headers=headers), 201)
    before = store.recorder.max_notification_id()
    again = assert_widget(org_a.call("POST", "/v1/widgets", json=body, headers=headers), 201)
    assert again == first
    assert store.recorder.max_notification_id() == before


def test_reusing_an_idempotency_key_with_another_body_is_422(org_a: Admin, store: EventStore) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    headers = {"Idempotency-Key": "create-widget-2"}
    body = {"agent_id": agent["id"], "agent_version_id": version["id"], "domains": ["example.com"]}
    assert_widget(org_a.call("POST", "/v1/widgets", json=body, headers=headers), 201)
    before = store.recorder.max_notification_id()
    response = org_a.call("POST", "/v1/widgets", json=body | {"domains": ["other.example.com"]}, headers=headers)
    assert_problem(response, 422, "idempotency_key_reused")
    assert store.recorder.max_notification_id() == before

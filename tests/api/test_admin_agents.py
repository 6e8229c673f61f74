"""Admin API for agents: create, read, version, publish and unpublish, on both wirings."""

from __future__ import annotations

import uuid

import pytest

from application.store import EventStore
from tests.api.conftest import Admin, assert_problem
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)


def test_creating_an_agent_answers_201_with_the_agent(org_a: Admin) -> None:
    response = org_a.call("POST", "/v1/agents", json={"name": "Support bot"})
    assert response.status_code == 201
    agent = response.json()
    assert uuid.UUID(agent["id"]).hex and agent["id"] == agent["id"].lower()
    assert agent["organization_id"] == "org_a"
    assert agent["name"] == "Support bot"
    assert agent["versions"] == []
    assert agent["version"] == 1
    assert agent["created_at"].endswith("Z") or agent["created_at"].endswith("+00:00")


def test_the_organization_comes_from_the_token_never_the_body(org_a: Admin) -> None:
    response = org_a.call("POST", "/v1/agents", json={"name": "bot", "organization_id": "org_b"})
    assert_problem(response, 400, "invalid_request")
    assert org_a.agent()["organization_id"] == "org_a"


def test_getting_an_agent_shows_its_versions_in_order(org_a: Admin) -> None:
    agent = org_a.agent()
    made = [org_a.version(agent["id"], label=label) for label in ("one", None, "three")]
    response = org_a.call("GET", f"/v1/agents/{agent['id']}")
    assert response.status_code == 200
    got = response.json()
    assert [(v["id"], v["number"], v["label"], v["published"]) for v in got["versions"]] == [
        (made[0]["id"], 1, "one", False),
        (made[1]["id"], 2, None, False),
        (made[2]["id"], 3, "three", False),
    ]
    assert got["version"] == 4


def test_creating_a_version_answers_201_with_the_next_number_unpublished(org_a: Admin) -> None:
    agent = org_a.agent()
    first = org_a.call("POST", f"/v1/agents/{agent['id']}/versions", json={"label": "spring"})
    second = org_a.call("POST", f"/v1/agents/{agent['id']}/versions")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() | {"id": None} == {"id": None, "agent_id": agent["id"], "number": 1, "label": "spring", "published": False}
    assert second.json()["number"] == 2
    assert second.json()["label"] is None


def test_publishing_and_unpublishing_a_version_answers_200_with_the_version(org_a: Admin, store: EventStore) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    path = f"/v1/agents/{agent['id']}/versions/{version['id']}"
    published = org_a.call("POST", f"{path}/publish")
    assert published.status_code == 200
    assert published.json() == version | {"published": True}
    again = org_a.call("POST", f"{path}/publish")
    assert again.status_code == 200 and again.json()["published"] is True
    count = len(list(store.events.get(uuid.UUID(agent["id"]))))
    unpublished = org_a.call("POST", f"{path}/unpublish")
    assert unpublished.status_code == 200
    assert unpublished.json()["published"] is False
    assert org_a.call("POST", f"{path}/unpublish").json()["published"] is False
    assert len(list(store.events.get(uuid.UUID(agent["id"])))) == count + 1
    assert org_a.call("GET", f"/v1/agents/{agent['id']}").json()["versions"][0]["published"] is False


def test_unpublishing_the_pinned_version_takes_a_live_widget_offline(org_a: Admin) -> None:
    widget = org_a.widget(published=True)
    assert widget["live"] is True
    org_a.call("POST", f"/v1/agents/{widget['agent_id']}/versions/{widget['agent_version_id']}/unpublish")
    after = org_a.get_widget(widget["id"])
    assert after["published"] is True
    assert after["live"] is False


def test_an_agent_command_honours_if_match(org_a: Admin) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    path = f"/v1/agents/{agent['id']}/versions/{version['id']}/publish"
    assert_problem(org_a.call("POST", path, headers={"If-Match": '"1"'}), 412, "precondition_failed")
    assert org_a.call("POST", path, headers={"If-Match": '"2"'}).status_code == 200


def test_unknown_agents_and_versions_are_404(org_a: Admin) -> None:
    agent = org_a.agent()
    unknown = uuid.uuid4()
    assert_problem(org_a.call("GET", f"/v1/agents/{unknown}"), 404, "not_found")
    assert_problem(org_a.call("POST", f"/v1/agents/{unknown}/versions"), 404, "not_found")
    assert_problem(org_a.call("POST", f"/v1/agents/{agent['id']}/versions/{unknown}/publish"), 404, "not_found")
    assert_problem(org_a.call("POST", f"/v1/agents/{agent['id']}/versions/{unknown}/unpublish"), 404, "not_found")
    assert_problem(org_a.call("GET", "/v1/agents/not-a-uuid"), 404, "not_found")


def test_a_version_of_another_agent_is_404_under_this_agent(org_a: Admin) -> None:
    first, second = org_a.agent(), org_a.agent()
    version = org_a.version(second["id"])
    assert_problem(org_a.call("POST", f"/v1/agents/{first['id']}/versions/{version['id']}/publish"), 404, "not_found")


def test_agent_bodies_are_validated(org_a: Admin) -> None:
    for body in ({}, {"name": ""}, {"name": 5}, {"name": "x" * 201}, {"name": "bot", "extra": 1}):
        assert_problem(org_a.call("POST", "/v1/agents", json=body), 400, "invalid_request")
    agent = org_a.agent()
    for body in ({"label": ""}, {"label": 3}, {"lable": "typo"}):
        assert_problem(org_a.call("POST", f"/v1/agents/{agent['id']}/versions", json=body), 400, "invalid_request")


def test_an_agent_create_retried_with_its_idempotency_key_creates_one_agent(org_a: Admin, store: EventStore) -> None:
    headers = {"Idempotency-Key": "agent-create-1"}
    first = org_a.call("POST", "/v1/agents", json={"name": "bot"}, headers=headers)
    before = store.recorder.max_notification_id()
    again = org_a.call("POST", "/v1/agents", json={"name": "bot"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert store.recorder.max_notification_id() == before
    assert_problem(org_a.call("POST", "/v1/agents", json={"name": "other"}, headers=headers), 422, "idempotency_key_reused")


def test_a_version_create_retried_with_its_idempotency_key_creates_one_version(org_a: Admin) -> None:
    agent = org_a.agent()
    path, headers = f"/v1/agents/{agent['id']}/versions", {"Idempotency-Key": "v-1"}
    first = org_a.call("POST", path, json={"label": "a"}, headers=headers)
    again = org_a.call("POST", path, json={"label": "a"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert_problem(org_a.call("POST", path, json={"label": "b"}, headers=headers), 422, "idempotency_key_reused")
    assert len(org_a.call("GET", f"/v1/agents/{agent['id']}").json()["versions"]) == 1


def test_a_malformed_idempotency_key_is_400(org_a: Admin) -> None:
    response = org_a.call("POST", "/v1/agents", json={"name": "bot"}, headers={"Idempotency-Key": "has space"})
    body = assert_problem(response, 400, "invalid_request")
    assert [e["field"] for e in body["errors"]] == ["Idempotency-Key"]

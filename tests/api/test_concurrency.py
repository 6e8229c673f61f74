"""Concurrent writers through HTTP: If-Match lets exactly one win, idempotent creates create once, and no update is lost.

Each writer is a thread with its own client on the same app, released together by a barrier.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from litestar import Litestar

from application.store import EventStore
from domain import event_types as t
from tests.api.conftest import Admin, assert_problem, client_for, etag
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)


def race(app: Litestar, admin: Admin, requests: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send the requests at once, each from its own thread and client; answers in the order given."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, str, dict[str, Any]]) -> httpx.Response:
        method, path, kwargs = request
        client = client_for(app)
        headers = {**admin.headers, **kwargs.pop("headers", {})}
        barrier.wait(timeout=30)
        return client.request(method, path, headers=headers, **kwargs)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


def widget_events(store: EventStore, widget_id: str) -> list[Any]:
    return list(store.events.get(uuid.UUID(widget_id)))


def created_events(store: EventStore) -> list[Any]:
    notifications = store.recorder.select_notifications(start=1, limit=10_000, topics=[t.WIDGET_CREATED])
    return [store.mapper.to_domain_event(n) for n in notifications]


ROUNDS = 5


def test_two_writers_with_the_same_if_match_exactly_one_wins(app: Litestar, org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget(domains=["start.example.com"])
    version = widget["version"]
    for round_ in range(ROUNDS):
        path = f"/v1/widgets/{widget['id']}/domains"
        choices = [[f"left{round_}.example.com"], [f"right{round_}.example.com"]]
        answers = race(app, org_a, [
            ("PUT", path, {"json": {"domains": domains}, "headers": {"If-Match": etag(version)}}) for domains in choices
        ])
        winners = [a for a in answers if a.status_code == 200]
        losers = [a for a in answers if a.status_code != 200]
        assert len(winners) == 1, [a.text for a in answers]
        loser = losers[0]
        if loser.status_code == 412:
            assert_problem(loser, 412, "precondition_failed")
        else:
            assert_problem(loser, 409, "conflict")
        version += 1
        assert winners[0].json()["version"] == version
        assert len(widget_events(store, widget["id"])) == version
        stored = org_a.get_widget(widget["id"])
        assert stored["domains"] == winners[0].json()["domains"]
        assert stored["version"] == version


def test_retries_of_one_idempotent_create_all_answer_the_one_widget_created(
    app: Litestar, org_a: Admin, store: EventStore
) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    body = {"agent_id": agent["id"], "agent_version_id": version["id"], "domains": ["example.com"]}
    answers = race(app, org_a, [
        ("POST", "/v1/widgets", {"json": body, "headers": {"Idempotency-Key": "retry-storm"}}) for _ in range(8)
    ])
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert {a.headers["etag"] for a in answers} == {'"1"'}
    created = created_events(store)
    assert [str(e.originator_id) for e in created] == list(ids)
    assert len(widget_events(store, ids.pop())) == 1


def test_writers_without_if_match_on_different_fields_lose_no_update(app: Litestar, org_a: Admin, store: EventStore) -> None:
    widget = org_a.widget(domains=["start.example.com"])
    second = org_a.version(widget["agent_id"], label="second")
    path = f"/v1/widgets/{widget['id']}"
    answers = race(app, org_a, [
        ("PUT", f"{path}/domains", {"json": {"domains": ["final.example.com"]}}),
        ("PATCH", f"{path}/config", {"json": {"v1": {"appearance": {"theme": "dark"}}}}),
        ("PATCH", f"{path}/config", {"json": {"v1": {"branding": {"display_name": "Concierge"}}}}),
        ("PATCH", f"{path}/config", {"json": {"v1": {"locale": "pt-BR"}}}),
        ("PUT", f"{path}/agent-version", {"json": {"agent_version_id": second["id"]}}),
    ])
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    final = org_a.get_widget(widget["id"])
    assert final["domains"] == ["final.example.com"]
    assert final["config"]["v1"]["appearance"]["theme"] == "dark"
    assert final["config"]["v1"]["branding"]["display_name"] == "Concierge"
    assert final["config"]["v1"]["locale"] == "pt-BR"
    assert final["agent_version_id"] == second["id"]
    assert final["version"] == 6
    assert len(widget_events(store, widget["id"])) == 6


def test_concurrent_version_creates_get_distinct_consecutive_numbers(app: Litestar, org_a: Admin) -> None:
    agent = org_a.agent()
    answers = race(app, org_a, [("POST", f"/v1/agents/{agent['id']}/versions", {"json": {"label": f"v{i}"}}) for i in range(4)])
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert sorted(a.json()["number"] for a in answers) == [1, 2, 3, 4]
    versions = org_a.call("GET", f"/v1/agents/{agent['id']}").json()["versions"]
    assert sorted(v["label"] for v in versions) == ["v0", "v1", "v2", "v3"]


def test_the_loser_of_a_race_that_both_passed_if_match_gets_409_conflict(app: Litestar, org_a: Admin, store: EventStore) -> None:
    """Both writers read the same version and both pass If-Match; the store lets one save, the other is told so."""
    widget = org_a.widget()
    version = widget["version"]
    path = f"/v1/widgets/{widget['id']}/config"
    for round_ in range(40):
        answers = race(app, org_a, [
            ("PATCH", path, {"json": {"v1": {"branding": {"display_name": f"{side} {round_}"}}}, "headers": {"If-Match": etag(version)}})
            for side in ("left", "right")
        ])
        version += 1
        assert sorted(a.status_code for a in answers) in ([200, 409], [200, 412]), [a.text for a in answers]
        conflict = next((a for a in answers if a.status_code == 409), None)
        if conflict is not None:
            assert_problem(conflict, 409, "conflict")
            winner = next(a for a in answers if a.status_code == 200)
            assert org_a.get_widget(widget["id"])["config"] == winner.json()["config"]
            assert len(widget_events(store, widget["id"])) == version
            return
    raise AssertionError("in 40 races, no writer ever lost after passing If-Match")

"""Auditors' API: a widget's history, the widget as it stood at a version or a time, the organization's
feed, and the `widgets history` / `widgets verify` commands that read the same record."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from application.store import EventStore
from domain import event_types as t
from domain.conversation import hash_resume_token
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem, client_for
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

PROJECT = Path(__file__).resolve().parents[2]
EVENT_KEYS = {"widget_id", "version", "type", "occurred_at", "actor", "data"}
FEED_KEYS = {"position", "aggregate_type", "aggregate_id", "version", "type", "occurred_at", "actor", "data"}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(moment: datetime) -> str:
    return moment.isoformat()


def history(admin: Admin, widget_id: str, **params: Any) -> dict[str, Any]:
    response = admin.call("GET", f"/v1/widgets/{widget_id}/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def as_of(admin: Admin, widget_id: str, **params: Any) -> httpx.Response:
    return admin.call("GET", f"/v1/widgets/{widget_id}", params=params)


def caught_up(admin: Admin, store: EventStore) -> None:
    """Read-your-writes: wait until every read model has reached the event store's head."""
    head = store.recorder.max_notification_id() or 0
    response = admin.call("GET", "/v1/read-models/wait", params={"position": head})
    assert response.status_code == 200, response.text


def feed(admin: Admin, **params: Any) -> dict[str, Any]:
    response = admin.call("GET", "/v1/audit/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def busy_widget(admin: Admin) -> dict[str, Any]:
    """A widget with one event of each kind but deletion: created, domains, config, pin, publish, unpublish."""
    widget = admin.widget(published=True, domains=["example.com"])  # created, published (versions 1-2)
    wid = widget["id"]
    second = admin.version(widget["agent_id"], published=True)
    for method, path, body in [
        ("PUT", "domains", {"domains": ["example.com", "*.shop.example.org"]}),
        ("PATCH", "config", {"v1": {"appearance": {"theme": "dark"}}}),
        ("PUT", "agent-version", {"agent_version_id": second["id"]}),
        ("POST", "unpublish", None),
    ]:
        response = admin.call(method, f"/v1/widgets/{wid}/{path}", json=body)
        assert response.status_code == 200, response.text
    return {**widget, "second_version": second}


# --- history --------------------------------------------------------------------------------


def test_history_lists_every_event_oldest_first_with_its_version_type_time_actor_and_data(org_a: Admin) -> None:
    widget = busy_widget(org_a)

    items = history(org_a, widget["id"])["items"]

    assert [(e["version"], e["type"]) for e in items] == [
        (1, t.WIDGET_CREATED), (2, t.WIDGET_PUBLISHED), (3, t.WIDGET_DOMAINS_CHANGED),
        (4, t.WIDGET_CONFIG_CHANGED), (5, t.WIDGET_VERSION_PINNED), (6, t.WIDGET_UNPUBLISHED)]
    for e in items:
        assert set(e) == EVENT_KEYS
        assert e["widget_id"] == widget["id"] and e["actor"] == "alice"
        assert when(e["occurred_at"]).utcoffset() == timedelta(0)
    times = [when(e["occurred_at"]) for e in items]
    assert times == sorted(times)
    created, published, domains, config, pinned, unpublished = (e["data"] for e in items)
    assert created["organization_id"] == "org_a" and created["domains"] == ["example.com"]
    assert (created["agent_id"], created["agent_version_id"]) == (widget["agent_id"], widget["agent_version_id"])
    assert created["config"]["v1"]["appearance"]["theme"] == "auto"
    assert domains == {"domains": ["example.com", "*.shop.example.org"], "added": ["*.shop.example.org"], "removed": []}
    assert set(config) == {"config", "changed_paths"}
    assert config["changed_paths"] == ["v1.appearance.theme"]
    assert config["config"]["v1"]["appearance"]["theme"] == "dark"
    assert pinned == {"agent_id": widget["agent_id"], "agent_version_id": widget["second_version"]["id"]}
    assert published == {} and unpublished == {}


def test_domains_changed_names_what_was_added_and_removed(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com", "a.example.com"])
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com", "localhost:3000"]})
    last = history(org_a, widget["id"])["items"][-1]
    assert last["data"] == {"domains": ["a.example.com", "localhost:3000"], "added": ["localhost:3000"], "removed": ["example.com"]}


def test_history_records_the_actor_of_each_token(org_a: Admin) -> None:
    widget = org_a.widget()
    carol = Admin(org_a.client, org_a.settings, "org_a", "carol")
    carol.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com"]})
    assert [e["actor"] for e in history(org_a, widget["id"])["items"]] == ["alice", "carol"]


def test_history_pages_with_after_and_limit(org_a: Admin) -> None:
    widget = busy_widget(org_a)
    everything = history(org_a, widget["id"])
    assert everything["next_after"] is None

    pages, after = [], 0
    while True:
        page = history(org_a, widget["id"], after=after, limit=4)
        pages.append([e["version"] for e in page["items"]])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == [[1, 2, 3, 4], [5, 6]]
    assert history(org_a, widget["id"], after=2, limit=2)["items"] == everything["items"][2:4]
    assert history(org_a, widget["id"], after=6)["items"] == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": "x"}):
        assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}/history", params=bad), 400, "invalid_request")


def test_reading_the_record_needs_the_audit_read_scope(org_a: Admin) -> None:
    widget = org_a.widget()
    no_audit = org_a.with_scopes("widgets:read", "widgets:write")
    now = rfc3339(datetime.now(timezone.utc))
    for path, params in [
        (f"/v1/widgets/{widget['id']}/history", {}),
        (f"/v1/widgets/{widget['id']}", {"version": 1}),
        (f"/v1/widgets/{widget['id']}", {"at": now}),
        ("/v1/audit/events", {}),
    ]:
        body = assert_problem(org_a.call("GET", path, params=params, headers=no_audit), 403, "insufficient_scope")
        assert "audit:read" in body["detail"]
    assert org_a.call("GET", f"/v1/widgets/{widget['id']}", headers=no_audit).status_code == 200


def test_an_auditor_with_only_audit_read_reads_history_feed_and_past_states(org_a: Admin) -> None:
    widget = org_a.widget()
    auditor = org_a.with_scopes("audit:read")
    assert org_a.call("GET", f"/v1/widgets/{widget['id']}/history", headers=auditor).status_code == 200
    assert org_a.call("GET", "/v1/audit/events", headers=auditor).status_code == 200
    now = rfc3339(datetime.now(timezone.utc))
    assert org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"at": now}, headers=auditor).status_code == 200


def test_an_auditor_with_only_audit_read_reads_a_past_version(org_a: Admin) -> None:
    widget = org_a.widget()
    response = org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": 1}, headers=org_a.with_scopes("audit:read"))
    assert response.status_code == 200, response.text


def test_another_organizations_widget_is_not_found_in_every_audit_reading(org_a: Admin, org_b: Admin) -> None:
    widget = org_a.widget()
    now = rfc3339(datetime.now(timezone.utc))
    for path, params in [
        (f"/v1/widgets/{widget['id']}/history", {}),
        (f"/v1/widgets/{widget['id']}", {"version": 1}),
        (f"/v1/widgets/{widget['id']}", {"at": now}),
    ]:
        assert_problem(org_b.call("GET", path, params=params), 404, "not_found")
    assert_problem(org_a.call("GET", f"/v1/widgets/{uuid.uuid4()}/history"), 404, "not_found")


# --- as it stood at a time ------------------------------------------------------------------


def test_at_a_time_answers_the_widget_as_it_stood_then(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    time.sleep(0.02)
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com"]})
    time.sleep(0.02)
    org_a.call("PATCH", f"/v1/widgets/{widget['id']}/config", json={"v1": {"appearance": {"theme": "dark"}}})
    first, second, third = (when(e["occurred_at"]) for e in history(org_a, widget["id"])["items"])

    def state_at(moment: datetime) -> httpx.Response:
        return as_of(org_a, widget["id"], at=rfc3339(moment))

    assert_problem(state_at(first - timedelta(seconds=1)), 404, "not_found")
    assert_problem(state_at(first - timedelta(microseconds=1)), 404, "not_found")
    at_first = state_at(first)  # an event at exactly `at` has happened by then
    assert at_first.status_code == 200 and at_first.headers["etag"] == '"1"'
    assert at_first.json()["domains"] == ["example.com"]
    between = state_at(first + (second - first) / 2).json()
    assert (between["version"], between["domains"]) == (1, ["example.com"])
    later = state_at(second + (third - second) / 2).json()
    assert (later["version"], later["domains"], later["config"]["v1"]["appearance"]["theme"]) == (2, ["a.example.com"], "auto")
    now = state_at(datetime.now(timezone.utc) + timedelta(seconds=1))
    assert now.json() == org_a.get_widget(widget["id"]) and now.headers["etag"] == '"3"'


def test_at_accepts_any_utc_offset_for_the_same_instant(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    time.sleep(0.02)
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com"]})
    first, second = (when(e["occurred_at"]) for e in history(org_a, widget["id"])["items"])
    between = first + (second - first) / 2
    in_sao_paulo = between.astimezone(timezone(timedelta(hours=-3)))
    in_delhi = between.astimezone(timezone(timedelta(hours=5, minutes=30)))
    for moment in (between, in_sao_paulo, in_delhi):
        assert as_of(org_a, widget["id"], at=rfc3339(moment)).json()["version"] == 1


def test_at_without_a_timezone_or_not_a_time_is_a_bad_request(org_a: Admin) -> None:
    widget = org_a.widget()
    naive = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
    body = assert_problem(as_of(org_a, widget["id"], at=naive), 400, "invalid_request")
    assert any(e["field"] == "at" for e in body["errors"])
    assert_problem(as_of(org_a, widget["id"], at="yesterday"), 400, "invalid_request")


# --- deleted widgets stay on the record ------------------------------------------------------


def test_a_deleted_widget_remains_readable_through_its_versions_and_history(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a.example.com"]})
    assert org_a.call("DELETE", f"/v1/widgets/{widget['id']}").status_code == 204

    assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}"), 404, "not_found")
    items = history(org_a, widget["id"])["items"]
    assert [e["type"] for e in items] == [t.WIDGET_CREATED, t.WIDGET_DOMAINS_CHANGED, t.WIDGET_DELETED]
    assert items[-1]["data"] == {}
    last = as_of(org_a, widget["id"], version=3)
    assert last.status_code == 200 and last.headers["etag"] == '"3"'
    assert (last.json()["deleted"], last.json()["published"], last.json()["domains"]) == (True, False, ["a.example.com"])
    before = as_of(org_a, widget["id"], version=2).json()
    assert (before["deleted"], before["domains"]) == (False, ["a.example.com"])
    now = as_of(org_a, widget["id"], at=rfc3339(datetime.now(timezone.utc) + timedelta(seconds=1))).json()
    assert (now["version"], now["deleted"]) == (3, True)


# --- the organization's feed -----------------------------------------------------------------


def test_the_feed_pages_with_after_and_next_after_without_gaps_or_repeats(org_a: Admin, org_b: Admin, store: EventStore) -> None:
    for admin in (org_a, org_b, org_a):
        busy_widget(admin)
    caught_up(org_a, store)
    everything = feed(org_a, limit=1000)["items"]
    assert len(everything) > 10
    assert all(set(e) == FEED_KEYS for e in everything)
    positions = [e["position"] for e in everything]
    assert positions == sorted(set(positions))

    paged, after = [], 0
    while True:
        page = feed(org_a, after=after, limit=3)
        assert len(page["items"]) <= 3
        if not page["items"]:
            assert page["next_after"] == after  # an empty page keeps the cursor where it was
            break
        assert page["next_after"] == page["items"][-1]["position"] > after
        paged += page["items"]
        after = page["next_after"]
    assert paged == everything

    # Resuming later gives exactly what happened since, nothing before it.
    widget = org_a.widget()
    org_b.widget()
    caught_up(org_a, store)
    since = feed(org_a, after=after)["items"]
    assert [e["aggregate_id"] for e in since if e["aggregate_type"] == "widget"] == [widget["id"]]
    assert [e["type"] for e in since] == [t.AGENT_CREATED, t.AGENT_VERSION_CREATED, t.WIDGET_CREATED]
    assert all(e["position"] > after for e in since)
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
        assert_problem(org_a.call("GET", "/v1/audit/events", params=bad), 400, "invalid_request")


def test_the_feed_holds_only_the_organizations_own_events(org_a: Admin, org_b: Admin, store: EventStore) -> None:
    a, b = org_a.widget(), org_b.widget()
    caught_up(org_a, store)
    ids_a = {e["aggregate_id"] for e in feed(org_a)["items"]}
    ids_b = {e["aggregate_id"] for e in feed(org_b)["items"]}
    assert a["id"] in ids_a and a["agent_id"] in ids_a
    assert b["id"] in ids_b and b["agent_id"] in ids_b
    assert not ids_a & ids_b


def test_the_feed_shows_a_widgets_events_exactly_as_its_history_does(org_a: Admin, store: EventStore) -> None:
    widget = busy_widget(org_a)
    caught_up(org_a, store)
    in_feed = [e for e in feed(org_a)["items"] if e["aggregate_id"] == widget["id"]]
    assert all(e["aggregate_type"] == "widget" for e in in_feed)
    assert [{"widget_id": e["aggregate_id"], **{k: e[k] for k in EVENT_KEYS - {"widget_id"}}} for e in in_feed] == history(
        org_a, widget["id"])["items"]


def test_the_feed_and_history_never_show_fingerprints_or_visitor_secrets(
    org_a: Admin, client: TestClient[Litestar], store: EventStore
) -> None:
    agent = org_a.call("POST", "/v1/agents", json={"name": "Support"}, headers={"Idempotency-Key": "agent-1"}).json()
    version = org_a.call("POST", f"/v1/agents/{agent['id']}/versions", headers={"Idempotency-Key": "version-1"}).json()
    org_a.call("POST", f"/v1/agents/{agent['id']}/versions/{version['id']}/publish")
    widget = org_a.call("POST", "/v1/widgets", headers={"Idempotency-Key": "widget-1"}, json={
        "agent_id": agent["id"], "agent_version_id": version["id"], "domains": ["example.com"]}).json()
    assert org_a.call("POST", f"/v1/widgets/{widget['id']}/publish").status_code == 200
    caught_up(org_a, store)
    origin = {"Origin": "https://example.com"}
    started = client.post(f"/public/v1/widgets/{widget['id']}/conversations", json={"visitor": {"name": "Ada"}}, headers=origin)
    assert started.status_code == 201, started.text
    grant = started.json()
    resumed = client.post(f"/public/v1/widgets/{widget['id']}/conversations/{grant['conversation_id']}/resume",
                          json={"resume_token": grant["resume_token"]}, headers=origin)
    assert resumed.status_code == 200, resumed.text
    caught_up(org_a, store)

    secrets = {grant["resume_token"], hash_resume_token(grant["resume_token"]), grant["livekit"]["token"]}
    for aggregate_id in (agent["id"], widget["id"], grant["conversation_id"]):
        for event in store.events.get(uuid.UUID(aggregate_id)):
            for name in ("request_fingerprint", "participant_identity"):
                if getattr(event, name, None):
                    secrets.add(getattr(event, name))
    assert len(secrets) >= 7  # token, hash, LiveKit token, three fingerprints, at least one identity
    items = feed(org_a, limit=1000)["items"]
    assert {t.CONVERSATION_STARTED, t.CONVERSATION_RESUMED, t.WIDGET_CREATED} <= {e["type"] for e in items}
    texts = {"feed": json.dumps(items), "history": json.dumps(history(org_a, widget["id"]))}
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret shows in the {where}"
        for name in ("request_fingerprint", "resume_token", "participant_identity", "class_version", "originator_topic"):
            assert name not in text, f"{name} shows in the {where}"


# --- the command line reads the same record --------------------------------------------------


@pytest.fixture
def embedded_client(embedded_settings: Settings) -> Iterator[TestClient[Litestar]]:
    with client_for(create_app(embedded_settings)) as client:
        yield client


@pytest.fixture
def alice(embedded_client: TestClient[Litestar], embedded_settings: Settings) -> Admin:
    return Admin(embedded_client, embedded_settings, "org_a", "alice")


def widgets_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
    env |= {"WIDGETS_DATA_DIR": str(Path(settings.data_dir).resolve()), "WIDGETS_LOG_LEVEL": "warning", "WIDGETS_LOG_FORMAT": "json"}
    return subprocess.run(["uv", "run", "--quiet", "widgets", *args], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_widgets_history_prints_the_same_events_as_the_endpoint(alice: Admin, embedded_settings: Settings) -> None:
    widget = busy_widget(alice)
    endpoint = history(alice, widget["id"])["items"]

    as_json = widgets_cli(embedded_settings, "history", widget["id"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["items"] == endpoint

    as_text = widgets_cli(embedded_settings, "history", widget["id"])
    assert as_text.returncode == 0, as_text.stderr
    header, *lines = as_text.stdout.splitlines()  # piped: nothing cut to a terminal's width
    assert header.split() == ["version", "occurred", "at", "type", "actor", "data"]
    assert len(lines) == len(endpoint)
    for line, event in zip(lines, endpoint, strict=True):
        version, occurred_at, type_, actor, data = line.split(maxsplit=4)
        assert (int(version), type_, actor, json.loads(data)) == (event["version"], event["type"], event["actor"], event["data"])
        assert abs(when(occurred_at) - when(event["occurred_at"])) < timedelta(seconds=1)  # printed to the second


def test_widgets_history_of_an_unknown_widget_fails(alice: Admin, embedded_settings: Settings) -> None:
    alice.widget()
    missing = widgets_cli(embedded_settings, "history", str(uuid.uuid4()))
    assert missing.returncode != 0
    assert "No widget" in missing.stderr


def test_widgets_verify_passes_after_normal_activity_and_names_a_planted_difference(
    alice: Admin, embedded_client: TestClient[Litestar], embedded_settings: Settings
) -> None:
    busy = busy_widget(alice)
    deleted = alice.widget()
    alice.call("DELETE", f"/v1/widgets/{deleted['id']}")
    caught_up(alice, embedded_client.app.state.services.store)

    clean = widgets_cli(embedded_settings, "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 difference(s)" in clean.stderr

    with sqlite3.connect(Path(embedded_settings.data_dir) / "read_models.sqlite3") as db:
        (row_json,) = db.execute("SELECT row_json FROM widget_list WHERE id = ?", [busy["id"]]).fetchone()
        row = json.loads(row_json)
        assert row["domains"] == ["example.com", "*.shop.example.org"]
        row["domains"] = ["evil.example"]
        db.execute("UPDATE widget_list SET row_json = ? WHERE id = ?", [json.dumps(row), busy["id"]])

    planted = widgets_cli(embedded_settings, "verify")
    assert planted.returncode == 1, planted.stdout + planted.stderr
    [difference] = planted.stdout.splitlines()
    assert busy["id"] in difference and "domains" in difference and "evil.example" in difference
    assert difference.startswith("widget_list ")

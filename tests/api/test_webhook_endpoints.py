"""Outgoing webhook endpoints over HTTP, on both wirings: CRUD, the secret shown once and stored only sealed,
rotation, the deliverer's read model, tenant isolation and bad input.

(LiveKit's incoming webhooks are tests/api/test_webhooks.py.)
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from application.store import EventStore
from domain import event_types as t
from domain.webhook_endpoint import SUBSCRIBABLE_EVENT_TYPES
from infrastructure.personal_data import DeploymentKeys
from infrastructure.settings import Settings, env_name
from infrastructure.webhook_secrets import reseal_webhook_secrets
from projections.rebuild import rebuild_sql
from projections.webhook_endpoints import endpoints_for_delivery
from tests.api.conftest import Admin, assert_problem, client_for, etag

SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")
PATH = "/v1/webhook-endpoints"
URL = "https://hooks.example.com/anyreach"


def create(admin: Admin, url: str = URL, events: list[str] | None = None, **body: Any) -> dict[str, Any]:
    response = admin.call("POST", PATH, json={"url": url, "events": events or ["*"], **body})
    assert response.status_code == 201, response.text
    return response.json()


def caught_up(admin: Admin, store: EventStore) -> None:
    head = store.recorder.max_notification_id() or 0
    response = admin.call("GET", "/v1/read-models/wait", params={"position": head, "timeout": 30})
    assert response.status_code == 200, response.text


def listed(admin: Admin, store: EventStore) -> list[dict[str, Any]]:
    caught_up(admin, store)
    response = admin.call("GET", PATH)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def raw(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def secret_forms(secret: str) -> list[bytes]:
    """Every way the secret could have been written down in plaintext."""
    key = raw(secret)
    return [secret.encode(), secret.removeprefix("whsec_").encode(), base64.urlsafe_b64encode(key).rstrip(b"="),
            key.hex().encode(), key]


def delivery(app: Litestar, org: str, event_type: str, now: datetime | None = None) -> list[Any]:
    services = app.state.services
    return endpoints_for_delivery(services.db, DeploymentKeys.from_settings(services.settings), org, event_type, now)


# --- create, read, the secret --------------------------------------------------------------------------------------


def test_a_created_endpoint_answers_its_secret_once_and_reads_never_show_it(org_a: Admin, store: EventStore) -> None:
    created = create(org_a, events=[t.CONVERSATION_FORM_SUBMITTED, t.CONVERSATION_ENDED], description="Leads")

    assert SECRET.match(created["secret"]) and 24 <= len(raw(created["secret"])) <= 32
    assert (created["url"], created["events"], created["description"]) == (URL, [t.CONVERSATION_FORM_SUBMITTED, t.CONVERSATION_ENDED], "Leads")
    assert (created["disabled"], created["disabled_reason"], created["version"], created["organization_id"]) == (False, None, 1, "org_a")
    got = org_a.call("GET", f"{PATH}/{created['id']}")
    assert got.status_code == 200 and got.headers["etag"] == etag(1)
    items = listed(org_a, store)
    assert [i["id"] for i in items] == [created["id"]]
    for body in (got.json(), items[0]):
        assert "secret" not in body
        assert body == {k: v for k, v in created.items() if k != "secret"}
    for text in (got.text, json.dumps(items)):
        assert not any(form.decode("latin-1") in text for form in secret_forms(created["secret"])[:4])


def test_the_secret_is_in_no_stored_event_no_audit_entry_and_no_row(org_a: Admin, store: EventStore, app: Litestar) -> None:
    created = create(org_a)
    rotated = org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret").json()
    org_a.call("PATCH", f"{PATH}/{created['id']}", json={"disabled": True})
    caught_up(org_a, store)

    stored = b"".join(n.state for n in store.recorder.select_notifications(start=1, limit=1000))
    feed = org_a.call("GET", "/v1/audit/events").text.encode()
    rows = repr(app.state.services.db.query("SELECT * FROM webhook_endpoint_secrets")).encode()
    rows += repr(app.state.services.db.query("SELECT * FROM webhook_endpoints")).encode()
    for secret in (created["secret"], rotated["secret"]):
        for form in secret_forms(secret):
            assert form not in stored and form not in feed and form not in rows


def test_the_endpoints_events_are_in_the_audit_feed_with_their_actor(org_a: Admin, store: EventStore) -> None:
    created = create(org_a)
    org_a.call("PATCH", f"{PATH}/{created['id']}", json={"url": "https://other.example.com/h", "events": [t.WIDGET_CREATED]})
    org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret")
    org_a.call("DELETE", f"{PATH}/{created['id']}")
    caught_up(org_a, store)

    items = [e for e in org_a.call("GET", "/v1/audit/events").json()["items"] if e["aggregate_id"] == created["id"]]

    assert [e["type"] for e in items] == [t.WEBHOOK_ENDPOINT_CREATED, t.WEBHOOK_ENDPOINT_URL_CHANGED, t.WEBHOOK_ENDPOINT_EVENTS_CHANGED,
                                          t.WEBHOOK_ENDPOINT_SECRET_ROTATED, t.WEBHOOK_ENDPOINT_DELETED]
    assert {e["actor"] for e in items} == {"alice"} and {e["aggregate_type"] for e in items} == {"webhook_endpoint"}
    assert items[0]["data"] == {"organization_id": "org_a", "url": URL, "events": ["*"], "description": None}
    assert set(items[3]["data"]) == {"previous_secret_expires_at"}


def test_the_logs_carry_no_secret(settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    app = create_app(replace(settings, log_level="debug"))
    with client_for(app) as client:
        admin = Admin(client, settings, "org_a", "alice")
        created = create(admin)
        rotated = admin.call("POST", f"{PATH}/{created['id']}/rotate-secret").json()
        admin.call("GET", f"{PATH}/{created['id']}")
    out, err = capfd.readouterr()
    assert "webhook-endpoints" in out + err  # the requests were logged
    for secret in (created["secret"], rotated["secret"]):
        assert not any(form.decode("latin-1") in out + err for form in secret_forms(secret)[:4])


# --- change, delete, rotate ------------------------------------------------------------------------------------------


def test_patch_changes_url_events_and_disabled_each_as_its_own_event(org_a: Admin, store: EventStore) -> None:
    created = create(org_a)

    changed = org_a.call("PATCH", f"{PATH}/{created['id']}", headers={"If-Match": etag(1)},
                         json={"url": "https://b.example.com/x", "events": [t.WIDGET_PUBLISHED, t.WIDGET_PUBLISHED], "disabled": True})

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["url"], body["events"], body["disabled"], body["disabled_reason"], body["version"]) == (
        "https://b.example.com/x", [t.WIDGET_PUBLISHED], True, "request", 4)
    assert changed.headers["etag"] == etag(4)
    assert org_a.call("PATCH", f"{PATH}/{created['id']}", json={"disabled": True}).json()["version"] == 4  # nothing to record
    enabled = org_a.call("PATCH", f"{PATH}/{created['id']}", json={"disabled": False}).json()
    assert (enabled["disabled"], enabled["disabled_reason"], enabled["version"]) == (False, None, 5)
    assert_problem(org_a.call("PATCH", f"{PATH}/{created['id']}", headers={"If-Match": etag(1)}, json={"disabled": True}),
                   412, "precondition_failed")
    assert listed(org_a, store)[0] == enabled


def test_a_deleted_endpoint_is_gone(org_a: Admin, store: EventStore, app: Litestar) -> None:
    kept, gone = create(org_a), create(org_a, url="https://gone.example.com/")

    deleted = org_a.call("DELETE", f"{PATH}/{gone['id']}")

    assert deleted.status_code == 204 and deleted.content == b""
    for method, suffix, body in (("GET", "", None), ("PATCH", "", {"disabled": True}), ("DELETE", "", None), ("POST", "/rotate-secret", None)):
        assert_problem(org_a.call(method, f"{PATH}/{gone['id']}{suffix}", json=body), 404, "not_found")
    assert [i["id"] for i in listed(org_a, store)] == [kept["id"]]
    assert [str(d.endpoint_id) for d in delivery(app, "org_a", t.WIDGET_CREATED)] == [kept["id"]]
    assert app.state.services.db.query("SELECT secret_id FROM webhook_endpoint_secrets WHERE endpoint_id = ?", [gone["id"]]) == []


def test_rotation_answers_a_new_secret_and_the_old_one_signs_for_24_hours(org_a: Admin, store: EventStore, app: Litestar) -> None:
    created = create(org_a)

    rotated = org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret", headers={"If-Match": etag(1)})

    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert SECRET.match(new["secret"]) and new["secret"] != created["secret"] and new["version"] == 2
    assert rotated.headers["etag"] == etag(2)
    caught_up(org_a, store)
    now = datetime.now(UTC)
    (target,) = delivery(app, "org_a", t.WIDGET_CREATED, now)
    assert target.signing_secrets == [raw(new["secret"]), raw(created["secret"])]
    (later,) = delivery(app, "org_a", t.WIDGET_CREATED, now + timedelta(hours=24, minutes=1))
    assert later.signing_secrets == [raw(new["secret"])]
    assert "secret" not in org_a.call("GET", f"{PATH}/{created['id']}").json()
    assert_problem(org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret", headers={"If-Match": etag(1)}), 412, "precondition_failed")


# --- what the deliverer reads ------------------------------------------------------------------------------------------


def test_delivery_targets_are_the_enabled_endpoints_subscribed_to_the_type(org_a: Admin, org_b: Admin, store: EventStore,
                                                                          app: Litestar) -> None:
    everything = create(org_a)
    leads = create(org_a, url="https://crm.example.com/", events=[t.CONVERSATION_FORM_SUBMITTED])
    off = create(org_a, url="https://off.example.com/")
    org_a.call("PATCH", f"{PATH}/{off['id']}", json={"disabled": True})
    create(org_b, url="https://b.example.com/")
    caught_up(org_a, store)

    form = delivery(app, "org_a", t.CONVERSATION_FORM_SUBMITTED)
    assert [(str(d.endpoint_id), d.url, d.organization_id) for d in form] == [
        (everything["id"], URL, "org_a"), (leads["id"], "https://crm.example.com/", "org_a")]
    assert form[1].signing_secrets == [raw(leads["secret"])]
    assert [str(d.endpoint_id) for d in delivery(app, "org_a", t.WIDGET_CREATED)] == [everything["id"]]
    assert delivery(app, "org_c", t.WIDGET_CREATED) == []


def test_the_deliverer_disables_an_endpoint_with_its_reason(org_a: Admin, store: EventStore, app: Litestar) -> None:
    created = create(org_a)
    service = app.state.services.webhook_endpoints

    assert service.disable_endpoint(UUID(created["id"]), "gone_410") is True
    assert service.disable_endpoint(UUID(created["id"]), "failing_5_days") is False  # already disabled: the first reason stays
    assert service.disable_endpoint(UUID(int=1), "gone_410") is False

    body = org_a.call("GET", f"{PATH}/{created['id']}").json()
    assert (body["disabled"], body["disabled_reason"]) == (True, "gone_410")
    caught_up(org_a, store)
    assert delivery(app, "org_a", t.WIDGET_CREATED) == []
    last = org_a.call("GET", "/v1/audit/events").json()["items"][-1]
    assert (last["type"], last["actor"], last["data"]) == (t.WEBHOOK_ENDPOINT_DISABLED, "webhooks", {"reason": "gone_410"})


def test_a_rebuilt_read_model_still_opens_every_secret(org_a: Admin, store: EventStore, app: Litestar) -> None:
    first = create(org_a)
    rotated = org_a.call("POST", f"{PATH}/{first['id']}/rotate-secret").json()
    second = create(org_a, url="https://second.example.com/")
    caught_up(org_a, store)
    before = delivery(app, "org_a", t.WIDGET_CREATED)

    rebuild_sql(store, app.state.services.db, "webhook_endpoints")

    assert delivery(app, "org_a", t.WIDGET_CREATED) == before
    assert [d.signing_secrets for d in before] == [[raw(rotated["secret"]), raw(first["secret"])], [raw(second["secret"])]]


def test_rotating_the_deployment_key_reseals_every_secret(org_a: Admin, store: EventStore, app: Litestar) -> None:
    created = create(org_a)
    caught_up(org_a, store)
    services = app.state.services
    old = DeploymentKeys.from_settings(services.settings)
    new_key = bytes(range(32))
    both = DeploymentKeys(new_key, previous=base64.b64decode(services.settings.data_key))

    assert reseal_webhook_secrets(services.db, both) == 1
    assert reseal_webhook_secrets(services.db, both) == 0  # idempotent

    (target,) = endpoints_for_delivery(services.db, DeploymentKeys(new_key), "org_a", t.WIDGET_CREATED)
    assert target.signing_secrets == [raw(created["secret"])]
    with pytest.raises(Exception, match="deployment key"):
        endpoints_for_delivery(services.db, old, "org_a", t.WIDGET_CREATED)


# --- tenants, scopes, idempotency ----------------------------------------------------------------------------------------


def test_another_organizations_endpoint_is_not_found_both_ways(org_a: Admin, org_b: Admin, store: EventStore) -> None:
    mine, theirs = create(org_a), create(org_b, url="https://b.example.com/")
    for me, other in ((org_a, theirs), (org_b, mine)):
        for method, suffix, body in (("GET", "", None), ("PATCH", "", {"disabled": True}), ("DELETE", "", None),
                                     ("POST", "/rotate-secret", None)):
            assert_problem(me.call(method, f"{PATH}/{other['id']}{suffix}", json=body), 404, "not_found")
    assert [i["id"] for i in listed(org_a, store)] == [mine["id"]]
    assert [i["id"] for i in listed(org_b, store)] == [theirs["id"]]
    assert org_b.call("GET", f"{PATH}/{theirs['id']}").json()["disabled"] is False  # untouched by org_a's attempts


def test_reads_need_widgets_read_and_changes_widgets_write(org_a: Admin) -> None:
    created = create(org_a)
    read_only, write_only = org_a.with_scopes("widgets:read"), org_a.with_scopes("widgets:write")

    assert_problem(org_a.call("POST", PATH, headers=read_only, json={"url": URL, "events": ["*"]}), 403, "insufficient_scope")
    assert_problem(org_a.call("PATCH", f"{PATH}/{created['id']}", headers=read_only, json={"disabled": True}), 403, "insufficient_scope")
    assert_problem(org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret", headers=read_only), 403, "insufficient_scope")
    assert_problem(org_a.call("DELETE", f"{PATH}/{created['id']}", headers=read_only), 403, "insufficient_scope")
    assert_problem(org_a.call("GET", PATH, headers=write_only), 403, "insufficient_scope")
    assert_problem(org_a.call("GET", f"{PATH}/{created['id']}", headers=write_only), 403, "insufficient_scope")
    assert org_a.call("GET", f"{PATH}/{created['id']}", headers=read_only).status_code == 200


def test_an_idempotent_create_answers_the_first_endpoint_and_secret(org_a: Admin, store: EventStore, app: Litestar) -> None:
    body = {"url": URL, "events": ["*"]}
    first = org_a.call("POST", PATH, headers={"Idempotency-Key": "k-1"}, json=body)
    again = org_a.call("POST", PATH, headers={"Idempotency-Key": "k-1"}, json=body)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert_problem(org_a.call("POST", PATH, headers={"Idempotency-Key": "k-1"}, json={**body, "events": [t.WIDGET_CREATED]}),
                   422, "idempotency_key_reused")
    assert len(listed(org_a, store)) == 1
    assert len(app.state.services.db.query("SELECT secret_id FROM webhook_endpoint_secrets")) == 1  # no orphan of the retries


# --- bad input ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "http://hooks.example.com/", "events": ["*"]}, "url"),
    ({"url": "https://127.0.0.1/hook", "events": ["*"]}, "url"),
    ({"url": "https://[::ffff:10.0.0.1]/hook", "events": ["*"]}, "url"),
    ({"url": "https://169.254.169.254/latest/meta-data", "events": ["*"]}, "url"),
    ({"url": "https://localhost:8443/", "events": ["*"]}, "url"),
    ({"url": "not a url", "events": ["*"]}, "url"),
    ({"url": URL, "events": ["widget.exploded"]}, "events[0]"),
    ({"url": URL, "events": [t.WIDGET_CREATED, "nope"]}, "events[1]"),
    ({"url": URL, "events": []}, "events"),
    ({"url": URL, "events": ["*", t.WIDGET_CREATED]}, "events"),
    ({"url": URL}, "events"),
    ({"events": ["*"]}, "url"),
    ({"url": URL, "events": ["*"], "secret": "whsec_mine"}, "secret"),
    ({"url": URL, "events": "*"}, "events"),
    ({"url": URL, "events": ["*"], "description": "two\nlines"}, "description"),
])
def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(org_a: Admin, store: EventStore, body: dict[str, Any],
                                                                 field: str) -> None:
    head = store.recorder.max_notification_id()

    problem = assert_problem(org_a.call("POST", PATH, json=body), 400, "invalid_request")

    assert field in [e["field"] for e in problem["errors"]], problem
    assert store.recorder.max_notification_id() == head


def test_bad_changes_are_a_400_naming_the_field(org_a: Admin) -> None:
    created = create(org_a)
    for body, field in (({"url": "https://10.1.2.3/"}, "url"), ({"events": ["x.y"]}, "events[0]"), ({"description": "d"}, "description"),
                        ({"disabled": "yes"}, "disabled"), ({"url": None}, "url")):
        problem = assert_problem(org_a.call("PATCH", f"{PATH}/{created['id']}", json=body), 400, "invalid_request")
        assert field in [e["field"] for e in problem["errors"]], (body, problem)
    assert org_a.call("GET", f"{PATH}/{created['id']}").json()["version"] == 1


def test_every_subscribable_type_is_accepted(org_a: Admin) -> None:
    created = create(org_a, events=sorted(SUBSCRIBABLE_EVENT_TYPES))
    assert set(created["events"]) == SUBSCRIBABLE_EVENT_TYPES
    assert set(t.EVENT_TYPES) <= SUBSCRIBABLE_EVENT_TYPES and "conversation.personal_data_erased" in SUBSCRIBABLE_EVENT_TYPES


def test_the_development_switch_allows_http_and_loopback(settings: Settings) -> None:
    app = create_app(replace(settings, webhook_allow_private=True))
    with client_for(app) as client:
        admin = Admin(client, settings, "org_a", "alice")
        assert create(admin, url="http://127.0.0.1:9000/hook")["url"] == "http://127.0.0.1:9000/hook"
        assert_problem(admin.call("POST", PATH, json={"url": "ftp://127.0.0.1/", "events": ["*"]}), 400, "invalid_request")


def test_head_answers_like_get(client: TestClient[Litestar], org_a: Admin) -> None:
    created = create(org_a)
    head = org_a.call("HEAD", f"{PATH}/{created['id']}")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag(1)


def test_a_second_rotation_a_day_later_destroys_the_secret_that_stopped_signing(org_a: Admin, store: EventStore,
                                                                                 app: Litestar) -> None:
    created = create(org_a)
    service = app.state.services.webhook_endpoints
    first = org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret").json()
    service.clock = lambda: datetime.now(UTC) + timedelta(hours=25)

    second = org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret").json()

    caught_up(org_a, store)
    (target,) = delivery(app, "org_a", t.WIDGET_CREATED, datetime.now(UTC) + timedelta(hours=25))
    assert target.signing_secrets == [raw(second["secret"]), raw(first["secret"])]
    stored = app.state.services.db.query("SELECT secret_id FROM webhook_endpoint_secrets WHERE endpoint_id = ?", [created["id"]])
    assert len(stored) == 2  # the first secret's row is gone


# --- the command line and verify ------------------------------------------------------------------------------------------


def test_widgets_webhooks_lists_the_endpoints_without_secrets(org_a: Admin, org_b: Admin, store: EventStore,
                                                              settings: Settings) -> None:
    from click.testing import CliRunner

    from api.cli import main

    mine, theirs = create(org_a), create(org_b, url="https://b.example.com/", events=[t.WIDGET_CREATED])
    org_a.call("PATCH", f"{PATH}/{mine['id']}", json={"disabled": True})
    caught_up(org_a, store)
    env = {env_name(f.name): str(getattr(settings, f.name)) for f in fields(settings)}  # this wiring, as the CLI reads it

    as_json = CliRunner().invoke(main, ["webhooks", "--json"], env=env)
    one_org = CliRunner().invoke(main, ["webhooks", "--org", "org_b"], env=env)

    assert as_json.exit_code == 0, as_json.output
    endpoints = json.loads(as_json.output)["endpoints"]
    assert [(e["id"], e["disabled"], e["disabled_reason"]) for e in endpoints] == [(mine["id"], True, "request"), (theirs["id"], False, None)]
    assert one_org.exit_code == 0 and theirs["id"] in one_org.output and mine["id"] not in one_org.output
    assert "enabled" in one_org.output and "https://b.example.com/" in one_org.output
    for secret in (mine["secret"], theirs["secret"]):
        assert secret not in as_json.output + one_org.output


def test_verify_replays_the_endpoints_to_the_same_rows(org_a: Admin, store: EventStore, app: Litestar) -> None:
    from projections.verify import verify

    created = create(org_a)
    org_a.call("POST", f"{PATH}/{created['id']}/rotate-secret")
    org_a.call("PATCH", f"{PATH}/{created['id']}", json={"events": [t.CONVERSATION_ENDED]})
    caught_up(org_a, store)

    differences, checked = verify(app.state.services.settings, store, app.state.services.db)

    assert "webhook_endpoints" in checked and [d for d in differences if d.model == "webhook_endpoints"] == []


def test_a_delivery_target_knows_the_log_position_it_was_created_at(org_a: Admin, store: EventStore, app: Litestar) -> None:
    org_a.widget()  # events before the endpoint existed
    response = org_a.call("POST", PATH, json={"url": URL, "events": ["*"]})
    org_a.call("PATCH", f"{PATH}/{response.json()['id']}", json={"events": [t.WIDGET_CREATED]})
    caught_up(org_a, store)

    (target,) = delivery(app, "org_a", t.WIDGET_CREATED)

    assert target.created_position == int(response.headers["x-event-position"]) > 1
    rebuild_sql(store, app.state.services.db, "webhook_endpoints")
    assert delivery(app, "org_a", t.WIDGET_CREATED) == [target]


# --- concurrent writers ---------------------------------------------------------------------------------------------------


def test_concurrent_rotations_each_answer_a_secret_that_signs_and_leave_no_orphan(org_a: Admin, store: EventStore,
                                                                                  app: Litestar) -> None:
    from tests.api.test_concurrency import race

    created = create(org_a)
    path = f"{PATH}/{created['id']}/rotate-secret"

    guarded = race(app, org_a, [("POST", path, {"headers": {"If-Match": etag(1)}}) for _ in range(3)])
    free = race(app, org_a, [("POST", path, {}) for _ in range(3)])

    assert sorted(a.status_code for a in guarded) in ([200, 409, 409], [200, 409, 412], [200, 412, 412]), [a.text for a in guarded]
    assert all(a.status_code == 200 for a in free), [a.text for a in free]
    answered = [a.json()["secret"] for a in guarded + free if a.status_code == 200]
    caught_up(org_a, store)
    (target,) = delivery(app, "org_a", t.WIDGET_CREATED)
    assert sorted(target.signing_secrets) == sorted([raw(created["secret"]), *(raw(s) for s in answered)])
    assert org_a.call("GET", f"{PATH}/{created['id']}").json()["version"] == 5
    rows = app.state.services.db.query("SELECT secret_id FROM webhook_endpoint_secrets WHERE endpoint_id = ?", [created["id"]])
    assert len(rows) == 5  # the first secret and the four rotations that won; the two refused left nothing


def test_concurrent_creates_with_one_idempotency_key_create_one_endpoint_with_one_secret(org_a: Admin, store: EventStore,
                                                                                        app: Litestar) -> None:
    from tests.api.test_concurrency import race

    body = {"url": URL, "events": ["*"]}
    answers = race(app, org_a, [("POST", PATH, {"json": dict(body), "headers": {"Idempotency-Key": "same"}}) for _ in range(4)])

    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1 and len({a.json()["secret"] for a in answers}) == 1
    assert len(app.state.services.db.query("SELECT secret_id FROM webhook_endpoint_secrets")) == 1
    assert len(listed(org_a, store)) == 1

"""Outgoing webhook deliveries on both wirings, to a real receiver on loopback, checked with `standardwebhooks`:
every event of the organization signed and delivered, retries with the same id, 410, a slow endpoint beside a
fast one, manual retry, the delivery log, erasure before a retry, and tenant isolation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem, client_for
from tests.api.public_helpers import conversation_call, eventually, live_widget, started, sync
from tests.webhook_receiver import Receiver, receiving, verified

PATH = "/v1/webhook-endpoints"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


@pytest.fixture
def app(settings: Settings) -> Litestar:
    # Loopback receivers need the development switch; retries come fast.
    return create_app(dataclasses.replace(settings, webhook_allow_private=True, webhook_retry_schedule="0.2,0.2,0.2",
                                          webhook_deliveries=True))


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with client_for(app) as client:
        yield client


def endpoint(admin: Admin, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = admin.call("POST", PATH, json={"url": url, "events": events or ["*"]})
    assert response.status_code == 201, response.text
    return response.json()


def deliveries(admin: Admin, endpoint_id: str, **params: Any) -> dict[str, Any]:
    response = admin.call("GET", f"{PATH}/{endpoint_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def all_deliveries(admin: Admin, endpoint_id: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = deliveries(admin, endpoint_id, limit=7, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def feed(admin: Admin, after: int = 0) -> list[dict[str, Any]]:
    response = admin.call("GET", "/v1/audit/events", params={"after": after, "limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_every_event_of_the_organization_is_delivered_signed_and_logged(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar], receiver: Receiver
) -> None:
    hook = endpoint(org_a, receiver.url("/a"))
    sync(app)
    start = max((e["position"] for e in feed(org_a)), default=0)
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"], name="Ottilie")
    endpoint(org_b, receiver.url("/b"))
    org_b.widget()  # the other organization's events go to its own endpoint only
    sync(app)
    expected = [e for e in feed(org_a, start)]
    got = receiver.wait_for("/a", len(expected))
    time.sleep(0.3)
    got = receiver.at("/a")
    bodies = [verified(hook["secret"], r) for r in got]  # every one signed as Standard Webhooks says
    assert sorted((b["type"], b["data"][b["type"].split(".")[0] + "_id"]) for b in bodies) == sorted(
        (e["type"], e["aggregate_id"]) for e in expected)
    assert all(r.headers["content-type"] == "application/json" for r in got)
    started_body = next(b for b in bodies if b["type"] == "conversation.started")
    assert started_body["data"]["conversation_id"] == grant["conversation_id"]
    assert started_body["data"]["visitor"] == {"name": "Ottilie"}  # rendered for the site owner's own systems
    assert set(started_body) == {"type", "timestamp", "data"}
    logged = all_deliveries(org_a, hook["id"])
    assert sorted(d["message_id"] for d in logged) == sorted(r.id for r in got)
    eventually(lambda: all(d["status"] == "succeeded" for d in all_deliveries(org_a, hook["id"])), what="all succeeded")
    done = all_deliveries(org_a, hook["id"])[0]
    assert done["attempts"] == 1 and done["last_response_status"] == 200 and done["delivered_at"] is not None
    assert done["next_attempt_at"] is None
    theirs = {e["aggregate_id"] for e in feed(org_b)}
    got_b = [r.json() for r in receiver.wait_for("/b", 1)]
    mine = {e["aggregate_id"] for e in feed(org_a)}
    assert all(b["data"][b["type"].split(".")[0] + "_id"] in theirs for b in got_b)  # each organization hears its own only
    assert not any(b["data"][b["type"].split(".")[0] + "_id"] in mine for b in got_b)
    assert not any(b["data"][b["type"].split(".")[0] + "_id"] in theirs for b in bodies)


def test_a_failing_endpoint_is_retried_with_the_same_id_until_it_answers_2xx(
    org_a: Admin, app: Litestar, receiver: Receiver
) -> None:
    receiver.statuses["/flaky"] = [500, 503, 200]
    hook = endpoint(org_a, receiver.url("/flaky"), ["agent.created"])
    sync(app)
    org_a.agent()
    got = receiver.wait_for("/flaky", 3)
    assert len({r.id for r in got}) == 1
    assert [int(r.headers["webhook-timestamp"]) for r in got] == sorted(int(r.headers["webhook-timestamp"]) for r in got)
    for request in got:
        verified(hook["secret"], request)
    eventually(lambda: deliveries(org_a, hook["id"])["items"][0]["status"] == "succeeded", what="succeeded")
    item = deliveries(org_a, hook["id"])["items"][0]
    assert item["attempts"] == 3 and item["last_response_status"] == 200 and item["message_id"] == got[0].id


def test_after_the_last_retry_a_delivery_is_failed_and_a_manual_retry_sends_it_again(
    org_a: Admin, org_b: Admin, app: Litestar, receiver: Receiver
) -> None:
    receiver.statuses["/down"] = [500, 500, 500, 500, 200]
    hook = endpoint(org_a, receiver.url("/down"), ["agent.created"])
    sync(app)
    org_a.agent()
    receiver.wait_for("/down", 4)
    eventually(lambda: deliveries(org_a, hook["id"])["items"][0]["status"] == "failed", what="failed")
    item = deliveries(org_a, hook["id"])["items"][0]
    assert item["attempts"] == 4 and item["last_response_status"] == 500 and item["next_attempt_at"] is None
    retry = f"{PATH}/{hook['id']}/deliveries/{item['message_id']}/retry"
    assert_problem(org_b.call("POST", retry), 404, "not_found")  # another organization's endpoint
    assert_problem(org_a.call("POST", f"{PATH}/{hook['id']}/deliveries/msg_{'0' * 32}/retry"), 404, "not_found")
    assert_problem(org_a.call("POST", f"{PATH}/{hook['id']}/deliveries/not-a-message/retry"), 400, "invalid_request")
    assert org_a.call("POST", retry).status_code == 202
    again = receiver.wait_for("/down", 5)
    assert again[-1].id == item["message_id"]
    eventually(lambda: deliveries(org_a, hook["id"])["items"][0]["status"] == "succeeded", what="succeeded")


def test_410_disables_the_endpoint_and_nothing_more_is_sent(org_a: Admin, app: Litestar, receiver: Receiver) -> None:
    receiver.statuses["/gone"] = [410]
    hook = endpoint(org_a, receiver.url("/gone"), ["agent.created"])
    sync(app)
    org_a.agent()
    receiver.wait_for("/gone", 1)

    def disabled() -> bool:
        sync(app)
        return org_a.call("GET", f"{PATH}/{hook['id']}").json()["disabled"]

    eventually(disabled, what="the endpoint disabled")
    answer = org_a.call("GET", f"{PATH}/{hook['id']}").json()
    assert answer["disabled_reason"] == "gone_410"
    assert deliveries(org_a, hook["id"])["items"][0]["status"] == "failed"
    org_a.agent("Second")
    sync(app)
    time.sleep(0.5)
    assert len(receiver.at("/gone")) == 1
    assert len(deliveries(org_a, hook["id"])["items"]) == 1  # a disabled endpoint is not queued for


def test_a_slow_endpoint_delays_no_other(org_a: Admin, app: Litestar, receiver: Receiver) -> None:
    receiver.delays["/slow"] = 1.5
    endpoint(org_a, receiver.url("/slow"), ["agent.created"])
    endpoint(org_a, receiver.url("/fast"), ["agent.created"])
    sync(app)
    for i in range(12):
        org_a.agent(f"Agent {i}")
    receiver.wait_for("/fast", 12)
    # The slow one has taken a few attempts at a time (each 1.5 s): far from all of them yet.
    assert len(receiver.at("/slow")) < 12
    receiver.wait_for("/slow", 12, timeout=30)


def test_an_event_erased_before_its_retry_is_delivered_without_its_personal_values(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], receiver: Receiver
) -> None:
    receiver.statuses["/leads"] = [500, 200]
    widget = live_widget(org_a, app)
    hook = endpoint(org_a, receiver.url("/leads"), ["conversation.form_submitted"])
    sync(app)
    grant = started(client, widget["id"], name="Perpetua")
    token, cid = grant["resume_token"], grant["conversation_id"]
    app.state.services.dispatcher.schedule = (3.0,)  # time to erase between the attempts
    assert conversation_call(client, widget["id"], cid, "forms/pre",
                             {"resume_token": token, "values": {"email": "perpetua@mail.example"}}).status_code == 202
    first = receiver.wait_for("/leads", 1)[0]
    assert verified(hook["secret"], first)["data"]["values"] == {"email": "perpetua@mail.example"}
    response = org_a.call("DELETE", f"/v1/widgets/{widget['id']}/conversations/{cid}/personal-data")
    assert response.status_code in (200, 202, 204), response.text
    second = receiver.wait_for("/leads", 2)[1]
    assert second.id == first.id
    assert verified(hook["secret"], second)["data"]["values"] is None


def test_the_delivery_log_is_the_organizations_own(org_a: Admin, org_b: Admin, app: Litestar, receiver: Receiver) -> None:
    hook = endpoint(org_a, receiver.url("/mine"), ["agent.created"])
    sync(app)
    org_a.agent()
    receiver.wait_for("/mine", 1)
    assert_problem(org_b.call("GET", f"{PATH}/{hook['id']}/deliveries"), 404, "not_found")
    assert_problem(org_a.call("GET", f"{PATH}/{hook['id']}/deliveries", params={"cursor": "bm90LWEtY3Vyc29y"}), 400,
                   "invalid_request")
    reader = org_a.with_scopes("audit:read")
    assert org_a.call("GET", f"{PATH}/{hook['id']}/deliveries", headers=reader).status_code == 403


def test_after_a_rotation_the_old_and_the_new_secret_both_verify(org_a: Admin, app: Litestar, receiver: Receiver) -> None:
    hook = endpoint(org_a, receiver.url("/rotated"), ["agent.created"])
    rotated = org_a.call("POST", f"{PATH}/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    sync(app)
    org_a.agent()
    request = receiver.wait_for("/rotated", 1)[0]
    assert verified(hook["secret"], request) == verified(rotated.json()["secret"], request)


def test_deliveries_right_after_two_quick_rotations_are_signed_by_the_newest_secret_and_the_old_ones(
    org_a: Admin, app: Litestar, receiver: Receiver
) -> None:
    hook = endpoint(org_a, receiver.url("/quick"), ["agent.created"])
    secrets = [hook["secret"]]
    for round_ in range(3):  # well within a second of each other: no cached target may outlive a rotation
        rotated = org_a.call("POST", f"{PATH}/{hook['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        secrets.append(rotated.json()["secret"])
        org_a.agent(f"After rotation {round_ + 1}")
        request = receiver.wait_for("/quick", round_ + 1)[-1]
        assert request.json()["data"]["name"] == f"After rotation {round_ + 1}"
        for secret in secrets:  # the newest, and every one rotated out less than 24 h ago
            verified(secret, request)


def test_a_delivery_waits_until_the_endpoints_model_has_reached_its_event(
    org_a: Admin, app: Litestar, receiver: Receiver
) -> None:
    from projections.runner import ProjectionRunner
    from projections.webhook_endpoints import WebhookEndpointsProjection, WebhookEndpointsView

    services = app.state.services
    hook = endpoint(org_a, receiver.url("/lagging"), ["agent.created"])
    sync(app)
    services.read_models.runners["webhook_endpoints"].stop()  # the endpoints model stays where it is for now
    rotated = org_a.call("POST", f"{PATH}/{hook['id']}/rotate-secret").json()
    org_a.agent("Behind")
    services.read_models.runners["webhook_outbox"].wait(services.store.recorder.max_notification_id(), 5)
    time.sleep(0.5)
    assert receiver.at("/lagging") == []  # queued, but not signed by the stale state's old secret alone
    view = WebhookEndpointsView(services.db, create=False)
    ProjectionRunner("webhook_endpoints", services.store, view, projection_factory=WebhookEndpointsProjection).catch_up()
    request = receiver.wait_for("/lagging", 1)[0]
    assert verified(rotated["secret"], request) == verified(hook["secret"], request)
    assert deliveries(org_a, hook["id"])["items"][0]["attempts"] <= 1  # put off, not counted as a failed attempt


def test_a_secret_missing_from_its_table_puts_the_delivery_off_logged_and_counted_until_it_is_back(
    org_a: Admin, app: Litestar, receiver: Receiver
) -> None:
    from prometheus_client import REGISTRY
    from structlog.testing import capture_logs

    def deferred() -> float:
        return REGISTRY.get_sample_value("widgets_webhook_deliveries_deferred_total", {"reason": "signing_secret_missing"}) or 0.0

    db = app.state.services.db
    hook = endpoint(org_a, receiver.url("/restored"), ["agent.created"])
    rotated = org_a.call("POST", f"{PATH}/{hook['id']}/rotate-secret").json()
    sync(app)
    rows = db.query("SELECT secret_id, endpoint_id, sealed FROM webhook_endpoint_secrets WHERE endpoint_id = ?", [hook["id"]])
    assert len(rows) == 2
    with db.transaction() as tx:  # as a restore without the old secret's row would leave it
        tx.execute("DELETE FROM webhook_endpoint_secrets WHERE secret_id = ?", [rows[0][0]])
    before = deferred()
    with capture_logs() as logged:
        org_a.agent("Unsigned")
        eventually(lambda: deliveries(org_a, hook["id"])["items"][:1] != [] and
                   deliveries(org_a, hook["id"])["items"][0]["last_error"] == "signing_secret_missing", what="put off")

    item = deliveries(org_a, hook["id"])["items"][0]  # an attempt not made, on the retry schedule (here 3 × 0.2 s)
    assert item["attempts"] >= 1 and item["last_response_status"] is None and item["status"] in ("pending", "failed")
    assert receiver.at("/restored") == []  # never sent with fewer signatures than promised
    assert deferred() > before
    missing = [e for e in logged if e["event"] == "webhook_signing_secret_missing"]
    assert missing and missing[0]["endpoint_id"] == hook["id"] and missing[0]["missing"] == 1
    assert not any(rows[0][0] in repr(e) or rows[0][2] in repr(e) for e in logged)  # neither the secret's id nor its value

    with db.transaction() as tx:
        tx.execute("INSERT INTO webhook_endpoint_secrets (secret_id, endpoint_id, sealed) VALUES (?, ?, ?)", list(rows[0]))
    retried = org_a.call("POST", f"{PATH}/{hook['id']}/deliveries/{item['message_id']}/retry")
    assert retried.status_code == 202, retried.text
    request = receiver.wait_for("/restored", 1)[0]
    assert verified(rotated["secret"], request) == verified(hook["secret"], request)


def test_a_name_resolving_to_loopback_is_never_connected(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_webhook_sender import Listener, resolving_to

    listener = Listener()
    resolving_to(monkeypatch, {"hooks.rebinding.example": ["127.0.0.1"]})
    # The development switch is off, as in production.
    app = create_app(dataclasses.replace(settings, webhook_retry_schedule="0.2", webhook_deliveries=True))
    try:
        with client_for(app) as client:
            admin = Admin(client, settings, "org_a", "alice")
            hook = endpoint(admin, f"https://hooks.rebinding.example:{listener.port}/in", ["agent.created"])
            sync(app)
            admin.agent()
            eventually(lambda: deliveries(admin, hook["id"])["items"][:1] != [] and
                       deliveries(admin, hook["id"])["items"][0]["status"] == "failed", timeout=10, what="failed")
            item = deliveries(admin, hook["id"])["items"][0]
            assert item["attempts"] == 2 and item["last_error"] == "address_not_allowed" and item["last_response_status"] is None
    finally:
        listener.close()
    assert listener.accepted == 0


def test_an_endpoint_failing_without_a_success_for_the_bound_is_disabled(org_a: Admin, app: Litestar, receiver: Receiver) -> None:
    receiver.statuses["/broken"] = [500]
    dispatcher = app.state.services.dispatcher
    dispatcher.disable_after_failing = 0.5  # 5 days in production; the same rule, shorter
    hook = endpoint(org_a, receiver.url("/broken"), ["agent.created"])
    sync(app)
    org_a.agent()
    time.sleep(0.6)
    org_a.agent("Again")  # its first attempt fails more than the bound after the first failure

    def disabled() -> bool:
        sync(app)
        return org_a.call("GET", f"{PATH}/{hook['id']}").json()["disabled"]

    eventually(disabled, timeout=10, what="the endpoint disabled")
    assert org_a.call("GET", f"{PATH}/{hook['id']}").json()["disabled_reason"] == "failing_5_days"


def test_one_success_resets_the_failing_clock(org_a: Admin, app: Litestar, receiver: Receiver) -> None:
    receiver.statuses["/shaky"] = [500, 200, 500]
    app.state.services.dispatcher.disable_after_failing = 5.0
    hook = endpoint(org_a, receiver.url("/shaky"), ["agent.created"])
    sync(app)
    org_a.agent()
    receiver.wait_for("/shaky", 2)  # failed once, then succeeded
    time.sleep(5.2)  # counted from that first failure, the bound would be past by the next one
    org_a.agent("Later")
    receiver.wait_for("/shaky", 6, timeout=20)  # its four attempts all fail, well within the bound of each other
    eventually(lambda: deliveries(org_a, hook["id"])["items"][0]["status"] == "failed", what="failed")
    sync(app)
    assert org_a.call("GET", f"{PATH}/{hook['id']}").json()["disabled"] is False


def test_a_rebuild_delivers_nothing_again_even_after_old_deliveries_were_pruned(
    org_a: Admin, app: Litestar, receiver: Receiver
) -> None:
    from projections.rebuild import rebuild_sql
    from projections.verify import verify
    from projections.webhook_outbox import prune

    services = app.state.services
    hook = endpoint(org_a, receiver.url("/kept"), ["agent.created"])
    sync(app)
    org_a.agent("First")
    org_a.agent("Second")
    receiver.wait_for("/kept", 2)
    eventually(lambda: all(d["status"] == "succeeded" for d in all_deliveries(org_a, hook["id"])), what="succeeded")
    rebuild_sql(services.store, services.db, "webhook_outbox")  # statuses kept, nothing queued twice
    assert [d["status"] for d in all_deliveries(org_a, hook["id"])] == ["succeeded", "succeeded"]
    assert prune(services.db, time.time() + 1) == 2  # as the hourly prune does with deliveries 30 days old
    rebuild_sql(services.store, services.db, "webhook_outbox")
    assert all_deliveries(org_a, hook["id"]) == []
    differences, _ = verify(services.settings, services.store, services.db)
    assert [d for d in differences if d.model == "webhook_outbox"] == []  # the replay stops at the horizon too
    org_a.agent("Third")
    receiver.wait_for("/kept", 3)
    time.sleep(0.5)
    assert sorted(r.json()["data"]["name"] for r in receiver.at("/kept")) == ["First", "Second", "Third"]  # once each

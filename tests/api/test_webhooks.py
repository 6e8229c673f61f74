"""LiveKit's signed webhook: `room_finished` ends the conversation in that room; anything unsigned is 401."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from livekit import api as livekit

from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import (
    conversation_call,
    conversations_of,
    live_widget,
    position,
    room_finished_body,
    started,
    webhook_headers,
)
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

WEBHOOK = "/webhooks/livekit"


def finish(client: TestClient[Litestar], room: str, event: str = "room_finished") -> None:
    body = room_finished_body(room, event)
    response = client.post(WEBHOOK, content=body, headers=webhook_headers(body))
    assert response.status_code == 200, response.text


def test_a_signed_room_finished_ends_the_conversation_in_that_room(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    bystander = started(client, widget["id"])
    finish(client, grant["livekit"]["room"])
    rows = conversations_of(org_a, app, widget["id"])
    assert (rows[grant["conversation_id"]]["ended"], rows[grant["conversation_id"]]["ended_by"]) == (True, "room_finished")
    assert rows[bystander["conversation_id"]]["ended"] is False


def test_a_conversation_ended_by_its_room_resumes_in_a_new_room(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    finish(client, grant["livekit"]["room"])
    response = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert response.status_code == 200, response.text
    assert response.json()["livekit"]["room"] != grant["livekit"]["room"]
    row = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]
    assert (row["ended"], row["ended_by"], row["rooms"]) == (False, None, 2)


def test_the_old_room_finishing_after_a_resume_does_not_end_the_new_one(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    response = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    new_room = response.json()["livekit"]["room"]
    before = position(app)
    finish(client, grant["livekit"]["room"])
    assert position(app) == before
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["ended"] is False
    finish(client, new_room)
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["ended_by"] == "room_finished"


def test_a_repeated_room_finished_records_one_end(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    finish(client, grant["livekit"]["room"])
    before = position(app)
    finish(client, grant["livekit"]["room"])
    assert position(app) == before


def test_room_finished_after_the_visitor_ended_keeps_it_ended_by_the_visitor(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    conversation_call(client, widget["id"], grant["conversation_id"], "end", {"resume_token": grant["resume_token"]})
    before = position(app)
    finish(client, grant["livekit"]["room"])
    assert position(app) == before
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["ended_by"] == "visitor"


@pytest.mark.parametrize("room", ["", "lobby", "conv_", "conv_nothex_abcd", "conv_00000000000000000000000000000000_ab"])
def test_room_finished_for_a_room_we_did_not_create_is_acknowledged_and_changes_nothing(
    room: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    live_widget(org_a, app)
    before = position(app)
    finish(client, room)
    assert position(app) == before


def test_other_events_are_acknowledged_and_change_nothing(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    for event in ("room_started", "participant_joined", "participant_left", "track_published"):
        finish(client, grant["livekit"]["room"], event)
    assert position(app) == before
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["ended"] is False


def test_unsigned_tampered_or_wrongly_signed_webhooks_are_401_and_change_nothing(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    body = room_finished_body(grant["livekit"]["room"])
    other_body = room_finished_body(started(client, widget["id"])["livekit"]["room"])
    good = webhook_headers(body)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    no_hash = livekit.AccessToken("devkey", "secret").to_jwt()
    expired = livekit.AccessToken("devkey", "secret").with_sha256(digest).with_ttl(timedelta(seconds=-3600)).to_jwt()
    attempts = [
        (body, {}),
        (body, {"Authorization": ""}),
        (other_body, good),
        (body + b" ", good),
        (body, webhook_headers(body, secret="not-the-secret")),
        (body, webhook_headers(body, key="otherkey")),
        (body, {"Authorization": no_hash}),
        (body, {"Authorization": expired}),
        (body, {"Authorization": good["Authorization"][:-3] + "abc"}),
        (body, {"Authorization": "Bearer garbage"}),
        (b"\xff\xfe not utf-8", webhook_headers(b"\xff\xfe not utf-8")),
    ]
    before = position(app)
    for content, headers in attempts:
        response = client.post(WEBHOOK, content=content, headers=headers)
        assert_problem(response, 401, "invalid_signature")
    assert position(app) == before
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["ended"] is False


def test_a_bearer_prefixed_signature_is_accepted(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    body = room_finished_body(grant["livekit"]["room"])
    headers = webhook_headers(body)
    response = client.post(WEBHOOK, content=body, headers={"Authorization": f"Bearer {headers['Authorization']}"})
    assert response.status_code == 200, response.text
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["ended_by"] == "room_finished"


def test_a_signed_body_that_is_not_a_webhook_event_is_never_a_server_error_and_changes_nothing(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    live_widget(org_a, app)
    before = position(app)
    for body in (b"not json", b"[]", b"{}", json.dumps({"event": 5}).encode(), json.dumps({"event": "room_finished", "room": 7}).encode()):
        response = client.post(WEBHOOK, content=body, headers=webhook_headers(body))
        assert response.status_code < 500, (body, response.status_code)
    assert position(app) == before

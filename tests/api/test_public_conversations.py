"""Visitors' conversations through the public API: start, resume, forms, feedback, end, on both wirings.

Every refusal (origin, dark widget, wrong token) writes nothing to the event store.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import (
    ALLOWED,
    ALLOWED_HEADERS,
    CONFIG,
    REFUSED,
    conversation_call,
    conversations_of,
    dispatch_metadata,
    event_data,
    eventually,
    live_widget,
    position,
    start,
    started,
    sync,
    until_dark,
    verify_grant,
    widget_path,
)
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

ACTIONS = ["resume", "forms/pre", "feedback", "end"]


def action_body(action: str, token: str) -> dict[str, Any]:
    if action == "forms/pre":
        return {"resume_token": token, "values": {"email": "ann@example.com"}}
    if action == "feedback":
        return {"resume_token": token, "rating": 4}
    return {"resume_token": token}


def assert_nothing_written(app: Litestar, before: int) -> None:
    assert position(app) == before, "a refused call wrote to the event store"


# --- start ----------------------------------------------------------------------------------


def test_starting_answers_201_with_a_grant_and_cors_for_the_origin(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    response = start(client, widget["id"], body={"visitor": {"name": "Ann", "locale": "pt-BR"}})
    assert response.status_code == 201, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "Origin" in response.headers["vary"]
    grant = response.json()
    assert grant["conversation_id"] == str(uuid.UUID(grant["conversation_id"]))
    assert len(grant["resume_token"]) >= 32
    row = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]
    assert row["visitor"] == {"name": "Ann", "locale": "pt-BR", "verified": False}
    assert row["ended"] is False and row["rooms"] == 1 and row["channel"] == "webrtc"


def test_starting_needs_no_body(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    response = client.post(widget_path(widget["id"], "conversations"), headers=ALLOWED_HEADERS)
    assert response.status_code == 201, response.text
    assert start(client, widget["id"], body={}).status_code == 201


@pytest.mark.parametrize("body", [
    {"visitor": {"name": "x" * 81}},
    {"visitor": {"name": ""}},
    {"visitor": {"name": "Ann\u0000"}},
    {"visitor": {"name": "Ann\nSet-Cookie: x"}},
    {"visitor": {"locale": "en-US\n"}},
    {"visitor": {"locale": "not a locale"}},
    {"visitor": {"name": "Ann", "email": "ann@example.com"}},
    {"visitor": "Ann"},
    {"organization_id": "org_b"},
    [1, 2],
])
def test_starting_with_an_invalid_body_is_400_and_writes_nothing(
    body: Any, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    before = position(app)
    assert_problem(start(client, widget["id"], body=body), 400, "invalid_request")
    assert_nothing_written(app, before)


def test_starting_with_malformed_json_is_400(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    before = position(app)
    response = client.post(widget_path(widget["id"], "conversations"), content=b'{"visitor": ',
                           headers={**ALLOWED_HEADERS, "Content-Type": "application/json"})
    assert_problem(response, 400, "invalid_request")
    assert_nothing_written(app, before)


def test_starting_pins_the_agent_version_the_widget_serves_at_that_moment(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    first = started(client, widget["id"])
    v2 = org_a.version(widget["agent_id"], published=True)
    assert org_a.call("PUT", f"/v1/widgets/{widget['id']}/agent-version", json={"agent_version_id": v2["id"]}).status_code == 200
    sync(app)

    def serves_v2() -> bool:
        grant = started(client, widget["id"])
        return dispatch_metadata(verify_grant(settings, grant["livekit"]["token"]))["agent_version_id"] == v2["id"]

    eventually(serves_v2, what="new starts on v2")
    name, data = event_data(app, first["conversation_id"])[0]
    assert name == "Created"
    assert str(data["agent_version_id"]) == widget["agent_version_id"]
    assert str(data["agent_id"]) == widget["agent_id"]
    assert str(data["widget_id"]) == widget["id"]
    assert data["organization_id"] == "org_a"
    assert data["origin"] == ALLOWED
    rows = conversations_of(org_a, app, widget["id"])
    assert rows[first["conversation_id"]]["agent_version_id"] == widget["agent_version_id"]
    assert {r["agent_version_id"] for cid, r in rows.items() if cid != first["conversation_id"]} == {v2["id"]}


def test_resuming_moves_the_conversation_to_the_version_served_now(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    v2 = org_a.version(widget["agent_id"], published=True)
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/agent-version", json={"agent_version_id": v2["id"]})
    sync(app)

    def serving_v2() -> bool:  # the public read model as the resume reads it (in production, behind a cache)
        entry = client.blocking_portal.call(app.state.services.reader.get, widget["id"])
        return entry is not None and entry.row.agent_version_id == v2["id"]

    eventually(serving_v2, what="the widget serving v2")
    response = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert response.status_code == 200, response.text
    answers = [response.json()]
    assert dispatch_metadata(verify_grant(settings, answers[-1]["livekit"]["token"]))["agent_version_id"] == v2["id"]
    events = event_data(app, grant["conversation_id"])
    assert str(events[0][1]["agent_version_id"]) == widget["agent_version_id"]
    assert events[-1][0] == "Resumed" and str(events[-1][1]["agent_version_id"]) == v2["id"]
    assert events[-1][1]["room"] == answers[-1]["livekit"]["room"]


def test_starts_from_refused_or_missing_origins_are_403_and_write_nothing(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    before = position(app)
    for origin, code in ((REFUSED, "origin_not_allowed"), ("http://example.com", "origin_not_allowed"),
                         ("https://example.com.evil.example.net", "origin_not_allowed"), (None, "origin_required")):
        response = start(client, widget["id"], origin=origin, body={"visitor": {"name": "Mallory"}})
        assert_problem(response, 403, code)
        assert "access-control-allow-origin" not in response.headers
    for origin in ("null", "https://example.com/"):
        response = start(client, widget["id"], origin=origin)
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
    assert_nothing_written(app, before)
    assert conversations_of(org_a, app, widget["id"]) == {}


# --- resume ---------------------------------------------------------------------------------


def test_resuming_with_the_token_answers_a_grant_for_a_fresh_room(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    response = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    again = response.json()
    assert again["conversation_id"] == grant["conversation_id"]
    assert again["resume_token"] != grant["resume_token"] and len(again["resume_token"]) >= 32  # the old one is retired
    assert again["livekit"]["room"] != grant["livekit"]["room"]
    assert verify_grant(settings, again["livekit"]["token"]).video.room == again["livekit"]["room"]
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["rooms"] == 2


def test_resuming_without_the_right_token_resumes_nothing(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    other = started(client, widget["id"])
    before = position(app)
    cid = grant["conversation_id"]
    for token in ("wrong", other["resume_token"], grant["resume_token"][:-1], grant["resume_token"] + "x",
                  grant["resume_token"].upper()):
        assert_problem(conversation_call(client, widget["id"], cid, "resume", {"resume_token": token}), 404, "not_found")
    for body in ({}, {"resume_token": ""}, None):
        response = conversation_call(client, widget["id"], cid, "resume", body)
        assert response.status_code in (400, 404), response.text
        assert "livekit" not in response.text
    assert_nothing_written(app, before)


def test_resuming_through_another_widget_or_an_unknown_id_is_404(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    sibling = live_widget(org_a, app)
    foreign = live_widget(org_b, app)
    grant = started(client, widget["id"])
    body = {"resume_token": grant["resume_token"]}
    before = position(app)
    for other in (sibling, foreign):
        assert_problem(conversation_call(client, other["id"], grant["conversation_id"], "resume", body), 404, "not_found")
    for cid in (str(uuid.uuid4()), "not-a-uuid", grant["conversation_id"][:-1], widget["id"]):
        assert_problem(conversation_call(client, widget["id"], cid, "resume", body), 404, "not_found")
    assert_nothing_written(app, before)


@pytest.mark.parametrize("action", ACTIONS)
def test_every_conversation_call_needs_the_token_of_that_conversation(
    action: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    other = started(client, widget["id"])
    before = position(app)
    response = conversation_call(client, widget["id"], grant["conversation_id"], action, action_body(action, other["resume_token"]))
    assert_problem(response, 404, "not_found")
    response = conversation_call(client, widget["id"], "nope", action, action_body(action, grant["resume_token"]))
    assert_problem(response, 404, "not_found")
    assert_nothing_written(app, before)
    response = conversation_call(client, widget["id"], grant["conversation_id"], action, action_body(action, grant["resume_token"]))
    assert response.status_code in (200, 202), response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert position(app) > before


@pytest.mark.parametrize("action", ACTIONS)
def test_every_conversation_call_from_a_refused_origin_is_403_and_writes_nothing(
    action: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    body = action_body(action, grant["resume_token"])
    for origin, code in ((REFUSED, "origin_not_allowed"), ("https://www.example.com", "origin_not_allowed"), (None, "origin_required")):
        response = conversation_call(client, widget["id"], grant["conversation_id"], action, body, origin=origin)
        assert_problem(response, 403, code)
        assert "access-control-allow-origin" not in response.headers
    assert_nothing_written(app, before)


def test_errors_after_the_origin_is_allowed_carry_cors_so_the_page_can_read_them(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    cid = grant["conversation_id"]
    wrong_token = conversation_call(client, widget["id"], cid, "resume", {"resume_token": "wrong"})
    invalid_form = conversation_call(client, widget["id"], cid, "forms/pre", {"resume_token": grant["resume_token"], "values": {}})
    unknown_form = conversation_call(client, widget["id"], cid, "forms/post", {"resume_token": grant["resume_token"], "values": {}})
    conversation_call(client, widget["id"], cid, "end", {"resume_token": grant["resume_token"]})
    ended = conversation_call(client, widget["id"], cid, "resume", {"resume_token": grant["resume_token"]})
    for response, status in ((wrong_token, 404), (invalid_form, 400), (unknown_form, 404), (ended, 409)):
        assert response.status_code == status, response.text
        assert response.headers.get("access-control-allow-origin") == ALLOWED
        assert "Origin" in response.headers.get("vary", "")


# --- the widget goes dark -------------------------------------------------------------------


def _darken(how: str, org_a: Admin, widget: dict[str, Any]) -> None:
    if how == "unpublished":
        response = org_a.call("POST", f"/v1/widgets/{widget['id']}/unpublish")
    elif how == "version_unpublished":
        response = org_a.call("POST", f"/v1/agents/{widget['agent_id']}/versions/{widget['agent_version_id']}/unpublish")
    else:
        response = org_a.call("DELETE", f"/v1/widgets/{widget['id']}")
    assert response.status_code in (200, 204), response.text


@pytest.mark.parametrize("how", ["unpublished", "version_unpublished", "deleted"])
def test_a_widget_that_went_dark_answers_404_to_every_call_and_writes_nothing(
    how: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    _darken(how, org_a, widget)
    sync(app)
    until_dark(client, widget["id"])
    before = position(app)
    # Not found, and a widget the read model still knows says it is not live (a deleted one is gone from it).
    code = "not_found" if how == "deleted" else "widget_not_live"
    assert_problem(start(client, widget["id"]), 404, code)
    for action in ACTIONS:
        response = conversation_call(client, widget["id"], grant["conversation_id"], action, action_body(action, grant["resume_token"]))
        assert_problem(response, 404, code)
        assert "access-control-allow-origin" not in response.headers
    assert_nothing_written(app, before)


# --- forms ----------------------------------------------------------------------------------


def submit(client: TestClient[Litestar], widget_id: str, grant: dict, values: Any, form: str = "pre") -> Any:
    return conversation_call(client, widget_id, grant["conversation_id"], f"forms/{form}",
                             {"resume_token": grant["resume_token"], "values": values})


def test_a_valid_form_is_accepted_and_recorded_with_blank_optionals_left_out(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    response = submit(client, widget["id"], grant, {"email": "ann@example.com", "topic": "Support", "note": "  "})
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted"}
    forms = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["forms"]
    assert [(f["form_id"], f["values"]) for f in forms] == [("pre", {"email": "ann@example.com", "topic": "Support"})]


@pytest.mark.parametrize(("values", "fields"), [
    ({}, {"values.email"}),
    ({"email": ""}, {"values.email"}),
    ({"email": "not-an-email"}, {"values.email"}),
    ({"email": "ann@example.com", "topic": "Billing"}, {"values.topic"}),
    ({"email": "ann@example.com", "nickname": "A"}, {"values.nickname"}),
    ({"email": 42}, {"values.email"}),
    ({"email": "bad", "topic": "Nope", "extra": 1}, {"values.email", "values.topic", "values.extra"}),
    ({"email": "ann@example.com", "note": "x" * 1001}, {"values.note"}),
])
def test_form_values_are_checked_against_the_form_definition_listing_every_problem(
    values: dict, fields: set[str], org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    body = assert_problem(submit(client, widget["id"], grant, values), 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == fields
    assert_nothing_written(app, before)


def test_values_that_are_not_an_object_are_400(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    for values in (["ann@example.com"], "ann@example.com", None):
        assert_problem(submit(client, widget["id"], grant, values), 400, "invalid_request")
    assert_nothing_written(app, before)


def test_an_unknown_form_is_404_and_writes_nothing(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    for form in ("post", "PRE", "pre%20"):
        assert_problem(submit(client, widget["id"], grant, {"email": "ann@example.com"}, form=form), 404, "not_found")
    assert_nothing_written(app, before)


def test_a_form_with_a_wrong_token_is_404_even_when_its_values_are_invalid(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    response = submit(client, widget["id"], {**grant, "resume_token": "wrong"}, {"email": "ann@example.com"})
    assert_problem(response, 404, "not_found")


# --- feedback -------------------------------------------------------------------------------


def give(client: TestClient[Litestar], widget_id: str, grant: dict, rating: Any, comment: Any = None) -> Any:
    body: dict[str, Any] = {"resume_token": grant["resume_token"], "rating": rating}
    if comment is not None:
        body["comment"] = comment
    return conversation_call(client, widget_id, grant["conversation_id"], "feedback", body)


def test_feedback_within_the_configured_scale_is_accepted_and_recorded(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    assert give(client, widget["id"], grant, 1).status_code == 202
    response = give(client, widget["id"], grant, 5, "Very helpful\nthanks")
    assert response.status_code == 202, response.text
    feedback = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["feedback"]
    assert (feedback["rating"], feedback["comment"]) == (5, "Very helpful\nthanks")


@pytest.mark.parametrize("rating", [0, 6, -1, 100])
def test_stars_outside_one_to_five_are_400(rating: int, org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    body = assert_problem(give(client, widget["id"], grant, rating), 400, "invalid_request")
    assert [e["field"] for e in body["errors"]] == ["rating"]
    assert_nothing_written(app, before)


@pytest.mark.parametrize("rating", ["5", 4.5, True, None])
def test_a_rating_that_is_not_an_integer_is_400(rating: Any, org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    before = position(app)
    body = {"resume_token": grant["resume_token"], "rating": rating}
    assert_problem(conversation_call(client, widget["id"], grant["conversation_id"], "feedback", body), 400, "invalid_request")
    assert_nothing_written(app, before)


def test_feedback_on_a_widget_without_feedback_is_400(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app, config={"v1": {"forms": CONFIG["v1"]["forms"]}})
    grant = started(client, widget["id"])
    before = position(app)
    body = assert_problem(give(client, widget["id"], grant, 1), 400, "invalid_request")
    assert body["errors"][0]["field"] == "rating"
    assert_nothing_written(app, before)


def test_thumbs_feedback_takes_zero_or_one_and_comments_only_when_allowed(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    config = {"v1": {"feedback": {"enabled": True, "type": "thumbs", "allow_comment": False}}}
    widget = live_widget(org_a, app, config=config)
    grant = started(client, widget["id"])
    assert give(client, widget["id"], grant, 0).status_code == 202
    assert give(client, widget["id"], grant, 1).status_code == 202
    assert_problem(give(client, widget["id"], grant, 2), 400, "invalid_request")
    body = assert_problem(give(client, widget["id"], grant, 1, "nice"), 400, "invalid_request")
    assert [e["field"] for e in body["errors"]] == ["comment"]


def test_a_comment_over_the_limit_or_with_control_characters_is_400(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    assert_problem(give(client, widget["id"], grant, 3, "x" * 2001), 400, "invalid_request")
    assert_problem(give(client, widget["id"], grant, 3, "bell\x07"), 400, "invalid_request")


# --- end ------------------------------------------------------------------------------------


def test_ending_closes_the_conversation_for_good_but_still_takes_feedback(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    end = conversation_call(client, widget["id"], grant["conversation_id"], "end", {"resume_token": grant["resume_token"]})
    assert end.status_code == 202, end.text
    assert end.headers["access-control-allow-origin"] == ALLOWED
    row = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]
    assert (row["ended"], row["ended_by"]) == (True, "visitor")
    before = position(app)
    again = conversation_call(client, widget["id"], grant["conversation_id"], "end", {"resume_token": grant["resume_token"]})
    assert again.status_code == 202
    assert_nothing_written(app, before)
    response = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert_problem(response, 409, "conversation_ended")
    assert_problem(submit(client, widget["id"], grant, {"email": "ann@example.com"}), 409, "conversation_ended")
    assert_nothing_written(app, before)
    assert give(client, widget["id"], grant, 5).status_code == 202


# --- the resume token is a secret the store never sees -------------------------------------


def stored_bytes(app: Litestar, settings: Settings) -> bytes:
    """Everything the event store and the read models hold, as bytes."""
    if settings.embedded:
        return b"".join(p.read_bytes() for p in Path(settings.data_dir).rglob("*") if p.is_file())
    chunks: list[bytes] = []
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (settings.database_schema,))]
        assert "widgets_events" in tables
        for (state,) in conn.execute(f'SELECT state FROM "{settings.database_schema}".widgets_events'):
            chunks.append(bytes(state))
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{settings.database_schema}"."{table}"'):
                chunks.append(repr(row).encode())
    client = sync_client(settings.redis_url)  # one Redis or the cluster
    try:
        for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
            kind = client.type(key)
            if kind == b"string":
                chunks.append(client.get(key) or b"")
            elif kind == b"set":
                chunks.extend(client.smembers(key))
            elif kind == b"hash":
                chunks.extend(b"".join(kv) for kv in client.hgetall(key).items())
            elif kind == b"zset":
                chunks.extend(client.zrange(key, 0, -1))
            elif kind == b"list":
                chunks.extend(client.lrange(key, 0, -1))
    finally:
        client.close()
    return b"\n".join(chunks)


def test_the_resume_token_is_never_stored_nor_listed(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"], name="Zebediah Quux")
    first = grant["resume_token"]
    resumed = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": first})
    assert resumed.status_code == 200
    token = resumed.json()["resume_token"]
    grant = {**grant, "resume_token": token}
    assert submit(client, widget["id"], grant, {"email": "zeb@example.com"}).status_code == 202
    assert give(client, widget["id"], grant, 4, "fine").status_code == 202
    assert conversation_call(client, widget["id"], grant["conversation_id"], "end", {"resume_token": token}).status_code == 202
    sync(app)  # the list is a read model
    listed = org_a.call("GET", f"/v1/widgets/{widget['id']}/conversations")
    assert listed.status_code == 200 and grant["conversation_id"] in listed.text
    assert "resume" not in listed.text
    audit = org_a.call("GET", "/v1/audit/events", params={"limit": 500})
    assert audit.status_code == 200 and "conversation.started" in audit.text
    sync(app)
    stored = stored_bytes(app, settings)
    assert grant["conversation_id"].encode() in stored, "the search does not see the stored rows"
    assert b"Zebediah Quux" not in stored and b"zeb@example.com" not in stored  # sealed everywhere
    for secret in (first, token):  # the retired token and the current one
        assert secret not in listed.text and secret not in audit.text
        assert secret.encode() not in stored
        for event_name, data in event_data(app, grant["conversation_id"]):
            assert secret not in repr(data), event_name

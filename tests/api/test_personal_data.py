"""Erasure of personal data (crypto-shredding): one conversation, or every conversation of a verified visitor."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.retention import RetentionSweep
from infrastructure.settings import Settings
from projections.setup import rebuild_outdated
from projections.verify import verify_erasures
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import conversation_call, conversations_of, event_data, live_widget, started, store_of, sync
from tests.api.test_visitor_identity import begin, identity_widget, visitor_list
from tests.conftest import ALL_WIRINGS
from tests.visitors import SiteKey

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)


def erase_path(widget_id: str, conversation_id: str) -> str:
    return f"/v1/widgets/{widget_id}/conversations/{conversation_id}/personal-data"


def talked(client: TestClient[Litestar], widget_id: str, name: str) -> dict[str, Any]:
    """A conversation with a name, a submitted form and a feedback comment."""
    grant = started(client, widget_id, name=name)
    token, cid = grant["resume_token"], grant["conversation_id"]
    assert conversation_call(client, widget_id, cid, "forms/pre",
                             {"resume_token": token, "values": {"email": f"{name.lower()}@mail.example"}}).status_code == 202
    assert conversation_call(client, widget_id, cid, "feedback",
                             {"resume_token": token, "rating": 4, "comment": f"{name} liked it"}).status_code == 202
    return grant


def audit_of(admin: Admin, conversation_id: str) -> list[dict[str, Any]]:
    response = admin.call("GET", "/v1/audit/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [e for e in response.json()["items"] if e["aggregate_id"] == conversation_id]


def test_erasing_a_conversation_empties_its_personal_values_and_keeps_the_rest(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    gone, kept = talked(client, widget["id"], "Quentin"), talked(client, widget["id"], "Rosalind")
    before = conversations_of(org_a, app, widget["id"])
    assert before[gone["conversation_id"]]["visitor"] == {"name": "Quentin", "verified": False}
    assert before[gone["conversation_id"]]["forms"][0]["values"] == {"email": "quentin@mail.example"}
    assert before[gone["conversation_id"]]["feedback"]["comment"] == "Quentin liked it"
    assert before[gone["conversation_id"]]["erased_at"] is None

    response = org_a.call("DELETE", erase_path(widget["id"], gone["conversation_id"]))
    assert response.status_code == 204, response.text
    assert int(response.headers["X-Event-Position"]) > 0

    after = conversations_of(org_a, app, widget["id"])
    row = after[gone["conversation_id"]]
    assert row["visitor"] == {} and row["forms"][0]["values"] == {} and row["feedback"]["comment"] is None
    assert row["erased_at"] is not None
    assert row["feedback"]["rating"] == 4 and row["forms"][0]["form_id"] == "pre" and row["rooms"] == 1
    assert after[kept["conversation_id"]] == before[kept["conversation_id"]]

    feed = audit_of(org_a, gone["conversation_id"])
    assert [e["type"] for e in feed][-1] == "conversation.personal_data_erased"
    assert feed[-1]["data"] == {"reason": "request", "rewritten_events": 0} and feed[-1]["actor"] == org_a.sub
    started_event = next(e for e in feed if e["type"] == "conversation.started")
    assert started_event["data"]["visitor"] is None
    assert next(e for e in feed if e["type"] == "conversation.form_submitted")["data"]["values"] is None
    assert next(e for e in feed if e["type"] == "conversation.feedback_given")["data"]["comment"] is None
    kept_feed = audit_of(org_a, kept["conversation_id"])
    assert next(e for e in kept_feed if e["type"] == "conversation.started")["data"]["visitor"] == {"name": "Rosalind"}

    replayed = store_of(app).repository.get(uuid.UUID(gone["conversation_id"]))
    assert replayed.visitor == {} and replayed.forms[0]["values"] == {} and replayed.feedback["comment"] is None


def test_erasing_again_answers_204_and_records_nothing_more(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = talked(client, widget["id"], "Ulysses")
    for _ in range(3):
        assert org_a.call("DELETE", erase_path(widget["id"], grant["conversation_id"])).status_code == 204
    names = [name for name, _ in event_data(app, grant["conversation_id"])]
    assert names.count("PersonalDataErased") == 1


def test_an_erased_conversation_takes_no_new_personal_value(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"], name="Valentina")
    assert org_a.call("DELETE", erase_path(widget["id"], grant["conversation_id"])).status_code == 204
    late = conversation_call(client, widget["id"], grant["conversation_id"], "forms/pre",
                             {"resume_token": grant["resume_token"], "values": {"email": "late@mail.example"}})
    assert_problem(late, 410, "conversation_erased")
    row = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]
    assert row["forms"] == [] and row["ended_by"] == "erasure"


def test_another_organizations_conversation_or_widget_is_404_and_left_intact(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    mine, theirs = live_widget(org_a, app), live_widget(org_b, app)
    grant = talked(client, theirs["id"], "Wilhelmina")
    assert_problem(org_a.call("DELETE", erase_path(theirs["id"], grant["conversation_id"])), 404, "not_found")
    assert_problem(org_a.call("DELETE", erase_path(mine["id"], grant["conversation_id"])), 404, "not_found")
    assert_problem(org_b.call("DELETE", erase_path(theirs["id"], str(uuid.uuid4()))), 404, "not_found")
    other_widget = live_widget(org_b, app)
    assert_problem(org_b.call("DELETE", erase_path(other_widget["id"], grant["conversation_id"])), 404, "not_found")
    row = conversations_of(org_b, app, theirs["id"])[grant["conversation_id"]]
    assert row["visitor"] == {"name": "Wilhelmina", "verified": False} and row["erased_at"] is None


def test_erasure_needs_the_write_scope(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"], name="Xavier")
    response = org_a.call("DELETE", erase_path(widget["id"], grant["conversation_id"]), headers=org_a.with_scopes("widgets:read"))
    assert_problem(response, 403, "insufficient_scope")
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["erased_at"] is None


def test_erasing_a_verified_visitor_erases_their_conversations_across_the_organization_only(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("ES256", "k")
    one, two = identity_widget(org_a, app, "optional", key), identity_widget(org_a, app, "optional", key)
    theirs = identity_widget(org_b, app, "optional", key)
    ada = [begin(client, w["id"], visitor_token=key.token(w["id"], sub="ada", name="Ada Byron"))["conversation_id"]
           for w in (one, two)]
    bob_token = key.token(one["id"], sub="bob", name="Bob", context={"plan": "pro"})
    bob_grant = begin(client, one["id"], visitor_token=bob_token, context={"page": "/bob"})
    bob = bob_grant["conversation_id"]
    anonymous = begin(client, one["id"], visitor={"name": "Anonymous Annie"})["conversation_id"]
    ada_elsewhere = begin(client, theirs["id"], visitor_token=key.token(theirs["id"], sub="ada", name="Ada B"))["conversation_id"]
    sync(app)
    response = org_a.call("DELETE", "/v1/visitors/ada/personal-data")
    assert response.status_code == 204, response.text
    rows = conversations_of(org_a, app, one["id"]) | conversations_of(org_a, app, two["id"])
    for cid in ada:
        assert rows[cid]["visitor"] == {} and rows[cid]["erased_at"] is not None
        assert [e for e in audit_of(org_a, cid) if e["type"] == "conversation.personal_data_erased"][0]["data"]["reason"] == \
            "visitor_request"
    assert rows[bob]["visitor"]["external_id"] == "bob" and rows[bob]["erased_at"] is None
    assert rows[anonymous]["visitor"] == {"name": "Anonymous Annie", "verified": False} and rows[anonymous]["erased_at"] is None
    started_bob = next(e for e in audit_of(org_a, bob) if e["type"] == "conversation.started")["data"]
    assert started_bob["visitor"]["name"] == "Bob" and started_bob["context"] == {"verified": {"plan": "pro"}, "page": {"page": "/bob"}}
    # Bob still finds and continues his conversation by his token; Ada finds none of hers.
    assert [i["conversation_id"] for i in visitor_list(client, one["id"], bob_token).json()["items"]] == [bob]
    assert visitor_list(client, one["id"], key.token(one["id"], sub="ada")).json()["items"] == []
    assert conversation_call(client, one["id"], bob, "resume", {"visitor_token": bob_token}).status_code == 200
    assert conversations_of(org_b, app, theirs["id"])[ada_elsewhere]["visitor"]["external_id"] == "ada"
    services = app.state.services
    from api.admin_lists import verified_visitor_conversations
    assert verified_visitor_conversations(services, "org_a", "ada") == []  # the lookup rows are gone
    assert org_a.call("DELETE", "/v1/visitors/ada/personal-data").status_code == 204
    assert org_a.call("DELETE", "/v1/visitors/nobody-at-all/personal-data").status_code == 204


def test_a_visitor_id_longer_than_a_token_subject_is_400_naming_it(org_a: Admin) -> None:
    response = org_a.call("DELETE", f"/v1/visitors/{'x' * 129}/personal-data")
    assert_problem(response, 400, "invalid_request")
    assert response.json()["errors"][0]["field"] == "external_id"


def test_a_crash_between_destroying_the_key_and_recording_the_erasure_is_reported_and_a_retry_completes(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = talked(client, widget["id"], "Yolanda")
    cid = uuid.UUID(grant["conversation_id"])
    store = store_of(app)
    sync(app)
    assert verify_erasures(store, app.state.services.db) == []
    store.personal_data.destroy([cid])  # the process dies here, before conversation.personal_data_erased is appended
    found = verify_erasures(store, app.state.services.db)
    assert [(d.item, d.field) for d in found] == [(f"conversation {cid}", "erasure")]
    row = conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]
    assert row["visitor"] == {"verified": False} and row["forms"][0]["values"] == {}  # unreadable already

    assert org_a.call("DELETE", erase_path(widget["id"], grant["conversation_id"])).status_code == 204
    sync(app)
    assert verify_erasures(store, app.state.services.db) == []
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["erased_at"] is not None


def test_read_models_written_before_sealing_are_rebuilt_once_at_startup_without_the_plaintext(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = talked(client, widget["id"], "Zachariah")
    sync(app)
    services = app.state.services
    db = services.db
    (row_json,) = db.query("SELECT row_json FROM conversation_list WHERE id = ?", [grant["conversation_id"]])[0]
    legacy = json.loads(row_json) | {"visitor": {"name": "Zachariah Plaintext"}}  # as rows were written before sealing
    with db.transaction() as tx:
        tx.execute("UPDATE conversation_list SET row_json = ? WHERE id = ?", [json.dumps(legacy), grant["conversation_id"]])
        tx.execute("UPDATE projection_formats SET format = 1 WHERE name IN ('conversation_list', 'audit_feed')")

    assert rebuild_outdated(services.store, db) == ["conversation_list", "audit_feed"]
    rows = b"\n".join(str(r).encode() for t in ("conversation_list", "audit_feed") for r in db.query(f"SELECT * FROM {t}"))
    assert grant["conversation_id"].encode() in rows and b"Zachariah" not in rows
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["visitor"]["name"] == "Zachariah"
    assert rebuild_outdated(services.store, db) == []


# ---- retention ------------------------------------------------------------------------------------------------------


def retain(admin: Admin, widget_id: str, body: Any) -> Any:
    return admin.call("PUT", f"/v1/widgets/{widget_id}/retention", json=body)


def sweep(app: Litestar, now: datetime) -> int:
    sync(app)
    services = app.state.services
    erased = RetentionSweep(services.store, services.db).run_once(now)
    sync(app)
    return erased


def test_setting_retention_answers_the_widget_with_retention_days_and_records_the_change(org_a: Admin, app: Litestar) -> None:
    widget = live_widget(org_a, app)
    assert widget["retention_days"] is None
    response = retain(org_a, widget["id"], {"days": 30})
    assert response.status_code == 200, response.text
    assert response.json()["retention_days"] == 30 and response.headers["ETag"] == f'"{response.json()["version"]}"'
    assert org_a.call("GET", f"/v1/widgets/{widget['id']}").json()["retention_days"] == 30
    sync(app)
    listed = {w["id"]: w for w in org_a.call("GET", "/v1/widgets").json()["items"]}
    assert listed[widget["id"]]["retention_days"] == 30
    history = org_a.call("GET", f"/v1/widgets/{widget['id']}/history").json()["items"]
    assert history[-1]["type"] == "widget.retention_changed" and history[-1]["data"] == {"days": 30}
    same = retain(org_a, widget["id"], {"days": 30})
    assert same.status_code == 200 and same.json()["version"] == response.json()["version"]  # nothing changed, nothing recorded
    assert retain(org_a, widget["id"], {"days": None}).json()["retention_days"] is None


@pytest.mark.parametrize("body", [{"days": -1}, {"days": 36_501}, {"days": "thirty"}, {"days": 1.5}, {}, {"days": 3, "extra": 1}])
def test_a_retention_that_is_not_0_to_36500_days_or_null_is_400_naming_the_field(org_a: Admin, app: Litestar, body: Any) -> None:
    widget = live_widget(org_a, app)
    response = retain(org_a, widget["id"], body)
    assert_problem(response, 400, "invalid_request")
    assert response.json()["errors"][0]["field"] in ("days", "extra")
    assert org_a.call("GET", f"/v1/widgets/{widget['id']}").json()["version"] == widget["version"]


def test_another_organizations_widget_retention_is_404(org_a: Admin, org_b: Admin, app: Litestar) -> None:
    theirs = live_widget(org_b, app)
    assert_problem(retain(org_a, theirs["id"], {"days": 1}), 404, "not_found")
    assert org_b.call("GET", f"/v1/widgets/{theirs['id']}").json()["retention_days"] is None


def test_conversations_past_their_widgets_retention_are_erased_by_the_sweep(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget, kept_forever = live_widget(org_a, app), live_widget(org_a, app)
    assert retain(org_a, widget["id"], {"days": 30}).status_code == 200
    old, other = talked(client, widget["id"], "Agatha"), talked(client, kept_forever["id"], "Bertram")
    now = datetime.now(UTC)
    assert sweep(app, now + timedelta(days=29)) == 0
    assert conversations_of(org_a, app, widget["id"])[old["conversation_id"]]["erased_at"] is None
    assert sweep(app, now + timedelta(days=31)) == 1
    row = conversations_of(org_a, app, widget["id"])[old["conversation_id"]]
    assert row["erased_at"] is not None and row["visitor"] == {}
    erasure = [e for e in audit_of(org_a, old["conversation_id"]) if e["type"] == "conversation.personal_data_erased"]
    assert erasure[0]["data"]["reason"] == "retention" and erasure[0]["actor"] == "retention"
    assert sweep(app, now + timedelta(days=365)) == 0  # erased once; the widget without retention keeps everything
    assert conversations_of(org_a, app, kept_forever["id"])[other["conversation_id"]]["visitor"]["name"] == "Bertram"


def test_zero_days_erases_a_conversation_as_soon_as_it_ends(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    assert retain(org_a, widget["id"], {"days": 0}).status_code == 200
    ended, going_on = talked(client, widget["id"], "Cornelius"), talked(client, widget["id"], "Dorothea")
    assert conversation_call(client, widget["id"], ended["conversation_id"], "end",
                             {"resume_token": ended["resume_token"]}).status_code == 202
    assert sweep(app, datetime.now(UTC)) == 1
    rows = conversations_of(org_a, app, widget["id"])
    assert rows[ended["conversation_id"]]["erased_at"] is not None and rows[going_on["conversation_id"]]["erased_at"] is None


def test_widgets_retention_erases_on_demand(org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings) -> None:
    from click.testing import CliRunner

    from api.cli import main
    from infrastructure.settings import env_name

    widget = live_widget(org_a, app)
    assert retain(org_a, widget["id"], {"days": 0}).status_code == 200
    grant = talked(client, widget["id"], "Eustace")
    assert conversation_call(client, widget["id"], grant["conversation_id"], "end",
                             {"resume_token": grant["resume_token"]}).status_code == 202
    sync(app)
    env = {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}  # this wiring
    result = CliRunner().invoke(main, ["retention"], env=env)
    assert result.exit_code == 0, result.output
    assert "1 conversation" in result.output
    assert conversations_of(org_a, app, widget["id"])[grant["conversation_id"]]["erased_at"] is not None

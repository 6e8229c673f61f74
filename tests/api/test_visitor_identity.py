"""Verified visitors over HTTP: identity keys, modes, context, dispatch metadata, a visitor's list and resume."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.admin_lists import verified_visitor_conversations
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import (
    ALLOWED_HEADERS,
    REFUSED_HEADERS,
    conversation_call,
    conversations_of,
    dispatch_metadata,
    live_widget,
    position,
    start,
    store_of,
    sync,
    verify_grant,
    widget_path,
)
from tests.visitors import SiteKey

CONTEXT = [{"key": "plan", "type": "string", "max_length": 10}, {"key": "seats", "type": "number"},
           {"key": "trial", "type": "boolean"}, {"key": "page", "type": "string"}]


def identity_widget(admin: Admin, app: Litestar, mode: str = "optional", *keys: SiteKey) -> dict[str, Any]:
    widget = live_widget(admin, app, config={"v1": {"identity": {"mode": mode}, "context": CONTEXT}})
    for key in keys:
        response = admin.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": key.public_jwk})
        assert response.status_code == 201, response.text
    sync(app)
    return widget


def begin(client: TestClient[Litestar], widget_id: str, **body: Any) -> dict[str, Any]:
    response = start(client, widget_id, body=body)
    assert response.status_code == 201, response.text
    return response.json()


def metadata_of(settings: Settings, grant: dict[str, Any]) -> dict[str, Any]:
    return dispatch_metadata(verify_grant(settings, grant["livekit"]["token"]))


# --- identity keys ------------------------------------------------------------------------------


def test_adding_keys_answers_201_with_the_widget_listing_kid_alg_and_added_at(org_a: Admin) -> None:
    widget = org_a.widget()
    es, ed = SiteKey.generate("ES256", "es-1"), SiteKey.generate("EdDSA", "ed-1")
    first = org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": es.public_jwk})
    assert first.status_code == 201, first.text
    assert first.headers["etag"] == '"2"'
    second = org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": ed.public_jwk}, headers={"If-Match": '"2"'})
    keys = second.json()["identity_keys"]
    assert [(k["kid"], k["alg"]) for k in keys] == [("es-1", "ES256"), ("ed-1", "EdDSA")]
    assert all(set(k) == {"kid", "alg", "added_at"} for k in keys)
    assert org_a.get_widget(widget["id"])["identity_keys"] == keys
    history = org_a.call("GET", f"/v1/widgets/{widget['id']}/history").json()["items"]
    assert [(e["type"], e["actor"]) for e in history[-2:]] == [("widget.identity_key_added", "alice")] * 2


def test_the_widget_list_shows_the_keys_too(org_a: Admin, app: Litestar) -> None:
    widget = identity_widget(org_a, app, "optional", SiteKey.generate("EdDSA", "k"))
    listed = {w["id"]: w for w in org_a.call("GET", "/v1/widgets").json()["items"]}
    assert [k["kid"] for k in listed[widget["id"]]["identity_keys"]] == ["k"]


def test_removing_a_key_answers_200_and_an_unknown_kid_404(org_a: Admin) -> None:
    widget = org_a.widget()
    org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": SiteKey.generate("ES256", "k").public_jwk})
    removed = org_a.call("DELETE", f"/v1/widgets/{widget['id']}/identity-keys/k")
    assert removed.status_code == 200, removed.text
    assert removed.json()["identity_keys"] == []
    assert_problem(org_a.call("DELETE", f"/v1/widgets/{widget['id']}/identity-keys/k"), 404, "not_found")


@pytest.mark.parametrize("jwk", [
    SiteKey.generate("ES256", "k").private_jwk,
    SiteKey.generate("EdDSA", "k").private_jwk,
    {"kty": "RSA", "n": "sXch", "e": "AQAB", "kid": "k"},
    {"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "kid": "k"},
    {k: v for k, v in SiteKey.generate("ES256").public_jwk.items() if k != "kid"},
    "not an object",
])
def test_a_key_that_is_not_a_public_es256_or_eddsa_jwk_with_a_kid_is_400(org_a: Admin, app: Litestar, jwk: Any) -> None:
    widget = org_a.widget()
    before = position(app)
    body = assert_problem(org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": jwk}), 400, "invalid_request")
    assert all(e["field"].startswith("jwk") for e in body["errors"])
    assert position(app) == before
    assert '"d"' not in json.dumps(body) and "private" not in json.dumps(body).replace("private members", "")


def test_a_duplicate_kid_and_a_sixth_key_are_400(org_a: Admin) -> None:
    widget = org_a.widget()
    for i in range(5):
        response = org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": SiteKey.generate("EdDSA", f"k{i}").public_jwk})
        assert response.status_code == 201
    duplicate = org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": SiteKey.generate("ES256", "k1").public_jwk})
    assert assert_problem(duplicate, 400, "invalid_request")["errors"][0]["field"] == "jwk.kid"
    sixth = org_a.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": SiteKey.generate("ES256", "k9").public_jwk})
    assert assert_problem(sixth, 400, "invalid_request")["errors"][0]["field"] == "jwk"


def test_another_organizations_widget_keys_are_404_and_its_keys_verify_nothing_here(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    mine, theirs = SiteKey.generate("ES256", "shared-kid"), SiteKey.generate("ES256", "shared-kid")
    widget = identity_widget(org_a, app, "required", mine)
    path = f"/v1/widgets/{widget['id']}/identity-keys"
    assert_problem(org_b.call("POST", path, json={"jwk": theirs.public_jwk}), 404, "not_found")
    assert_problem(org_b.call("DELETE", f"{path}/shared-kid"), 404, "not_found")
    other = identity_widget(org_b, app, "required", theirs)
    # org_b's key, under the same kid, signs for org_b's widget only.
    assert_problem(start(client, widget["id"], body={"visitor_token": theirs.token(widget["id"])}), 401, "visitor_token_invalid")
    assert start(client, other["id"], body={"visitor_token": theirs.token(other["id"])}).status_code == 201
    assert start(client, widget["id"], body={"visitor_token": mine.token(widget["id"])}).status_code == 201


# --- modes ------------------------------------------------------------------------------------


def test_off_ignores_a_token_even_a_bad_one(org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings) -> None:
    widget = identity_widget(org_a, app, "off", SiteKey.generate("ES256", "k"))
    grant = begin(client, widget["id"], visitor_token="garbage")
    assert metadata_of(settings, grant)["visitor"] == {"verified": False}


def test_optional_verifies_a_token_when_one_is_sent(org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings) -> None:
    key = SiteKey.generate("EdDSA", "k")
    widget = identity_widget(org_a, app, "optional", key)
    assert metadata_of(settings, begin(client, widget["id"]))["visitor"] == {"verified": False}
    grant = begin(client, widget["id"], visitor_token=key.token(widget["id"], sub="user_7", name="Ada"))
    assert metadata_of(settings, grant)["visitor"] == {"external_id": "user_7", "verified": True, "name": "Ada"}
    before = position(app)
    assert_problem(start(client, widget["id"], body={"visitor_token": "garbage"}), 401, "visitor_token_invalid")
    assert position(app) == before


def test_required_refuses_a_conversation_without_a_token(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "required", key)
    before = position(app)
    response = start(client, widget["id"], body={"visitor": {"name": "Ann"}})
    assert_problem(response, 401, "visitor_token_required")
    assert response.headers["access-control-allow-origin"] == ALLOWED_HEADERS["Origin"]
    assert position(app) == before
    assert start(client, widget["id"], body={"visitor_token": key.token(widget["id"])}).status_code == 201


@pytest.mark.parametrize("forge", ["expired", "audience", "removed"])
def test_every_token_failure_is_the_same_401(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], forge: str
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "required", key)
    token = {"expired": key.token(widget["id"], lifetime=-3600), "audience": key.token(org_a.widget()["id"]),
             "removed": key.token(widget["id"])}[forge]
    if forge == "removed":
        org_a.call("DELETE", f"/v1/widgets/{widget['id']}/identity-keys/k")
        sync(app)
    body = assert_problem(start(client, widget["id"], body={"visitor_token": token}), 401, "visitor_token_invalid")
    assert body["detail"] == "The visitor token is not valid."


# --- context and metadata ---------------------------------------------------------------------


def test_dispatch_metadata_carries_the_verified_visitor_and_both_contexts(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    token = key.token(widget["id"], sub="user_42", name="Ada Lovelace", context={"plan": "pro", "seats": 3})
    grant = begin(client, widget["id"], visitor={"name": "Someone"}, visitor_token=token,
                  context={"plan": "free", "page": "/pricing", "trial": True})
    claims = verify_grant(settings, grant["livekit"]["token"])
    metadata = dispatch_metadata(claims)
    assert metadata["visitor"] == {"external_id": "user_42", "verified": True, "name": "Ada Lovelace"}
    assert metadata["context"] == {"verified": {"plan": "pro", "seats": 3}, "page": {"page": "/pricing", "trial": True}}
    assert metadata["widget_id"] == widget["id"] and metadata["conversation_id"] == grant["conversation_id"]
    assert claims.name == "Ada Lovelace"


def test_an_anonymous_visitor_is_named_from_the_page_and_its_context_is_unverified(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = identity_widget(org_a, app, "optional")
    grant = begin(client, widget["id"], visitor={"name": "Ann"}, context={"seats": 2.5})
    claims = verify_grant(settings, grant["livekit"]["token"])
    assert dispatch_metadata(claims)["visitor"] == {"verified": False}
    assert dispatch_metadata(claims)["context"] == {"verified": {}, "page": {"seats": 2.5}}
    assert claims.name == "Ann"


@pytest.mark.parametrize(("context", "field"), [
    ({"unknown": "x"}, "context.unknown"),
    ({"plan": "x" * 11}, "context.plan"),
    ({"plan": 3}, "context.plan"),
    ({"seats": "3"}, "context.seats"),
    ({"seats": True}, "context.seats"),
    ({"trial": "yes"}, "context.trial"),
])
def test_context_that_the_widget_does_not_declare_as_sent_is_400_naming_the_key(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], context: dict[str, Any], field: str
) -> None:
    widget = identity_widget(org_a, app, "off")
    before = position(app)
    body = assert_problem(start(client, widget["id"], body={"context": context}), 400, "invalid_request")
    assert [e["field"] for e in body["errors"]] == [field]
    assert position(app) == before
    assert json.dumps(context) not in json.dumps(body)


def test_the_tokens_context_is_checked_too(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    key = SiteKey.generate("EdDSA", "k")
    widget = identity_widget(org_a, app, "optional", key)
    token = key.token(widget["id"], context={"plan": "enterprise-plus", "secret_key": 1})
    body = assert_problem(start(client, widget["id"], body={"visitor_token": token, "context": {"nope": 1}}), 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == {"context.nope", "visitor_token.context.plan", "visitor_token.context.secret_key"}


def test_config_validation_lists_every_invalid_identity_and_context_field(org_a: Admin) -> None:
    widget = org_a.widget()
    bad = {"v1": {"identity": {"mode": "sometimes"}, "context": [
        {"key": "Plan", "type": "string"}, {"key": "n", "type": "number", "max_length": 3}, {"key": "n", "type": "date"},
    ] + [{"key": f"k{i}", "type": "string"} for i in range(18)]}}
    body = assert_problem(org_a.call("PUT", f"/v1/widgets/{widget['id']}/config", json=bad), 400, "invalid_request")
    assert {e["field"] for e in body["errors"]} == {
        "config.v1.identity.mode", "config.v1.context", "config.v1.context[0].key", "config.v1.context[1].max_length",
        "config.v1.context[2].key", "config.v1.context[2].type"}


# --- a verified visitor's conversations -------------------------------------------------------


def visitor_list(client: TestClient[Litestar], widget_id: str, token: str | None, origin: dict[str, str] = ALLOWED_HEADERS,
                 **params: Any) -> Any:
    headers = {**origin, **({"Authorization": f"Bearer {token}"} if token is not None else {})}
    return client.get(widget_path(widget_id, "visitor", "conversations"), headers=headers, params=params)


def test_a_verified_visitor_lists_their_own_conversations_newest_first(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    ada, bob = key.token(widget["id"], sub="ada"), key.token(widget["id"], sub="bob")
    first = begin(client, widget["id"], visitor_token=ada)
    begin(client, widget["id"], visitor_token=bob)
    begin(client, widget["id"])
    second = begin(client, widget["id"], visitor_token=key.token(widget["id"], sub="ada", lifetime=600))
    conversation_call(client, widget["id"], first["conversation_id"], "end", {"resume_token": first["resume_token"]})
    sync(app)
    response = visitor_list(client, widget["id"], ada)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED_HEADERS["Origin"]
    items = response.json()["items"]
    assert [(i["conversation_id"], i["ended"]) for i in items] == [(second["conversation_id"], False), (first["conversation_id"], True)]
    assert set(items[0]) == {"conversation_id", "started_at", "ended"} and response.json()["next_cursor"] is None
    assert len(visitor_list(client, widget["id"], bob).json()["items"]) == 1


def test_the_visitor_list_is_paged_by_cursor_newest_first_without_gaps_or_repeats(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("EdDSA", "k")
    widget = identity_widget(org_a, app, "optional", key)
    ada = key.token(widget["id"], sub="ada")
    mine = [begin(client, widget["id"], visitor_token=ada)["conversation_id"] for _ in range(5)]
    begin(client, widget["id"], visitor_token=key.token(widget["id"], sub="bob"))
    sync(app)
    whole = visitor_list(client, widget["id"], ada).json()
    assert [i["conversation_id"] for i in whole["items"]] == mine[::-1] and whole["next_cursor"] is None
    pages, cursor = [], None
    while True:
        response = visitor_list(client, widget["id"], ada, limit=2, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        pages.append([i["conversation_id"] for i in response.json()["items"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == [mine[4:2:-1], mine[2:0:-1], mine[:1]]
    # A cursor of one visitor's list pages nothing of another's.
    first = visitor_list(client, widget["id"], ada, limit=1).json()["next_cursor"]
    bob = visitor_list(client, widget["id"], key.token(widget["id"], sub="bob"), cursor=first).json()
    assert all(i["conversation_id"] not in mine for i in bob["items"])
    for params, field in [({"cursor": "not a cursor"}, "cursor"), ({"cursor": "Zm9v"}, "cursor"), ({"limit": 0}, "limit"),
                          ({"limit": 101}, "limit")]:
        body = assert_problem(visitor_list(client, widget["id"], ada, **params), 400, "invalid_request")
        assert [e["field"] for e in body["errors"]] == [field], body


def test_the_visitor_list_needs_a_valid_token_and_an_allowed_origin(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    key = SiteKey.generate("EdDSA", "k")
    widget = identity_widget(org_a, app, "optional", key)
    assert_problem(visitor_list(client, widget["id"], None), 401, "visitor_token_required")
    assert_problem(visitor_list(client, widget["id"], "garbage"), 401, "visitor_token_invalid")
    assert_problem(visitor_list(client, widget["id"], key.token(widget["id"]), REFUSED_HEADERS), 403, "origin_not_allowed")
    off = identity_widget(org_a, app, "off", key)
    assert_problem(visitor_list(client, off["id"], key.token(off["id"])), 401, "visitor_token_required")
    preflight = client.options(widget_path(widget["id"], "visitor", "conversations"),
                               headers={**ALLOWED_HEADERS, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["access-control-allow-headers"]


def test_another_widgets_conversations_are_not_listed(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    key = SiteKey.generate("ES256", "k")
    one, two = identity_widget(org_a, app, "optional", key), identity_widget(org_a, app, "optional", key)
    begin(client, one["id"], visitor_token=key.token(one["id"], sub="ada"))
    sync(app)
    assert visitor_list(client, two["id"], key.token(two["id"], sub="ada")).json()["items"] == []


def test_a_verified_visitor_resumes_their_conversation_without_its_resume_token(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    grant = begin(client, widget["id"], visitor_token=key.token(widget["id"], sub="ada"))
    resumed = conversation_call(client, widget["id"], grant["conversation_id"], "resume",
                                {"visitor_token": key.token(widget["id"], sub="ada", name="Ada"), "context": {"page": "/orders"}})
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["livekit"]["room"] != grant["livekit"]["room"]
    assert body["resume_token"] and body["resume_token"] != grant["resume_token"]
    metadata = metadata_of(settings, body)
    assert metadata["visitor"] == {"external_id": "ada", "verified": True, "name": "Ada"}
    assert metadata["context"] == {"verified": {}, "page": {"page": "/orders"}}
    # The resume token handed to this device works for the calls that need one; the first one is retired (one room,
    # one token at a time: the other device resumes with its visitor token).
    retired = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert retired.status_code == 404
    ended = conversation_call(client, widget["id"], grant["conversation_id"], "end", {"resume_token": body["resume_token"]})
    assert ended.status_code == 202


def test_the_context_given_at_a_resume_is_recorded_sealed_and_erased_with_the_rest(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    key = SiteKey.generate("EdDSA", "k")
    widget = identity_widget(org_a, app, "optional", key)
    grant = begin(client, widget["id"], visitor_token=key.token(widget["id"], sub="ada"), context={"page": "/start"})
    cid = grant["conversation_id"]
    token = key.token(widget["id"], sub="ada", context={"plan": "gold-9q"})
    resumed = conversation_call(client, widget["id"], cid, "resume",
                                {"visitor_token": token, "context": {"page": "/checkout-7f", "plan": "free"}})
    assert resumed.status_code == 200, resumed.text
    given = {"verified": {"plan": "gold-9q"}, "page": {"page": "/checkout-7f"}}
    assert metadata_of(settings, resumed.json())["context"] == given
    plain = conversation_call(client, widget["id"], cid, "resume", {"resume_token": resumed.json()["resume_token"]})
    assert metadata_of(settings, plain.json())["context"] == {"verified": {}, "page": {}}
    # Stored sealed under the conversation's key: neither value is in the log's bytes.
    stored = [e for e in store_of(app).recorder.select_events(uuid.UUID(cid)) if e.topic == "conversation.resumed"]
    assert [json.loads(e.state)["context"] is None for e in stored] == [False, True]
    assert json.loads(stored[0].state)["context"].startswith("pd1:")
    assert all(b"gold-9q" not in e.state and b"checkout-7f" not in e.state for e in stored)
    sync(app)
    feed = [e for e in org_a.call("GET", "/v1/audit/events", params={"limit": 1000}).json()["items"] if e["aggregate_id"] == cid]
    assert [e["data"]["context"] for e in feed if e["type"] == "conversation.resumed"] == [given, None]
    assert org_a.call("DELETE", f"/v1/widgets/{widget['id']}/conversations/{cid}/personal-data").status_code == 204
    sync(app)
    feed = [e for e in org_a.call("GET", "/v1/audit/events", params={"limit": 1000}).json()["items"] if e["aggregate_id"] == cid]
    assert [e["data"]["context"] for e in feed if e["type"] in ("conversation.started", "conversation.resumed")] == [None] * 3


def test_another_visitor_cannot_resume_it_even_with_its_resume_token(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("EdDSA", "k")
    widget = identity_widget(org_a, app, "optional", key)
    grant = begin(client, widget["id"], visitor_token=key.token(widget["id"], sub="ada"))
    mallory = key.token(widget["id"], sub="mallory")
    before = position(app)
    path = (client, widget["id"], grant["conversation_id"], "resume")
    assert_problem(conversation_call(*path, {"visitor_token": mallory}), 404, "not_found")
    assert_problem(conversation_call(*path, {"visitor_token": mallory, "resume_token": grant["resume_token"]}), 404, "not_found")
    assert_problem(conversation_call(*path, {}), 404, "not_found")
    assert_problem(conversation_call(*path, {"visitor_token": "garbage"}), 401, "visitor_token_invalid")
    anonymous = begin(client, widget["id"])
    assert_problem(conversation_call(client, widget["id"], anonymous["conversation_id"], "resume", {"visitor_token": mallory}),
                   404, "not_found")
    assert position(app) == before + 1  # only the anonymous start was recorded


def test_admin_answers_show_the_verified_visitor_and_whether_they_were_verified(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    verified = begin(client, widget["id"], visitor={"locale": "en-GB"},
                     visitor_token=key.token(widget["id"], sub="ada", name="Ada", email="ada@example.com"))
    anonymous = begin(client, widget["id"], visitor={"name": "Ann"})
    rows = conversations_of(org_a, app, widget["id"])
    assert rows[verified["conversation_id"]]["visitor"] == {
        "external_id": "ada", "verified": True, "name": "Ada", "email": "ada@example.com", "locale": "en-GB"}
    assert rows[anonymous["conversation_id"]]["visitor"] == {"name": "Ann", "verified": False}


def test_a_verified_visitors_conversations_are_found_across_the_organization_and_only_there(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("EdDSA", "k")
    one, two = identity_widget(org_a, app, "optional", key), identity_widget(org_a, app, "optional", key)
    theirs = identity_widget(org_b, app, "optional", key)
    ada = [begin(client, w["id"], visitor_token=key.token(w["id"], sub="ada"))["conversation_id"] for w in (one, two)]
    begin(client, one["id"], visitor_token=key.token(one["id"], sub="bob"))
    begin(client, one["id"], visitor={"name": "ada"})
    begin(client, theirs["id"], visitor_token=key.token(theirs["id"], sub="ada"))
    sync(app)
    services = app.state.services
    assert [str(c) for c in verified_visitor_conversations(services, "org_a", "ada")] == ada[::-1]
    assert len(verified_visitor_conversations(services, "org_b", "ada")) == 1
    assert verified_visitor_conversations(services, "org_a", "nobody") == []


def test_no_token_external_id_or_claim_is_stored_in_plaintext(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    token = key.token(widget["id"], sub="ext-id-8c1f", name="Zebulon Quux", email="zq@example.org", context={"plan": "pro7x"})
    grant = begin(client, widget["id"], visitor_token=token)
    conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"visitor_token": token})
    sync(app)
    stored = store_of(app).recorder.select_notifications(start=1, limit=10_000)
    blob = b"".join(n.state for n in stored)
    for secret in (token, "ext-id-8c1f", "Zebulon Quux", "zq@example.org", "pro7x", token.split(".")[2]):
        assert secret.encode() not in blob, secret
    rows = app.state.services.db.query("SELECT row_json FROM conversation_list")
    assert not any("ext-id-8c1f" in r[0] or "Zebulon" in r[0] for r in rows)

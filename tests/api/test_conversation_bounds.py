"""Resumes, submissions and erasure over HTTP (issue 29), on every wiring: each resume rotates the resume token
(a retired one is as unknown as a wrong one), resumes are rate-limited per address and conversation, a form
counts a bounded number of times and feedback once, and an erased conversation answers 410 to its holder."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import ALLOWED, conversation_call, conversations_of, live_widget, position, started, sync
from tests.api.test_visitor_identity import begin, identity_widget
from tests.conftest import ALL_WIRINGS
from tests.visitors import SiteKey

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

RESUMES, SUBMISSIONS, FORMS = 4, 8, 3


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(dataclasses.replace(settings, rate_resumes=f"{RESUMES}/minute", rate_submissions=f"{SUBMISSIONS}/minute",
                                          form_submissions=FORMS))


def resume(client: TestClient[Litestar], widget_id: str, cid: str, token: str) -> httpx.Response:
    return conversation_call(client, widget_id, cid, "resume", {"resume_token": token})


def submit(client: TestClient[Litestar], widget_id: str, cid: str, token: str, email: str) -> httpx.Response:
    return conversation_call(client, widget_id, cid, "forms/pre", {"resume_token": token, "values": {"email": email}})


def rate(client: TestClient[Litestar], widget_id: str, cid: str, token: str, rating: int, comment: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"resume_token": token, "rating": rating}
    if comment is not None:
        body["comment"] = comment
    return conversation_call(client, widget_id, cid, "feedback", body)


def stats_totals(admin: Admin, app: Litestar, widget_id: str) -> dict[str, Any]:
    sync(app)
    response = admin.call("GET", f"/v1/widgets/{widget_id}/stats")
    assert response.status_code == 200, response.text
    return response.json()["totals"]


def assert_limited(response: httpx.Response, code: str) -> dict[str, Any]:
    body = assert_problem(response, 429, code)
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["access-control-allow-origin"] == ALLOWED
    return body


# --- resume tokens ----------------------------------------------------------------------------


def test_each_resume_answers_a_new_token_and_the_old_one_is_refused_as_unknown(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    cid, first = grant["conversation_id"], grant["resume_token"]
    answer = resume(client, widget["id"], cid, first)
    assert answer.status_code == 200, answer.text
    second = answer.json()["resume_token"]
    assert second != first and len(second) >= 32
    before = position(app)
    retired = assert_problem(resume(client, widget["id"], cid, first), 404, "not_found")
    unknown = assert_problem(resume(client, widget["id"], str(uuid.uuid4()), first), 404, "not_found")
    assert set(retired) == set(unknown) and retired["title"] == unknown["title"]
    assert retired["detail"].replace(cid, "ID") == unknown["detail"].replace(unknown["detail"].split()[1], "ID")
    for action, body in (("forms/pre", {"resume_token": first, "values": {"email": "a@example.com"}}),
                         ("feedback", {"resume_token": first, "rating": 3}), ("end", {"resume_token": first})):
        assert_problem(conversation_call(client, widget["id"], cid, action, body), 404, "not_found")
    assert position(app) == before, "a retired token wrote something"
    assert submit(client, widget["id"], cid, second, "a@example.com").status_code == 202
    third = resume(client, widget["id"], cid, second)
    assert third.status_code == 200 and third.json()["resume_token"] not in (first, second)
    assert_problem(resume(client, widget["id"], cid, second), 404, "not_found")
    assert conversations_of(org_a, app, widget["id"])[cid]["rooms"] == 3


def test_a_verified_visitor_gets_a_new_resume_token_from_their_visitor_token_too(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    token = key.token(widget["id"], sub="ada")
    grant = begin(client, widget["id"], visitor_token=token)
    cid = grant["conversation_id"]
    elsewhere = conversation_call(client, widget["id"], cid, "resume", {"visitor_token": token})
    assert elsewhere.status_code == 200, elsewhere.text
    new_token = elsewhere.json()["resume_token"]
    assert new_token != grant["resume_token"]
    assert_problem(resume(client, widget["id"], cid, grant["resume_token"]), 404, "not_found")  # one device's at a time
    assert resume(client, widget["id"], cid, new_token).status_code == 200
    again = conversation_call(client, widget["id"], cid, "resume", {"visitor_token": token})
    assert again.status_code == 200 and again.json()["resume_token"] not in (grant["resume_token"], new_token)


def test_resumes_are_limited_per_address_and_conversation_with_retry_after(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant, other = started(client, widget["id"]), started(client, widget["id"])
    cid, token = grant["conversation_id"], grant["resume_token"]
    for _ in range(RESUMES):
        answer = resume(client, widget["id"], cid, token)
        assert answer.status_code == 200, answer.text
        token = answer.json()["resume_token"]
    before = position(app)
    assert_limited(resume(client, widget["id"], cid, token), "rate_limited")
    assert_limited(resume(client, widget["id"], cid, "a-wrong-token-counts-too"), "rate_limited")
    assert position(app) == before, "a refused resume wrote an event"
    assert resume(client, widget["id"], other["conversation_id"], other["resume_token"]).status_code == 200


# --- forms and feedback -----------------------------------------------------------------------


def test_a_form_beyond_its_bound_is_429_naming_it_and_only_the_latest_counts(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    cid, token = grant["conversation_id"], grant["resume_token"]
    for i in range(FORMS):
        assert submit(client, widget["id"], cid, token, f"try{i}@example.com").status_code == 202
    before = position(app)
    body = assert_problem(submit(client, widget["id"], cid, token, "late@example.com"), 429, "submission_limit")
    assert f"At most {FORMS} submissions of form 'pre' per conversation" in body["detail"]
    assert position(app) == before, "a refused submission wrote an event"
    forms = conversations_of(org_a, app, widget["id"])[cid]["forms"]
    assert [(f["form_id"], f["values"]) for f in forms] == [("pre", {"email": f"try{FORMS - 1}@example.com"})]
    assert stats_totals(org_a, app, widget["id"])["forms_submitted"] == 1
    other = started(client, widget["id"])  # another conversation has a bound of its own
    assert submit(client, widget["id"], other["conversation_id"], other["resume_token"], "o@example.com").status_code == 202
    assert stats_totals(org_a, app, widget["id"])["forms_submitted"] == 2


def test_feedback_given_again_replaces_it_in_the_admin_view_and_the_stats(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    cid, token = grant["conversation_id"], grant["resume_token"]
    for rating, comment in ((1, "bad"), (3, "better"), (5, "great")):
        assert rate(client, widget["id"], cid, token, rating, comment).status_code == 202
    feedback = conversations_of(org_a, app, widget["id"])[cid]["feedback"]
    assert (feedback["rating"], feedback["comment"]) == (5, "great")
    totals = stats_totals(org_a, app, widget["id"])["feedback"]
    assert totals["count"] == 1 and totals["average"] == 5
    assert totals["ratings"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1}


def test_submissions_are_limited_per_address_with_retry_after(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grants = [started(client, widget["id"]) for _ in range(3)]
    for n in range(SUBMISSIONS):  # forms and feedback together, over several conversations
        grant = grants[n % len(grants)]
        call = rate if n % 2 else (lambda c, w, i, t, r: submit(c, w, i, t, f"v{r}@example.com"))
        assert call(client, widget["id"], grant["conversation_id"], grant["resume_token"], 1 + n % 5).status_code == 202
    before = position(app)
    body = assert_limited(rate(client, widget["id"], grants[0]["conversation_id"], grants[0]["resume_token"], 4), "submission_limit")
    assert f"at most {SUBMISSIONS} form submissions and feedback per minute" in body["detail"]
    assert_limited(submit(client, widget["id"], grants[1]["conversation_id"], grants[1]["resume_token"], "x@example.com"),
                   "submission_limit")
    assert position(app) == before


# --- erasure closes the door ------------------------------------------------------------------


def test_an_erased_conversation_answers_410_to_its_resume_and_writes_and_is_ended(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"], name="Ophelia")
    cid, token = grant["conversation_id"], grant["resume_token"]
    erased = org_a.call("DELETE", f"/v1/widgets/{widget['id']}/conversations/{cid}/personal-data")
    assert erased.status_code == 204, erased.text
    row = conversations_of(org_a, app, widget["id"])[cid]
    assert (row["ended"], row["ended_by"]) == (True, "erasure") and row["erased_at"] is not None
    before = position(app)
    assert_problem(resume(client, widget["id"], cid, token), 410, "conversation_erased")
    assert_problem(submit(client, widget["id"], cid, token, "late@example.com"), 410, "conversation_erased")
    assert_problem(rate(client, widget["id"], cid, token, 4, "late"), 410, "conversation_erased")
    gone = assert_problem(conversation_call(client, widget["id"], cid, "end", {"resume_token": token}), 410, "conversation_erased")
    assert "Ophelia" not in gone["detail"]
    assert_problem(resume(client, widget["id"], cid, "not-its-token"), 404, "not_found")  # the 410 is for its holder only
    assert position(app) == before, "a call on an erased conversation wrote something"


def test_erasing_a_verified_visitor_refuses_their_tokens_resumes_with_410(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    key = SiteKey.generate("ES256", "k")
    widget = identity_widget(org_a, app, "optional", key)
    token = key.token(widget["id"], sub="ada", name="Ada")
    mine = begin(client, widget["id"], visitor_token=token)
    bobs_token = key.token(widget["id"], sub="bob")
    bobs = begin(client, widget["id"], visitor_token=bobs_token)
    sync(app)
    assert org_a.call("DELETE", "/v1/visitors/ada/personal-data").status_code == 204
    for body in ({"visitor_token": token}, {"resume_token": mine["resume_token"]},
                 {"visitor_token": token, "resume_token": mine["resume_token"]}):
        assert_problem(conversation_call(client, widget["id"], mine["conversation_id"], "resume", body), 410, "conversation_erased")
    assert conversation_call(client, widget["id"], bobs["conversation_id"], "resume", {"visitor_token": bobs_token}).status_code == 200

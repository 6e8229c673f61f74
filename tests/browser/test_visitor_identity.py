"""Verified visitors in the browser: data-visitor-token, identify(), setContext() and "your conversations".

The widget trusts what the site's backend signed: these tests sign tokens as a site would, hand
them to the page (on the snippet or through the page API), and check what reaches the service.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ApiServer, Recorder, stub_livekit
from tests.browser.hostpages import HostSite, page_html
from tests.visitors import SiteKey

pytestmark = pytest.mark.browser

KEY = SiteKey.generate("ES256", "site-key")
CONFIG = {"v1": {"identity": {"mode": "optional"}, "context": [{"key": "plan", "type": "string"}, {"key": "page", "type": "string"}],
                 "text": {"welcome_message": "Hi!"}}}


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    created = api_server.create_live_widget([allowed_site.domain], CONFIG)
    response = api_server.call("POST", f"/v1/widgets/{created['id']}/identity-keys", json={"jwk": KEY.public_jwk})
    assert response.status_code == 201, response.text
    api_server.wait_public(created["id"], allowed_site.origin)
    return created


def serve(site: HostSite, api: ApiServer, widget_id: str, token: str | None = None) -> str:
    html = page_html(api.base, widget_id, title="Signed-in customer")
    if token is not None:
        html = html.replace(f'data-widget-id="{widget_id}"', f'data-widget-id="{widget_id}" data-visitor-token="{token}"')
    return site.serve(f"/{uuid.uuid4().hex}.html", html)


def send_message(page: Page, text: str = "Hello") -> None:
    page.get_by_test_id("anyreach-launcher").click()
    page.get_by_test_id("anyreach-input").fill(text)
    page.get_by_test_id("anyreach-input").press("Enter")


def started_body(page: Page, recorder: Recorder, widget_id: str) -> dict[str, Any]:
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/widgets/{widget_id}/conversations")) as answer:
        send_message(page)
    assert answer.value.status == 201, answer.value.text()
    (request,) = recorder.posts(f"/widgets/{widget_id}/conversations")
    return json.loads(request.post_data or "{}") | {"_grant": answer.value.json()}


def verified_row(api: ApiServer, widget_id: str, conversation_id: str) -> dict[str, Any]:
    return api.wait_conversation(widget_id, conversation_id, lambda c: True)


def test_the_snippets_visitor_token_makes_the_visitor_verified(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, api_server: ApiServer
) -> None:
    stub_livekit(page)
    token = KEY.token(widget["id"], sub="snippet-visitor")
    page.goto(serve(allowed_site, api_server, widget["id"], token))
    body = started_body(page, recorder, widget["id"])
    assert body["visitor_token"] == token
    assert "context" not in body
    assert verified_row(api_server, widget["id"], body["_grant"]["conversation_id"])["visitor"]["verified"] is True


def test_identify_and_set_context_go_with_the_start_and_a_new_token_replaces_the_old(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, api_server: ApiServer
) -> None:
    stub_livekit(page)
    first, second = KEY.token(widget["id"], sub="ada", lifetime=60), KEY.token(widget["id"], sub="ada", lifetime=3600)
    page.goto(serve(allowed_site, api_server, widget["id"]))
    page.evaluate("([a, b]) => { Anyreach.identify(a); Anyreach.setContext({ plan: 'pro', page: '/pricing' }); Anyreach.identify(b); }",
                  [first, second])
    body = started_body(page, recorder, widget["id"])
    assert body["visitor_token"] == second
    assert body["context"] == {"plan": "pro", "page": "/pricing"}
    assert verified_row(api_server, widget["id"], body["_grant"]["conversation_id"])["visitor"]["verified"] is True
    # Later calls take the context set since; identify(null) forgets the visitor.
    page.evaluate("() => { Anyreach.setContext({ plan: 'team' }); Anyreach.identify(null); }")
    page.reload()
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/resume")) as resumed:
        send_message(page, "Again")
    sent = json.loads(resumed.value.post_data or "{}")
    assert "visitor_token" not in sent and "context" not in sent  # a reload starts a fresh page: nothing set yet
    assert sent["resume_token"] == body["_grant"]["resume_token"]


def test_identify_refuses_what_is_not_a_token(page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite,
                                             api_server: ApiServer) -> None:
    stub_livekit(page)
    page.goto(serve(allowed_site, api_server, widget["id"]))
    page.evaluate("() => { Anyreach.identify('not a token'); Anyreach.setContext(['no']); }")
    body = started_body(page, recorder, widget["id"])
    assert "visitor_token" not in body and "context" not in body
    assert any("identify()" in w for w in recorder.warnings())


def test_a_verified_visitor_sees_their_conversations_and_continues_one(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, api_server: ApiServer
) -> None:
    stub_livekit(page)
    sub = f"lister-{uuid.uuid4().hex[:6]}"
    headers = {"Origin": allowed_site.origin}
    earlier = [httpx.post(f"{api_server.base}/public/v1/widgets/{widget['id']}/conversations", headers=headers,
                          json={"visitor_token": KEY.token(widget["id"], sub=sub)}, timeout=10).json() for _ in range(2)]
    httpx.post(f"{api_server.base}/public/v1/widgets/{widget['id']}/conversations", headers=headers,
               json={"visitor_token": KEY.token(widget["id"], sub="someone-else")}, timeout=10)
    for grant in earlier:
        api_server.wait_conversation(widget["id"], grant["conversation_id"], lambda c: True)

    page.goto(serve(allowed_site, api_server, widget["id"], KEY.token(widget["id"], sub=sub)))
    page.get_by_test_id("anyreach-launcher").click()
    listed = page.get_by_test_id("anyreach-past-conversation")
    expect(listed).to_have_count(2)
    ids = [listed.nth(i).get_attribute("data-conversation-id") for i in range(2)]
    assert ids == [earlier[1]["conversation_id"], earlier[0]["conversation_id"]]  # newest first
    lists = [r for r in recorder.to(api_server.base) if r.url.endswith("/visitor/conversations")]
    assert lists and lists[-1].headers.get("authorization", "").startswith("Bearer ")

    with page.expect_response(lambda r: r.url.endswith(f"/conversations/{ids[1]}/resume")) as resumed:
        listed.nth(1).click()
    assert resumed.value.status == 200, resumed.value.text()
    sent = json.loads(resumed.value.request.post_data or "{}")
    assert "resume_token" not in sent and sent["visitor_token"]
    row = api_server.wait_conversation(widget["id"], ids[1], lambda c: c["rooms"] == 2)
    assert row["visitor"]["verified"] is True
    # This browser now holds a resume token of its own for that conversation.
    stored = page.evaluate(f"() => JSON.parse(localStorage.getItem('anyreach:{widget['id']}'))")
    assert stored["conversation_id"] == ids[1] and stored["resume_token"] == resumed.value.json()["resume_token"]
    assert recorder.errors == []


def test_an_anonymous_visitor_sees_no_list(page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite,
                                          api_server: ApiServer) -> None:
    page.goto(serve(allowed_site, api_server, widget["id"]))
    page.get_by_test_id("anyreach-launcher").click()
    expect(page.get_by_test_id("anyreach-input")).to_be_visible()
    expect(page.get_by_test_id("anyreach-history")).to_be_hidden()
    assert not [r for r in recorder.requests if r.url.endswith("/visitor/conversations")]

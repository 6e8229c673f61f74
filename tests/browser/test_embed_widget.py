"""The embed loader in headless Chromium, against the real service (issue 5).

Two customer sites on two loopback origins embed the same widget with the documented snippet;
the widget allows only the first. No LiveKit server runs: every room join fails, and the widget
must say "agent unavailable" and stay usable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ApiServer, Recorder
from tests.browser.hostpages import HostSite

pytestmark = pytest.mark.browser

DISPLAY_NAME = "Nova at Acme"
PRIMARY = "#0F766E"
PRIMARY_RGB = "rgb(15, 118, 110)"
QUICK_ACTIONS = [
    {"label": "Track my order", "message": "Where is my order?"},
    {"label": "Opening hours", "message": "When are you open?"},
]
PRECHAT = {
    "id": "intro",
    "title": "Before we start",
    "trigger": "pre_chat",
    "fields": [
        {"name": "name", "label": "Your name", "type": "text", "required": True},
        {"name": "email", "label": "Email", "type": "email"},
    ],
}


def widget_config(theme: str = "light") -> dict[str, Any]:
    return {
        "v1": {
            "appearance": {"theme": theme, "primary_color": PRIMARY, "launcher_label": "Ask Nova", "bubble_icon": "sparkle"},
            "branding": {"display_name": DISPLAY_NAME, "show_powered_by": True},
            "text": {"welcome_message": "Hello! I'm Nova. How can I help?", "input_placeholder": "Ask Nova anything"},
            "quick_actions": QUICK_ACTIONS,
            "forms": [PRECHAT],
            "feedback": {"enabled": True, "type": "stars", "prompt": "How did Nova do?", "allow_comment": True},
        }
    }


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite, other_site: HostSite) -> dict[str, Any]:
    """A live widget allowed on the first site only."""
    created = api_server.create_live_widget([allowed_site.domain], widget_config("light"))
    api_server.wait_public(created["id"], allowed_site.origin)
    return created


# ---- helpers ----


def is_start(response: Any) -> bool:
    return response.request.method == "POST" and response.url.endswith("/conversations")


def status(page: Page) -> Any:
    return page.get_by_test_id("anyreach-status")


def stored_conversation(page: Page, widget_id: str) -> dict[str, str] | None:
    raw = page.evaluate("key => localStorage.getItem(key)", f"anyreach:{widget_id}")
    return json.loads(raw) if raw else None


def assert_grant(grant: dict[str, Any]) -> None:
    assert grant["conversation_id"] and grant["resume_token"]
    assert grant["channel"] == "webrtc"
    livekit = grant["livekit"]
    assert livekit["token"].count(".") == 2, "the LiveKit token is a JWT"
    assert livekit["room"] and livekit["url"].startswith("ws")


def start_through_prechat(page: Page, name: str, email: str) -> dict[str, Any]:
    """Opens the bubble, fills the pre-chat form and submits it; answers the grant the page received."""
    page.get_by_test_id("anyreach-launcher").click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()
    expect(page.get_by_test_id("anyreach-prechat-form")).to_be_visible()
    page.get_by_test_id("anyreach-field-name").fill(name)
    page.get_by_test_id("anyreach-field-email").fill(email)
    with page.expect_response(is_start) as started:
        page.get_by_test_id("anyreach-prechat-submit").click()
    response = started.value
    assert response.status == 201, response.text()
    grant = response.json()
    assert_grant(grant)
    # No LiveKit server: the room cannot be joined.
    expect(status(page)).to_have_attribute("data-state", "unavailable")
    return grant


def assert_usable(page: Page) -> None:
    box = page.get_by_test_id("anyreach-input")
    expect(box).to_be_visible()
    expect(box).to_be_enabled()
    expect(box).to_be_editable()


# ---- where it renders ----


def test_bubble_renders_on_the_allowed_origin_with_its_config(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"]))

    launcher = page.get_by_test_id("anyreach-launcher")
    expect(launcher).to_be_visible()
    assert launcher.evaluate("el => getComputedStyle(el).backgroundColor") == PRIMARY_RGB
    expect(launcher).to_have_attribute("aria-label", "Ask Nova")
    box = launcher.bounding_box()
    assert box and box["width"] > 0 and box["height"] > 0
    assert box["x"] + box["width"] > 1024 - 60 and box["y"] + box["height"] > 800 - 60, f"not in the bottom-right corner: {box}"

    launcher.click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()
    expect(page.get_by_test_id("anyreach-title")).to_have_text(DISPLAY_NAME)
    header_bg = page.locator("anyreach-widget").evaluate(
        "host => getComputedStyle(host.shadowRoot.querySelector('header')).backgroundColor"
    )
    assert header_bg == PRIMARY_RGB
    # The quick actions are there; they show once the pre-chat form is answered (next test).
    expect(page.get_by_test_id("anyreach-quick-action")).to_have_text([q["label"] for q in QUICK_ACTIONS])
    expect(page.get_by_test_id("anyreach-prechat-form")).to_be_visible()

    # The widget renders inside its own shadow root and leaves the host page's styles alone.
    assert page.evaluate("() => document.querySelector('anyreach-widget').shadowRoot !== null")
    assert "Georgia" in page.evaluate("() => getComputedStyle(document.querySelector('h1')).fontFamily")
    # Opening it asks for the pre-chat form first: nothing is started yet, nothing is logged.
    assert recorder.posts("/conversations") == []
    assert recorder.warnings() == [] and recorder.errors == []


def test_nothing_renders_on_another_origin(
    page: Page, recorder: Recorder, widget: dict[str, Any], other_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    widget_id = widget["id"]
    refused = httpx.get(f"{api_server.base}/public/v1/widgets/{widget_id}", headers={"Origin": other_site.origin})
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"
    with page.expect_console_message(lambda m: m.type == "warning" and widget_id in m.text):
        page.goto(embed_page(other_site, widget_id))
    page.wait_for_load_state("networkidle")
    # The page API is there but has no widget to drive: asking it to start changes nothing.
    page.evaluate("() => window.Anyreach && window.Anyreach.startConversation()")
    page.wait_for_timeout(300)

    assert page.locator("anyreach-widget").count() == 0
    assert page.get_by_test_id("anyreach-launcher").count() == 0
    config_reads = [r for r in recorder.requests if r.method == "GET" and f"/public/v1/widgets/{widget_id}" in r.url]
    assert len(config_reads) == 1, "the loader asked the API once"
    assert recorder.posts("/conversations") == []
    assert [r for r in recorder.requests if "/conversations" in r.url] == []
    warnings = recorder.warnings()
    assert len(warnings) == 1, warnings
    assert widget_id in warnings[0] and other_site.origin in warnings[0], warnings[0]
    assert recorder.errors == []
    assert stored_conversation(page, widget_id) is None


# ---- a conversation ----


def test_prechat_form_starts_a_conversation_and_the_widget_stays_usable(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    page.goto(embed_page(allowed_site, widget["id"]))

    grant = start_through_prechat(page, "Ada Lovelace", "ada@example.com")

    starts = recorder.posts("/conversations")
    assert len(starts) == 1
    assert json.loads(starts[0].post_data or "{}")["visitor"]["name"] == "Ada Lovelace"
    assert stored_conversation(page, widget["id"]) == {
        "conversation_id": grant["conversation_id"],
        "resume_token": grant["resume_token"],
    }
    # The form values reach the conversation.
    row = api_server.wait_conversation(widget["id"], grant["conversation_id"], lambda c: bool(c["forms"]))
    assert [(f["form_id"], f["values"]) for f in row["forms"]] == [("intro", {"name": "Ada Lovelace", "email": "ada@example.com"})]
    assert row["visitor"].get("name") == "Ada Lovelace"
    assert row["ended"] is False

    # Agent unavailable, said so, with a way to retry; the rest of the widget still works.
    expect(page.get_by_test_id("anyreach-retry")).to_be_visible()
    expect(page.get_by_test_id("anyreach-prechat-form")).to_have_count(0)
    expect(page.get_by_test_id("anyreach-quick-action")).to_have_count(len(QUICK_ACTIONS))
    expect(page.get_by_test_id("anyreach-quick-action").first).to_be_visible()
    expect(page.get_by_test_id("anyreach-welcome")).to_contain_text("Hello! I'm Nova. How can I help?")
    assert_usable(page)

    # A message typed now is shown, and the widget tries the room again (resuming, not starting over).
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith(f"/conversations/{grant['conversation_id']}/resume")):
        page.get_by_test_id("anyreach-input").fill("Is anyone there?")
        page.get_by_test_id("anyreach-input").press("Enter")
    visitor_lines = page.locator('[data-testid="anyreach-message"][data-role="visitor"]')
    expect(visitor_lines).to_contain_text(["Is anyone there?"])
    expect(status(page)).to_have_attribute("data-state", "unavailable")
    # A quick action sends its message.
    page.get_by_test_id("anyreach-quick-action").filter(has_text=QUICK_ACTIONS[0]["label"]).click()
    expect(visitor_lines).to_contain_text(["Is anyone there?", QUICK_ACTIONS[0]["message"]])
    expect(status(page)).to_have_attribute("data-state", "unavailable")
    assert_usable(page)
    assert len(recorder.posts("/conversations")) == 1
    assert recorder.errors == []


def test_feedback_given_in_the_widget_reaches_the_conversation(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    page.goto(embed_page(allowed_site, widget["id"]))
    grant = start_through_prechat(page, "Grace Hopper", "grace@example.com")

    page.get_by_test_id("anyreach-end").click()
    form = page.get_by_test_id("anyreach-feedback-form")
    expect(form).to_be_visible()
    expect(form).to_contain_text("How did Nova do?")
    options = page.get_by_test_id("anyreach-feedback-option")
    expect(options).to_have_count(5)
    expect(page.get_by_test_id("anyreach-feedback-submit")).to_be_disabled()
    page.locator('[data-testid="anyreach-feedback-option"][data-value="4"]').click()
    page.get_by_test_id("anyreach-feedback-comment").fill("Quick and kind.")
    cid = grant["conversation_id"]
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/conversations/{cid}/end")) as ended:
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/conversations/{cid}/feedback")) as given:
            page.get_by_test_id("anyreach-feedback-submit").click()
    assert given.value.status == 202 and ended.value.status == 202
    body = json.loads(given.value.request.post_data or "{}")
    assert body == {"resume_token": grant["resume_token"], "rating": 4, "comment": "Quick and kind."}

    expect(status(page)).to_have_attribute("data-state", "ended")
    expect(page.get_by_test_id("anyreach-new-conversation")).to_be_visible()
    row = api_server.wait_conversation(widget["id"], cid, lambda c: c["feedback"] is not None and c["ended"])
    assert row["feedback"]["rating"] == 4
    assert row["feedback"]["comment"] == "Quick and kind."
    assert row["ended"] is True
    # An ended conversation is forgotten in the browser: nothing left to resume.
    assert stored_conversation(page, widget["id"]) is None
    assert recorder.errors == []


def test_a_reload_resumes_the_stored_conversation_in_a_fresh_room(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    page.goto(embed_page(allowed_site, widget["id"]))
    first = start_through_prechat(page, "Alan Turing", "alan@example.com")
    stored = stored_conversation(page, widget["id"])
    assert stored and stored["conversation_id"] == first["conversation_id"]

    page.reload()
    launcher = page.get_by_test_id("anyreach-launcher")
    expect(launcher).to_be_visible()
    cid = stored["conversation_id"]
    # Opening records nothing, even with a conversation to resume: the first message resumes it.
    launcher.click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()
    page.wait_for_timeout(300)
    assert recorder.posts("/resume") == []
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/conversations/{cid}/resume")) as resumed:
        page.get_by_test_id("anyreach-input").fill("I'm back")
        page.get_by_test_id("anyreach-input").press("Enter")
    response = resumed.value
    assert json.loads(response.request.post_data or "{}") == {"resume_token": stored["resume_token"]}
    assert response.status == 200, response.text()
    grant = response.json()
    assert_grant(grant)
    assert grant["conversation_id"] == cid
    assert grant["livekit"]["room"] != first["livekit"]["room"], "a resume joins a fresh room"
    assert grant["livekit"]["token"] != first["livekit"]["token"]
    # The resume retired the stored token: the browser keeps the new one, for the next resume and every write.
    assert grant["resume_token"] != stored["resume_token"]
    assert stored_conversation(page, widget["id"]) == {"conversation_id": cid, "resume_token": grant["resume_token"]}

    # Resumed, not restarted: no second start, no second pre-chat form.
    assert len(recorder.posts("/conversations")) == 1
    expect(page.get_by_test_id("anyreach-prechat-form")).to_have_count(0)
    expect(status(page)).to_have_attribute("data-state", "unavailable")
    assert_usable(page)
    row = api_server.wait_conversation(widget["id"], cid, lambda c: c["rooms"] >= 2)
    assert row["rooms"] == 2 and row["ended"] is False


def test_the_prechat_form_refuses_what_the_api_would_refuse(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    """A missing required answer, or an email the API would refuse, keeps the form open; nothing is started."""
    page.goto(embed_page(allowed_site, widget["id"]))
    page.get_by_test_id("anyreach-launcher").click()
    submit = page.get_by_test_id("anyreach-prechat-submit")
    name, email = page.get_by_test_id("anyreach-field-name"), page.get_by_test_id("anyreach-field-email")

    submit.click()
    assert name.evaluate("el => el.validity.valueMissing")
    name.fill("Ada")
    email.fill("ada@localhost")  # a browser's idea of an email address, not the API's
    submit.click()
    assert email.evaluate("el => el.validity.patternMismatch")
    expect(page.get_by_test_id("anyreach-prechat-form")).to_be_visible()
    page.wait_for_timeout(200)
    assert recorder.posts("/conversations") == []

    email.fill("ada@example.com")
    with page.expect_response(is_start) as started:
        submit.click()
    assert started.value.status == 201


def test_a_long_prechat_name_still_starts_a_conversation(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    """A text field takes up to 1,000 characters; the visitor name sent with the start only 80."""
    page.goto(embed_page(allowed_site, widget["id"]))
    name = "Maria " + "Anna " * 30 + "von Trapp"

    grant = start_through_prechat(page, name, "maria@example.com")

    sent = json.loads(recorder.posts("/conversations")[0].post_data or "{}")["visitor"]["name"]
    assert name.startswith(sent) and len(sent) <= 80
    # The form keeps the whole answer.
    row = api_server.wait_conversation(widget["id"], grant["conversation_id"], lambda c: bool(c["forms"]))
    assert row["forms"][0]["values"]["name"] == name


# ---- screenshots for a person to look at ----


def open_for_screenshot(page: Page) -> None:
    start_through_prechat(page, "Ada Lovelace", "ada@example.com")
    page.get_by_test_id("anyreach-input").fill("Hello, can you help me with my order?")
    page.mouse.move(0, 0)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_open_widget(
    scheme: str,
    page: Page,
    api_server: ApiServer,
    allowed_site: HostSite,
    embed_page: Any,
    screenshots: Path,
) -> None:
    """One widget with theme "auto", seen by a visitor whose system is light, then dark."""
    created = api_server.create_live_widget([allowed_site.domain], widget_config("auto"))
    api_server.wait_public(created["id"], allowed_site.origin)
    page.emulate_media(color_scheme=scheme)
    page.goto(embed_page(allowed_site, created["id"], title=f"Customer site ({scheme} system theme)"))

    open_for_screenshot(page)
    background = page.locator("anyreach-widget").evaluate(
        "host => getComputedStyle(host.shadowRoot.querySelector('.panel')).backgroundColor"
    )
    assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(17, 24, 39)"), background

    target = screenshots / f"widget-{scheme}.png"
    target.unlink(missing_ok=True)
    page.screenshot(path=str(target))
    assert target.exists() and target.stat().st_size > 10_000

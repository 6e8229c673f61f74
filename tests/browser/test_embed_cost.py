"""What a page pays for the snippet before and at the visitor's first interaction (issue 14).

Before any interaction: the loader and the public config from us, at most 16,000 bytes with their
headers, nothing else. Opening the bubble records nothing and connects nothing; the conversation
starts at the first message, quick action or microphone press, and the LiveKit chunk runs then.
A text-only widget never asks for the microphone. All on the real loader; where a joined room is
needed, the LiveKit chunk is the stub of conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ApiServer, Recorder, stub_livekit, watched
from tests.browser.hostpages import HostSite

pytestmark = pytest.mark.browser

BUDGET_BYTES = 16_000
QUICK = {"label": "Opening hours", "message": "When are you open?"}


def make_widget(api_server: ApiServer, site: HostSite, voice: bool) -> dict[str, Any]:
    config = {
        "v1": {
            "branding": {"display_name": "Cost Co"},
            "text": {"welcome_message": "Hi! Ask me anything."},
            "voice": {"enabled": voice, "mode": "open_mic"},
            "quick_actions": [QUICK],
        }
    }
    created = api_server.create_live_widget([site.domain], config)
    api_server.wait_public(created["id"], site.origin)
    return created


@pytest.fixture(scope="module")
def text_widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return make_widget(api_server, allowed_site, voice=False)


@pytest.fixture(scope="module")
def voice_widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return make_widget(api_server, allowed_site, voice=True)


def settle(page: Page) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)


def starts(recorder: Recorder) -> list[Any]:
    return recorder.posts("/conversations")


def test_before_any_interaction_a_page_loads_only_the_loader_and_the_config(
    page: Page, recorder: Recorder, voice_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any,
    api_server: ApiServer,
) -> None:
    page.goto(embed_page(allowed_site, voice_widget["id"]))
    expect(page.get_by_test_id("anyreach-launcher")).to_be_visible()
    settle(page)

    ours = recorder.to(api_server.base)
    paths = [r.url.removeprefix(api_server.base) for r in ours]
    assert paths == ["/embed.js", f"/public/v1/widgets/{voice_widget['id']}"], paths
    sizes = [r.sizes() for r in ours]
    transferred = sum(s["responseHeadersSize"] + s["responseBodySize"] for s in sizes)
    assert transferred <= BUDGET_BYTES, sizes
    # The browser got the loader compressed.
    assert ours[0].response().headers["content-encoding"] in ("br", "gzip")
    assert recorder.websockets == []
    assert watched(page)["getUserMedia"] == 0
    assert recorder.errors == []


def test_opening_the_bubble_records_nothing_and_connects_nothing(
    page: Page, recorder: Recorder, allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    voice_widget = make_widget(api_server, allowed_site, voice=True)  # its own: no other test's conversations
    page.goto(embed_page(allowed_site, voice_widget["id"]))
    launcher = page.get_by_test_id("anyreach-launcher")
    launcher.click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()
    expect(page.get_by_test_id("anyreach-welcome")).to_be_visible()
    page.get_by_test_id("anyreach-close").click()
    launcher.click()
    settle(page)

    assert starts(recorder) == [] and recorder.posts("/resume") == []
    assert [r.method for r in recorder.to(api_server.base)] == ["GET"] * len(recorder.to(api_server.base))
    assert recorder.websockets == []
    assert watched(page)["getUserMedia"] == 0
    assert page.evaluate("() => window.__lkStub === undefined")
    # Nothing was recorded server-side either.
    assert api_server.conversations(voice_widget["id"]) == []


def test_the_first_message_starts_the_conversation_and_only_then_the_room(
    page: Page, recorder: Recorder, text_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any,
    api_server: ApiServer,
) -> None:
    page.goto(embed_page(allowed_site, text_widget["id"]))
    page.get_by_test_id("anyreach-launcher").click()
    settle(page)
    assert recorder.websockets == [] and starts(recorder) == []

    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/conversations")) as started:
        page.get_by_test_id("anyreach-input").fill("First words")
        page.get_by_test_id("anyreach-input").press("Enter")
    assert started.value.status == 201
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "unavailable")

    livekit = started.value.json()["livekit"]["url"]
    assert recorder.websockets and all(ws.startswith(livekit) for ws in recorder.websockets)
    assert len(starts(recorder)) == 1
    assert watched(page)["getUserMedia"] == 0


def test_a_quick_action_starts_the_conversation(
    page: Page, recorder: Recorder, text_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, text_widget["id"]))
    page.get_by_test_id("anyreach-launcher").click()
    settle(page)
    assert starts(recorder) == []

    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/conversations")) as started:
        page.get_by_test_id("anyreach-quick-action").click()
    assert started.value.status == 201
    expect(page.locator('[data-testid="anyreach-message"][data-role="visitor"]')).to_contain_text([QUICK["message"]])


def test_a_microphone_press_starts_the_conversation_and_only_then_asks_for_the_microphone(
    page: Page, recorder: Recorder, voice_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    stub_livekit(page)
    page.goto(embed_page(allowed_site, voice_widget["id"]))
    page.get_by_test_id("anyreach-launcher").click()
    mic = page.get_by_test_id("anyreach-mic")
    expect(mic).to_be_enabled()
    settle(page)
    assert starts(recorder) == [] and watched(page)["getUserMedia"] == 0

    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/conversations")) as started:
        mic.click()
    assert started.value.status == 201
    expect(mic).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("() => window.__lkStub.mic") == [True]
    assert watched(page)["getUserMedia"] == 1

    mic.click()
    expect(mic).to_have_attribute("aria-pressed", "false")
    assert len(starts(recorder)) == 1


def test_a_text_only_widget_never_asks_for_the_microphone(
    page: Page, recorder: Recorder, text_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    stub_livekit(page)
    page.goto(embed_page(allowed_site, text_widget["id"]))
    page.get_by_test_id("anyreach-launcher").click()
    expect(page.get_by_test_id("anyreach-mic")).to_have_count(0)
    box = page.get_by_test_id("anyreach-input")
    for text in ("Hello", "Are you there?"):
        box.fill(text)
        box.press("Enter")
    agent = page.locator('[data-testid="anyreach-message"][data-role="agent"]')
    expect(agent).to_contain_text(["Echo: Hello", "Echo: Are you there?"])
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "connected")
    page.keyboard.press(" ")  # push-to-talk's key does nothing without voice

    assert page.evaluate("() => window.__lkStub.mic") == []
    assert watched(page)["getUserMedia"] == 0
    assert len(starts(recorder)) == 1

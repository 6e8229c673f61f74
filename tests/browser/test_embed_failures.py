"""The panel after a failure (issue 31): a message that could not be sent is marked next to it with its own retry,
"Try again" keeps focus in the panel, and Escape still closes it. No LiveKit server runs here: every join fails."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ApiServer
from tests.browser.hostpages import HostSite
from tests.browser.test_embed_a11y import config, focus_in_panel, live

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return live(api_server, allowed_site, config())


def fail_to_send(page: Page, text: str) -> Any:
    page.get_by_role("button", name=re.compile("chat", re.I)).first.click()
    box = page.get_by_role("textbox", name=re.compile("message", re.I))
    box.fill(text)
    box.press("Enter")
    message = page.get_by_role("log").locator("[data-role=visitor]").filter(has_text=text)
    expect(message).to_contain_text("Not sent.", timeout=30_000)  # once joining the room has failed
    return message


def test_a_message_that_could_not_be_sent_says_so_next_to_it_with_its_own_retry(
    page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/failures-mark.html"))
    message = fail_to_send(page, "Is anyone there?")
    again = message.get_by_role("button", name="Send again")
    expect(again).to_be_visible()
    again.click()
    expect(message).to_contain_text("Not sent.", timeout=30_000)  # still no server: marked again, once
    expect(message.get_by_role("button", name="Send again")).to_have_count(1)
    assert focus_in_panel(page)


def test_try_again_keeps_focus_in_the_panel_and_escape_still_closes_it(
    page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/failures-focus.html"))
    fail_to_send(page, "Hello?")
    retry = page.get_by_role("button", name="Try again")
    expect(retry).to_be_visible()
    retry.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").first).to_have_attribute("data-state", "unavailable", timeout=30_000)
    assert focus_in_panel(page), "focus left the panel after Try again"
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_role("button", name=re.compile("chat", re.I)).first).to_be_focused()

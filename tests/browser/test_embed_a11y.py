"""Accessibility of the widget, checked with axe-core (from npm) in the page (issue 14).

No serious or critical axe finding in the closed, open, pre-chat, error and feedback states; the
keyboard path (Tab to the launcher, Enter opens and moves focus in, Escape closes and gives it
back); new messages in a polite live region without moving focus; reduced motion; 24 x 24 px
targets; the open panel on a 320 x 640 screen; and contrast for any customer colour, which the
widget meets by choosing black or white text (it refuses no colour).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import TIMEOUT_MS, WATCH, ApiServer, Recorder, stub_livekit
from tests.browser.hostpages import HostSite

pytestmark = pytest.mark.browser

PRECHAT = {
    "id": "about", "title": "About you", "trigger": "pre_chat",
    "fields": [
        {"name": "name", "label": "Your name", "type": "text", "required": True},
        {"name": "topic", "label": "Topic", "type": "select", "options": ["Billing", "Orders"]},
        {"name": "consent", "label": "I agree to be contacted", "type": "checkbox"},
    ],
}


def config(primary: str = "#0F766E", accent: str = "#0EA5E9", theme: str = "light", prechat: bool = False) -> dict[str, Any]:
    return {
        "v1": {
            "appearance": {"primary_color": primary, "accent_color": accent, "theme": theme, "launcher_label": "Chat with us"},
            "branding": {"display_name": "Access Co", "show_powered_by": True},
            "text": {"welcome_message": "Welcome! How can we help?"},
            "voice": {"enabled": True, "mode": "open_mic"},
            "quick_actions": [{"label": "Track my order", "message": "Where is my order?"}],
            "forms": [PRECHAT] if prechat else [],
            "feedback": {"enabled": True, "type": "stars", "allow_comment": True},
        }
    }


def live(api_server: ApiServer, site: HostSite, cfg: dict[str, Any]) -> dict[str, Any]:
    created = api_server.create_live_widget([site.domain], cfg)
    api_server.wait_public(created["id"], site.origin)
    return created


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return live(api_server, allowed_site, config())


@pytest.fixture(scope="module")
def prechat_widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return live(api_server, allowed_site, config(prechat=True))


@pytest.fixture(scope="module")
def dark_widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return live(api_server, allowed_site, config(theme="dark"))


# ---- helpers ----


def axe(page: Page, source: str, rules: list[str] | None = None) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the whole page (it reads open shadow roots)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=source)
    options: dict[str, Any] = {"resultTypes": ["violations"]}
    if rules:
        options["runOnly"] = {"type": "rule", "values": rules}
    violations = page.evaluate("(options) => axe.run(document, options).then((r) => r.violations)", options)
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]], "summary": v["nodes"][0]["failureSummary"]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def shadow_active(page: Page) -> str | None:
    """data-testid (or tag) of the element focused inside the widget, None when focus is elsewhere."""
    return page.evaluate(
        "() => { const host = document.activeElement; if (!host || host.tagName !== 'ANYREACH-WIDGET') return null;"
        " const el = host.shadowRoot.activeElement; return el ? (el.dataset.testid || el.tagName.toLowerCase()) : null; }"
    )


def focus_in_panel(page: Page) -> bool:
    return page.evaluate(
        "() => { const root = document.querySelector('anyreach-widget').shadowRoot;"
        " return !!root.activeElement && root.querySelector('.panel').contains(root.activeElement); }"
    )


def controls(page: Page) -> list[dict[str, Any]]:
    """Every visible control in the widget with its box."""
    return page.locator("anyreach-widget").evaluate(
        "host => [...host.shadowRoot.querySelectorAll('button,input,select,textarea,[tabindex]')]"
        ".filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')"
        ".map((el) => { const r = el.getBoundingClientRect();"
        " return { id: el.dataset.testid || el.getAttribute('aria-label') || el.tagName, x: r.x, y: r.y, w: r.width, h: r.height }; })"
    )


def open_chat(page: Page) -> None:
    page.get_by_test_id("anyreach-launcher").click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()


def converse(page: Page) -> None:
    """With the LiveKit stub: a visitor message and the agent's echo."""
    page.get_by_test_id("anyreach-input").fill("Where is my parcel?")
    page.get_by_test_id("anyreach-input").press("Enter")
    expect(page.locator('[data-testid="anyreach-message"][data-role="agent"]')).to_contain_text(["Echo: Where is my parcel?"])


# ---- axe in every state ----


def test_no_serious_finding_closed_open_error_and_feedback(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, axe_source: str
) -> None:
    stub_livekit(page)
    page.goto(embed_page(allowed_site, widget["id"], "/a11y.html", title="Accessible site"))
    expect(page.get_by_test_id("anyreach-launcher")).to_be_visible()
    assert axe(page, axe_source) == [], "closed"

    open_chat(page)
    assert axe(page, axe_source) == [], "open"
    converse(page)
    assert axe(page, axe_source) == [], "open, conversing"

    page.get_by_test_id("anyreach-end").click()
    expect(page.get_by_test_id("anyreach-feedback-form")).to_be_visible()
    page.locator('[data-testid="anyreach-feedback-option"][data-value="4"]').click()
    assert axe(page, axe_source) == [], "feedback"
    assert recorder.errors == []

    # The check could fail: axe reads inside the shadow root and sees an unlabelled control there.
    page.locator("anyreach-widget").evaluate("host => host.shadowRoot.querySelector('.panel').append(document.createElement('button'))")
    assert [f["id"] for f in axe(page, axe_source)] == ["button-name"]


def test_no_serious_finding_when_the_agent_is_unavailable(
    page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, axe_source: str
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/a11y-error.html", title="Accessible site"))
    open_chat(page)
    page.get_by_test_id("anyreach-input").fill("Hello?")
    page.get_by_test_id("anyreach-input").press("Enter")
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "unavailable")
    expect(page.get_by_test_id("anyreach-retry")).to_be_visible()

    assert axe(page, axe_source) == [], "error"


def test_no_serious_finding_in_the_prechat_form_and_the_dark_theme(
    page: Page, prechat_widget: dict[str, Any], dark_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any,
    axe_source: str,
) -> None:
    page.goto(embed_page(allowed_site, prechat_widget["id"], "/a11y-prechat.html", title="Accessible site"))
    open_chat(page)
    expect(page.get_by_test_id("anyreach-prechat-form")).to_be_visible()
    assert axe(page, axe_source) == [], "pre-chat"

    page.goto(embed_page(allowed_site, dark_widget["id"], "/a11y-dark.html", title="Accessible site"))
    open_chat(page)
    assert axe(page, axe_source) == [], "dark"


# ---- keyboard and focus ----


def test_tab_reaches_the_launcher_enter_opens_into_the_panel_escape_closes_back(
    page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/keyboard.html"))
    expect(page.get_by_test_id("anyreach-launcher")).to_be_visible()

    page.keyboard.press("Tab")
    assert shadow_active(page) == "anyreach-launcher"
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()
    expect(page.get_by_test_id("anyreach-launcher")).to_have_attribute("aria-expanded", "true")
    assert focus_in_panel(page) and shadow_active(page) == "anyreach-input"

    # Tab stays in the dialog, round and round.
    seen = set()
    for _ in range(12):
        page.keyboard.press("Tab")
        assert focus_in_panel(page), shadow_active(page)
        seen.add(shadow_active(page))
    assert {"anyreach-close", "anyreach-input", "anyreach-send"} <= seen, seen

    page.keyboard.press("Escape")
    expect(page.get_by_test_id("anyreach-panel")).to_be_hidden()
    assert shadow_active(page) == "anyreach-launcher"
    expect(page.get_by_test_id("anyreach-launcher")).to_have_attribute("aria-expanded", "false")


def test_new_messages_arrive_in_a_polite_live_region_without_moving_focus(
    page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    stub_livekit(page)
    page.goto(embed_page(allowed_site, widget["id"], "/live.html"))
    open_chat(page)
    converse(page)
    page.get_by_test_id("anyreach-input").fill("typing a reply")
    page.get_by_test_id("anyreach-input").press("Shift+Enter")

    log = page.get_by_test_id("anyreach-messages")
    expect(log).to_have_attribute("aria-live", "polite")
    expect(log).to_have_attribute("role", "log")
    assert log.locator('[data-role="agent"]').count() >= 1, "the agent's message is inside the live region"
    assert shadow_active(page) == "anyreach-input", "focus stayed where the visitor types"
    expect(page.get_by_test_id("anyreach-input")).to_have_value("typing a reply\n")


# ---- motion, targets, small screens ----


def motion(page: Page) -> dict[str, str]:
    return page.locator("anyreach-widget").evaluate(
        "host => { const r = host.shadowRoot; const p = getComputedStyle(r.querySelector('.panel'));"
        " const l = getComputedStyle(r.querySelector('.launcher'));"
        " return { animation: p.animationName, transition: l.transitionDuration }; }"
    )


@pytest.fixture
def moving_page(browser: Any) -> Iterator[Page]:
    """A visitor who has not asked for reduced motion."""
    ctx = browser.new_context(viewport={"width": 1024, "height": 800}, reduced_motion="no-preference")
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script(WATCH)
    yield ctx.new_page()
    ctx.close()


def test_reduced_motion_stops_animation_and_transitions(
    page: Page, moving_page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    url = embed_page(allowed_site, widget["id"], "/motion.html")
    for p in (page, moving_page):
        p.goto(url)
        open_chat(p)

    assert motion(page) == {"animation": "none", "transition": "0s"}
    assert motion(moving_page) == {"animation": "in", "transition": "0.15s"}


def test_every_control_is_at_least_24_by_24(
    page: Page, prechat_widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    stub_livekit(page)
    page.goto(embed_page(allowed_site, prechat_widget["id"], "/targets.html"))
    small = [c for c in controls(page) if c["w"] < 24 or c["h"] < 24]
    assert small == [], "closed"
    open_chat(page)
    assert [c for c in controls(page) if c["w"] < 24 or c["h"] < 24] == [], "pre-chat"
    page.get_by_test_id("anyreach-field-name").fill("Ada")
    page.get_by_test_id("anyreach-prechat-submit").click()
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "connected")
    assert [c for c in controls(page) if c["w"] < 24 or c["h"] < 24] == [], "chat"
    page.get_by_test_id("anyreach-end").click()
    expect(page.get_by_test_id("anyreach-feedback-form")).to_be_visible()
    checked = controls(page)
    assert any(c["id"] == "anyreach-feedback-option" for c in checked)
    assert [c for c in checked if c["w"] < 24 or c["h"] < 24] == [], "feedback"


@pytest.fixture
def phone_page(browser: Any) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 320, "height": 640}, reduced_motion="reduce", has_touch=True)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script(WATCH)
    yield ctx.new_page()
    ctx.close()


def test_the_open_panel_fits_a_320_by_640_screen(
    phone_page: Page, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page = phone_page
    page.goto(embed_page(allowed_site, widget["id"], "/phone.html"))
    open_chat(page)

    box = page.get_by_test_id("anyreach-panel").bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 320 and box["y"] + box["height"] <= 640, box
    visible = controls(page)
    outside = [c for c in visible if c["x"] < 0 or c["y"] < 0 or c["x"] + c["w"] > 320 or c["y"] + c["h"] > 640]
    assert outside == [], outside
    assert {"anyreach-close", "anyreach-input", "anyreach-send", "anyreach-mic"} <= {c["id"] for c in visible}
    overflow = page.locator("anyreach-widget").evaluate(
        "host => { const p = host.shadowRoot.querySelector('.panel'); return p.scrollWidth - p.clientWidth; }"
    )
    assert overflow <= 0, "no sideways scrolling"


# ---- customer colours ----


@pytest.mark.parametrize(
    ("primary", "accent"),
    [("#FFFF00", "#FFFF00"), ("#777777", "#767676"), ("#00FF00", "#000080"), ("#FF00FF", "#FFFFFF"), ("#000000", "#F59E0B")],
)
def test_contrast_holds_for_the_customers_colours(
    primary: str, accent: str, page: Page, api_server: ApiServer, allowed_site: HostSite, embed_page: Any, axe_source: str
) -> None:
    """Text on the customer's colours is black or white, whichever contrasts more: at least 4.58:1 for any colour."""
    created = live(api_server, allowed_site, config(primary=primary, accent=accent))
    stub_livekit(page)
    page.goto(embed_page(allowed_site, created["id"], f"/colour-{primary[1:]}.html"))
    expect(page.get_by_test_id("anyreach-launcher")).to_be_visible()
    assert axe(page, axe_source, ["color-contrast"]) == [], "launcher"
    open_chat(page)
    converse(page)
    page.get_by_test_id("anyreach-mic").click()
    expect(page.get_by_test_id("anyreach-mic")).to_have_attribute("aria-pressed", "true")

    assert axe(page, axe_source, ["color-contrast"]) == [], "panel with the visitor's message on the primary colour"
    ratio = page.locator("anyreach-widget").evaluate(
        """host => {
          const lum = (c) => { const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map((v) => { v /= 255;
            return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
          const pair = (el) => { const s = getComputedStyle(el); const a = lum(s.color), b = lum(s.backgroundColor);
            return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); };
          const root = host.shadowRoot;
          return Math.min(pair(root.querySelector('.launcher')), pair(root.querySelector('.msg.visitor')), pair(root.querySelector('.mic')));
        }"""
    )
    assert ratio >= 4.5, ratio

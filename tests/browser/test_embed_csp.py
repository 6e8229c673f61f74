"""The loader on pages with a strict Content-Security-Policy (issue 14).

Each page is served by the test with its own policy header. "Styled" is checked by computed style
and position; every `securitypolicyviolation` event, page error and console refusal is collected,
and none may be ours. The LiveKit chunk is the real one (no LiveKit server runs: joining fails).
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from api.embed_routes import livekit_connect_sources
from tests.browser.conftest import ApiServer, Recorder, watched
from tests.browser.hostpages import HostSite

pytestmark = pytest.mark.browser

PRIMARY = "#0F766E"
PRIMARY_RGB = "rgb(15, 118, 110)"
TRUSTED_TYPES = "require-trusted-types-for 'script'; trusted-types 'none'"


def config() -> dict[str, Any]:
    return {
        "v1": {
            "appearance": {"primary_color": PRIMARY, "launcher_label": "Ask us", "theme": "light"},
            "branding": {"display_name": "Strict Co"},
            "text": {"welcome_message": "Hello from a strict page."},
            "quick_actions": [{"label": "Pricing", "message": "What does it cost?"}],
        }
    }


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    created = api_server.create_live_widget([allowed_site.domain, api_server.base.split("//", 1)[1]], config())
    api_server.wait_public(created["id"], allowed_site.origin)
    return created


def policies(api: str, livekit_url: str, nonce: str) -> dict[str, str]:
    """The policies of API.md's "Embedding on sites with a Content-Security-Policy", exactly."""
    connect = f"connect-src {api}{livekit_connect_sources(livekit_url)}"
    return {
        "script-src-origin": f"default-src 'none'; script-src {api}; style-src 'self'; {connect}; img-src 'self'; {TRUSTED_TYPES}",
        "nonce-strict-dynamic": (
            f"default-src 'none'; script-src 'nonce-{nonce}' 'strict-dynamic'; style-src 'nonce-{nonce}'; {connect}; "
            f"img-src 'self'; base-uri 'none'; object-src 'none'; {TRUSTED_TYPES}"
        ),
    }


def computed(page: Page, selector: str, *props: str) -> dict[str, str]:
    """Computed style of an element inside the widget's shadow root."""
    return page.locator("anyreach-widget").evaluate(
        "(host, [sel, props]) => { const s = getComputedStyle(host.shadowRoot.querySelector(sel));"
        " return Object.fromEntries(props.map((p) => [p, s.getPropertyValue(p)])); }",
        [selector, list(props)],
    )


def assert_styled(page: Page) -> None:
    """Launcher and panel look as designed: fixed in the corner, in the customer's colour, not in the page flow."""
    launcher = page.get_by_test_id("anyreach-launcher")
    expect(launcher).to_be_visible()
    style = computed(page, ".launcher", "position", "background-color", "border-radius", "height")
    assert style == {"position": "fixed", "background-color": PRIMARY_RGB, "border-radius": "28px", "height": "56px"}, style
    box = launcher.bounding_box()
    assert box and box["x"] + box["width"] > 1024 - 60 and box["y"] + box["height"] > 800 - 60, box

    launcher.click()
    panel = page.get_by_test_id("anyreach-panel")
    expect(panel).to_be_visible()
    style = computed(page, ".panel", "position", "width", "display", "flex-direction")
    assert style == {"position": "fixed", "width": "380px", "display": "flex", "flex-direction": "column"}, style
    assert computed(page, "header", "background-color")["background-color"] == PRIMARY_RGB
    box = panel.bounding_box()
    assert box and box["x"] > 1024 / 2 and box["y"] + box["height"] < 800, box
    # The message box sits in the panel's composer, not in the page's flow.
    composer = page.get_by_test_id("anyreach-composer").bounding_box()
    assert composer and box["y"] < composer["y"] < box["y"] + box["height"], (composer, box)


def converse(page: Page, recorder: Recorder, api: str) -> None:
    """The first message starts a conversation, loads the LiveKit chunk and tries the room."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/conversations")) as started:
        page.get_by_test_id("anyreach-input").fill("Hello under a strict policy")
        page.get_by_test_id("anyreach-input").press("Enter")
    assert started.value.status == 201, started.value.text()
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "unavailable")
    chunks = [r for r in recorder.to(api) if "/embed/lk-" in r.url]
    assert len(chunks) == 1 and chunks[0].response() and chunks[0].response().status == 200
    assert recorder.websockets, "the room was tried: connect-src let livekit-client reach the LiveKit host"


def assert_nothing_refused(page: Page, recorder: Recorder) -> None:
    seen = watched(page)
    assert seen["violations"] == [], seen["violations"]
    assert recorder.policy_errors() == []
    assert recorder.errors == []


def prove_the_watch_sees_violations(page: Page) -> None:
    """The same page reports a style="" written by a page script: the assertions above could fail."""
    page.evaluate("() => document.querySelector('main').setAttribute('style', 'color: red')")
    page.wait_for_function("() => window.__anyreachTest.violations.length > 0")
    assert watched(page)["violations"][0]["directive"] == "style-src-attr"


@pytest.mark.parametrize("policy", ["script-src-origin", "nonce-strict-dynamic"])
def test_the_widget_renders_styled_opens_and_converses_under_a_strict_policy(
    policy: str, page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any,
    api_server: ApiServer,
) -> None:
    nonce = secrets.token_urlsafe(12)
    header = policies(api_server.base, api_server.settings.livekit_url, nonce)[policy]
    url = embed_page(allowed_site, widget["id"], f"/csp-{policy}.html", headers={"Content-Security-Policy": header},
                     nonce=nonce if "nonce" in policy else None)

    page.goto(url)
    assert_styled(page)
    converse(page, recorder, api_server.base)
    page.get_by_test_id("anyreach-quick-action").click()
    expect(page.locator('[data-testid="anyreach-message"][data-role="visitor"]')).to_have_count(2)

    assert_nothing_refused(page, recorder)
    prove_the_watch_sees_violations(page)


def test_the_demo_page_serves_the_strictest_policy_and_the_widget_works_under_it(
    page: Page, recorder: Recorder, widget: dict[str, Any], api_server: ApiServer
) -> None:
    api_server.wait_public(widget["id"], api_server.base)
    with page.expect_response(lambda r: "/demo" in r.url) as served:
        page.goto(f"{api_server.base}/demo?widget={widget['id']}")
    policy = served.value.headers["content-security-policy"]
    assert "'strict-dynamic'" in policy and "trusted-types 'none'" in policy and "unsafe" not in policy
    # The page's own stylesheet applied (its nonce), and so did ours (constructed sheets).
    assert page.evaluate("() => getComputedStyle(document.querySelector('pre')).backgroundColor") == "rgb(243, 244, 246)"

    assert_styled(page)
    converse(page, recorder, api_server.base)
    assert_nothing_refused(page, recorder)

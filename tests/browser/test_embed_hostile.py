"""The loader on hostile host pages (issue 14): exactly one launcher, working, whatever the page does.

Each case is its own page, served by the test with its own headers and scripts: the snippet pasted
twice, RequireJS's `window.define`, a single-page app replacing `<body>`, storage that throws,
`Cross-Origin-Embedder-Policy: require-corp`, `Permissions-Policy: microphone=()`, and CSS that tries
to restyle or hide us.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ApiServer, Recorder, watched
from tests.browser.hostpages import HostSite

pytestmark = pytest.mark.browser

PRIMARY = "#7C3AED"
PRIMARY_RGB = "rgb(124, 58, 237)"


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    config = {"v1": {"appearance": {"primary_color": PRIMARY, "theme": "light"}, "branding": {"display_name": "Hostile Co"},
                     "voice": {"enabled": True, "mode": "open_mic"}}}
    created = api_server.create_live_widget([allowed_site.domain], config)
    api_server.wait_public(created["id"], allowed_site.origin)
    return created


def one_working_launcher(page: Page) -> None:
    """Exactly one widget element and one launcher on the page, visible, styled, and it opens the panel."""
    expect(page.get_by_test_id("anyreach-launcher")).to_have_count(1)
    assert page.locator("anyreach-widget").count() == 1
    launcher = page.get_by_test_id("anyreach-launcher")
    expect(launcher).to_be_visible()
    assert launcher.evaluate("el => getComputedStyle(el).backgroundColor") == PRIMARY_RGB
    box = launcher.bounding_box()
    assert box and box["width"] >= 56 and box["height"] >= 56, box
    launcher.click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_visible()


def send(page: Page, text: str) -> Any:
    """Sends a message and answers the conversation start's response."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/conversations")) as started:
        page.get_by_test_id("anyreach-input").fill(text)
        page.get_by_test_id("anyreach-input").press("Enter")
    return started.value


def test_the_snippet_pasted_twice_makes_one_launcher(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/twice.html", copies=2))
    page.wait_for_load_state("networkidle")
    # And a third copy inserted later, as a tag manager would.
    page.evaluate(
        "([src, id]) => { const s = document.createElement('script'); s.src = src; s.dataset.widgetId = id; document.body.append(s); }",
        [f"{api_server.base}/embed.js", widget["id"]],
    )
    page.wait_for_load_state("networkidle")

    one_working_launcher(page)
    config_reads = [r for r in recorder.to(api_server.base) if "/public/v1/widgets/" in r.url]
    assert len(config_reads) == 1, [r.url for r in config_reads]
    assert recorder.errors == []


REQUIREJS = """<script>
  window.__defineCalls = [];
  window.define = function () { window.__defineCalls.push([].slice.call(arguments).map(String)); };
  window.define.amd = { jQuery: true };
  window.__pageDefine = window.define;
</script>"""


def test_a_page_with_requirejs_define_keeps_it_untouched(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/amd.html", head=REQUIREJS))

    one_working_launcher(page)
    assert send(page, "Hi from an AMD page").status == 201
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "unavailable")  # the LiveKit chunk ran

    assert page.evaluate("() => window.define === window.__pageDefine && window.define.amd.jQuery === true")
    assert page.evaluate("() => window.__defineCalls") == []
    assert page.evaluate("() => Object.keys(window).filter((k) => /anyreach/i.test(k))") == ["Anyreach"]
    assert recorder.errors == []


@pytest.mark.parametrize(
    "takeover",
    [
        "document.body.replaceWith(Object.assign(document.createElement('body'), { id: 'app' }))",
        "document.documentElement.replaceChildren(document.head, document.createElement('body'))",
        "document.querySelector('anyreach-widget').remove()",
    ],
    ids=["body-replaced", "html-children-replaced", "widget-removed"],
)
def test_a_single_page_app_taking_over_the_page_gets_the_launcher_back_once(
    takeover: str, page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/spa.html"))
    expect(page.get_by_test_id("anyreach-launcher")).to_be_visible()

    page.evaluate(f"() => {{ {takeover}; document.body.append(Object.assign(document.createElement('h1'), {{ textContent: 'SPA' }})); }}")
    page.wait_for_timeout(100)

    one_working_launcher(page)
    # The widget is the one the page had (same state), not a second start.
    assert page.evaluate("() => document.querySelectorAll('anyreach-widget').length") == 1
    assert recorder.errors == []


THROWING_STORAGE = """<script>
  for (const name of ['localStorage', 'sessionStorage']) {
    Object.defineProperty(window, name, { configurable: true, get() { throw new DOMException('blocked', 'SecurityError'); } });
  }
</script>"""


def test_storage_that_throws_leaves_the_widget_working(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/nostorage.html", head=THROWING_STORAGE))
    assert page.evaluate("() => { try { localStorage; return false } catch { return true } }")

    one_working_launcher(page)
    assert send(page, "No storage here").status == 201
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "unavailable")
    assert recorder.errors == []


def test_a_cross_origin_isolated_host_loads_the_loader_and_its_chunks(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any, api_server: ApiServer
) -> None:
    headers = {"Cross-Origin-Embedder-Policy": "require-corp", "Cross-Origin-Opener-Policy": "same-origin"}
    page.goto(embed_page(allowed_site, widget["id"], "/coep.html", headers=headers))
    assert page.evaluate("() => crossOriginIsolated")

    one_working_launcher(page)
    assert send(page, "Isolated hello").status == 201
    expect(page.get_by_test_id("anyreach-status")).to_have_attribute("data-state", "unavailable")
    ours = recorder.to(api_server.base)
    assert {r.url.rsplit("/", 1)[1].split("-")[0] for r in ours if "/embed" in r.url} == {"embed.js", "chat", "lk"}
    assert [r.url for r in recorder.failed if r.url.startswith(api_server.base)] == []
    assert recorder.errors == []


def test_a_page_that_forbids_the_microphone_gets_an_explained_mic_button_and_working_text(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/nomic.html", headers={"Permissions-Policy": "microphone=()"}))
    one_working_launcher(page)

    mic = page.get_by_test_id("anyreach-mic")
    expect(mic).to_be_visible()
    expect(mic).to_have_attribute("aria-disabled", "true")
    expect(mic).to_have_accessible_description("This site does not allow the microphone. You can type instead.")
    mic.focus()  # an aria-disabled button still takes focus and presses, and explains itself
    page.keyboard.press("Enter")
    note = page.locator('[data-testid="anyreach-message"][data-role="system"]')
    expect(note).to_have_text(["This site does not allow the microphone. You can type instead."])
    assert recorder.posts("/conversations") == [], "a press that cannot work starts nothing"
    assert watched(page)["getUserMedia"] == 0

    assert send(page, "Typing works").status == 201
    assert recorder.errors == []


HOSTILE_CSS = """<style>
* { all: unset !important; }
div { display: none !important; }
anyreach-widget { display: none !important; opacity: 0 !important; visibility: hidden !important;
  transform: scale(0) !important; clip-path: inset(50%) !important; position: static !important; }
html > * { filter: opacity(0) !important; }
button, textarea, input, form { display: none !important; }
html, body { font-size: 4px !important; color: red !important; }
body { transform: translateZ(0) !important; }
</style>"""


def test_hostile_host_css_does_not_restyle_or_hide_the_widget(
    page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite, embed_page: Any
) -> None:
    page.goto(embed_page(allowed_site, widget["id"], "/hostile.html", head=HOSTILE_CSS, title="Hostile site"))

    launcher = page.get_by_test_id("anyreach-launcher")
    expect(launcher).to_be_visible()
    box = launcher.bounding_box()
    assert box and box["width"] >= 56 and box["height"] >= 56, box
    assert box["x"] + box["width"] > 1024 - 60 and box["y"] + box["height"] > 800 - 60, f"not in the corner: {box}"
    host = page.locator("anyreach-widget")
    assert host.evaluate("el => { const s = getComputedStyle(el); return [s.display, s.opacity, s.visibility, s.transform, s.filter, s.position]; }") == [
        "block", "1", "visible", "none", "none", "fixed"]

    one_working_launcher(page)
    panel = page.get_by_test_id("anyreach-panel").bounding_box()
    assert panel and panel["width"] >= 300 and panel["height"] >= 300, panel
    assert page.get_by_test_id("anyreach-title").evaluate("el => getComputedStyle(el).fontSize") == "16px"
    assert send(page, "Still here?").status == 201
    page.get_by_test_id("anyreach-close").click()
    expect(page.get_by_test_id("anyreach-panel")).to_be_hidden()
    expect(launcher).to_be_visible()
    assert recorder.errors == []

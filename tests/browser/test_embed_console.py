"""The loader's console line tells the site owner why the widget does not show: one message per cause, each naming
what to do (issue 31)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import ApiServer, Recorder
from tests.browser.hostpages import HostSite
from tests.browser.test_embed_a11y import config, live

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def widget(api_server: ApiServer, allowed_site: HostSite) -> dict[str, Any]:
    return live(api_server, allowed_site, config())


def warning_for(page: Page, recorder: Recorder, url: str, widget_id: str) -> str:
    with page.expect_console_message(lambda m: m.type == "warning" and widget_id in m.text):
        page.goto(url)
    page.wait_for_load_state("networkidle")
    assert page.locator("anyreach-widget").count() == 0
    (line,) = recorder.warnings()
    return line


def test_an_origin_the_widget_does_not_allow(page: Page, recorder: Recorder, widget: dict[str, Any],
                                             other_site: HostSite, embed_page: Any) -> None:
    line = warning_for(page, recorder, embed_page(other_site, widget["id"], "/console-origin.html"), widget["id"])
    assert f"is not allowed on {other_site.origin}" in line and "allowed domains" in line


def test_a_widget_that_is_not_live(page: Page, recorder: Recorder, api_server: ApiServer, allowed_site: HostSite,
                                   embed_page: Any) -> None:
    widget = live(api_server, allowed_site, config())
    assert api_server.call("POST", f"/v1/widgets/{widget['id']}/unpublish").status_code == 200
    line = ""
    for _ in range(50):  # the public read model follows the unpublishing
        line = warning_for(page, recorder, embed_page(allowed_site, widget["id"], f"/console-dark-{_}.html"), widget["id"])
        if "is not live" in line:
            break
        recorder.console.clear()
    assert "is not live: publish the widget, and the agent version it pins" in line


def test_a_widget_that_does_not_exist(page: Page, recorder: Recorder, allowed_site: HostSite, embed_page: Any) -> None:
    missing = str(uuid.uuid4())
    line = warning_for(page, recorder, embed_page(allowed_site, missing, "/console-missing.html"), missing)
    assert "does not exist: check data-widget-id" in line


def test_a_network_error(page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite,
                         embed_page: Any, api_server: ApiServer) -> None:
    page.route(f"{api_server.base}/public/v1/widgets/**", lambda route: route.abort("connectionrefused"))
    line = warning_for(page, recorder, embed_page(allowed_site, widget["id"], "/console-network.html"), widget["id"])
    assert f"could not reach {api_server.base}" in line


def test_a_server_error(page: Page, recorder: Recorder, widget: dict[str, Any], allowed_site: HostSite,
                        embed_page: Any, api_server: ApiServer) -> None:
    problem = json.dumps({"type": "about:blank", "title": "Service unavailable", "status": 503, "code": "store_unavailable"})
    page.route(f"{api_server.base}/public/v1/widgets/**", lambda route: route.fulfill(
        status=503, body=problem, content_type="application/problem+json", headers={"Access-Control-Allow-Origin": "*"}))
    line = warning_for(page, recorder, embed_page(allowed_site, widget["id"], "/console-503.html"), widget["id"])
    assert "the service answered 503; try again later" in line

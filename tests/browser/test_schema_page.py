"""`/schema` renders the API reference offline: its UI is ours, pinned and served by the service (issue 31)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ApiServer

pytestmark = pytest.mark.browser


def test_the_api_reference_renders_with_every_other_host_unreachable(browser: Any, api_server: ApiServer) -> None:
    context = browser.new_context()
    elsewhere: list[str] = []

    def only_ours(route: Any) -> None:
        if route.request.url.startswith(api_server.base + "/") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_ours)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    try:
        page.goto(f"{api_server.base}/schema")
        expect(page.get_by_role("heading", name="Anyreach web widgets").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("/v1/agents").first).to_be_attached()  # the operations, read from our document
        assert elsewhere == [], f"the page asked for other hosts: {elsewhere}"
        assert not [c for c in console if "Content Security Policy" in c or "Refused" in c], console
    finally:
        context.close()

"""Why a widget is not live, in every widget answer: `live`, and when it is false each closed gate as a code
and a sentence (issue 31; docs/api.md, "Why a widget is not live"), on every wiring."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.api.conftest import Admin
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)


def codes(widget: dict[str, Any]) -> list[str] | None:
    reasons = widget.get("not_live_reasons")
    if reasons is not None:
        assert all(r["message"] and r["message"][-1] == "." for r in reasons), reasons
    return None if reasons is None else [r["code"] for r in reasons]


def listed(admin: Admin, widget_id: str) -> dict[str, Any]:
    """The widget as the list (a read model) shows it, once the list has it."""
    for _ in range(200):
        items = admin.call("GET", "/v1/widgets", params={"limit": 100}).json()["items"]
        found = next((w for w in items if w["id"] == widget_id), None)
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"widget {widget_id} never appeared in the list")


def test_a_live_widget_has_no_reasons(org_a: Admin) -> None:
    widget = org_a.widget(published=True)
    assert widget["live"] is True and codes(widget) is None
    assert codes(org_a.get_widget(widget["id"])) is None


def test_a_widget_pinned_to_an_unpublished_version_is_created_with_both_reasons(org_a: Admin) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    response = org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": version["id"]})
    assert response.status_code == 201, response.text
    widget = response.json()
    assert widget["live"] is False
    assert codes(widget) == ["widget_unpublished", "agent_version_unpublished"]


def test_an_unpublished_widget_on_a_published_version_says_only_that(org_a: Admin) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"], published=True)
    widget = org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": version["id"]}).json()
    assert codes(widget) == ["widget_unpublished"]


def test_unpublishing_the_pinned_version_is_the_reason_everywhere(org_a: Admin) -> None:
    widget = org_a.widget(published=True)
    response = org_a.call("POST", f"/v1/agents/{widget['agent_id']}/versions/{widget['agent_version_id']}/unpublish")
    assert response.status_code == 200, response.text
    record = org_a.get_widget(widget["id"])
    assert codes(record) == ["agent_version_unpublished"]
    for _ in range(200):  # the list has the published widget, and then the version's unpublishing
        row = listed(org_a, widget["id"])
        if row["version"] == record["version"] and row["live"] is False:
            break
        time.sleep(0.02)
    assert codes(row) == ["agent_version_unpublished"]


def test_a_deleted_widget_as_it_stood_says_deleted(org_a: Admin) -> None:
    widget = org_a.widget(published=True)
    assert org_a.call("DELETE", f"/v1/widgets/{widget['id']}").status_code == 204
    response = org_a.call("GET", f"/v1/widgets/{widget['id']}", params={"version": widget["version"] + 1})
    assert response.status_code == 200, response.text
    assert codes(response.json()) == ["widget_deleted"]


def test_the_list_gives_the_same_reasons_as_the_record(org_a: Admin) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"])
    widget = org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": version["id"]}).json()
    assert codes(listed(org_a, widget["id"])) == codes(widget) == ["widget_unpublished", "agent_version_unpublished"]

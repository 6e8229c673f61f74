"""HEAD wherever GET is, OPTIONS and 405 with an `Allow` that lists exactly the resource's methods, and a wait
for a position the store has not reached refused at once."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from application.store import EventStore
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import ALLOWED_HEADERS, live_widget

VARYING = {"date", "x-request-id"}


def documented_methods(client: TestClient[Litestar]) -> dict[str, set[str]]:
    document = client.get("/schema/openapi.json").json()
    return {path: {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")} for path, item in document["paths"].items()}


def concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)


@pytest.fixture
def ids(app: Litestar, org_a: Admin, client: TestClient[Litestar]) -> dict[str, str]:
    widget = live_widget(org_a, app, domains=["example.com"])
    endpoint = org_a.call("POST", "/v1/webhook-endpoints", json={"url": "https://hooks.example.com/", "events": ["*"]}).json()
    return {"widget_id": widget["id"], "agent_id": widget["agent_id"], "version_id": widget["agent_version_id"],
            "cid": "00000000-0000-4000-8000-000000000000", "form_id": "pre", "kid": "no-such-key", "endpoint_id": endpoint["id"],
            "conversation_id": "00000000-0000-4000-8000-000000000000", "external_id": "visitor-1",
            "message_id": "msg_" + "0" * 32}


def test_head_answers_what_get_answers_without_the_body(client: TestClient[Litestar], org_a: Admin, ids: dict[str, str]) -> None:
    paths = [path for path, methods in documented_methods(client).items() if "GET" in methods and path != "/v1/read-models/wait"]
    assert len(paths) >= 10
    for path in paths:
        url = concrete(path, ids)
        headers = {**org_a.headers, **(ALLOWED_HEADERS if path.startswith("/public/") else {})}
        got, head = client.get(url, headers=headers), client.head(url, headers=headers)
        assert head.status_code == got.status_code, f"HEAD {path}: {head.status_code}, GET: {got.status_code}"
        assert head.content == b"", f"HEAD {path} sent a body"
        same = lambda response: {k: v for k, v in response.headers.items() if k not in VARYING}  # noqa: E731
        if path != "/metrics":  # the metrics text changes between the two requests (it counts them)
            assert same(head) == same(got), f"HEAD {path}"


def test_options_lists_exactly_the_documented_methods(client: TestClient[Litestar], org_a: Admin, ids: dict[str, str]) -> None:
    for path, methods in documented_methods(client).items():
        headers = {**org_a.headers, **(ALLOWED_HEADERS if path.startswith("/public/") else {})}
        response = client.options(concrete(path, ids), headers=headers)
        assert response.status_code == 204, f"OPTIONS {path}: {response.status_code} {response.text}"
        expected = methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
        allow = {m.strip() for m in response.headers["allow"].split(",")}
        assert allow == expected, f"OPTIONS {path}: Allow {allow}, documented {expected}"


def test_a_public_preflight_keeps_its_cors_answer(client: TestClient[Litestar], ids: dict[str, str]) -> None:
    response = client.options(f"/public/v1/widgets/{ids['widget_id']}/conversations", headers=ALLOWED_HEADERS)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED_HEADERS["Origin"]
    assert set(response.headers["allow"].split(", ")) == {"OPTIONS", "POST"}
    refused = client.options(f"/public/v1/widgets/{ids['widget_id']}/conversations", headers={"Origin": "https://evil.example.net"})
    assert_problem(refused, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/v1/agents", {"OPTIONS", "POST"}),
    ("HEAD", "/v1/agents", {"OPTIONS", "POST"}),
    ("PUT", "/v1/widgets", {"GET", "HEAD", "OPTIONS", "POST"}),
    ("POST", "/healthz", {"GET", "HEAD", "OPTIONS"}),
])
def test_an_unsupported_method_is_a_405_problem_with_allow(
    client: TestClient[Litestar], org_a: Admin, method: str, path: str, allow: set[str]
) -> None:
    response = org_a.call(method, path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == allow
    if method != "HEAD":
        assert_problem(response, 405, "method_not_allowed")


def test_waiting_for_a_position_beyond_the_head_is_refused_at_once(org_a: Admin, store: EventStore) -> None:
    org_a.agent()
    head = store.recorder.max_notification_id() or 0
    assert head > 0
    reached = org_a.call("GET", "/v1/read-models/wait", params={"position": head, "timeout": 30})
    assert reached.status_code == 200, reached.text
    body: dict[str, Any] = assert_problem(
        org_a.call("GET", "/v1/read-models/wait", params={"position": head + 1, "timeout": 30}), 400, "position_ahead")
    assert [e["field"] for e in body["errors"]] == ["position"]
    assert store.recorder.max_notification_id() == head

"""The public config read and CORS preflight: what a page gets, for which origins, on both wirings."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import (
    ALLOWED,
    ALLOWED_HEADERS,
    CONFIG,
    REFUSED,
    REFUSED_HEADERS,
    eventually,
    live_widget,
    sync,
    until_dark,
    widget_path,
)
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)


def assert_no_cors(response: httpx.Response) -> None:
    """The page may not use the answer: no CORS for its origin. A refused config read is readable by any page
    (`*`, no credentials) so that the loader can say why it does not show; it holds no config."""
    assert response.headers.get("access-control-allow-origin") in (None, "*")
    assert "access-control-allow-methods" not in response.headers
    assert "access-control-allow-credentials" not in response.headers
    assert "etag" not in response.headers and "config" not in response.text


def assert_cors_for(response: httpx.Response, origin: str) -> None:
    assert response.headers["access-control-allow-origin"] == origin
    assert "origin" in [v.strip().lower() for v in response.headers["vary"].split(",")]


# --- the body and its headers ----------------------------------------------------------------


def test_config_read_answers_the_prebuilt_public_body_with_nothing_of_the_organization(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app, domains=["example.com", "*.shop.example.org", "secret-staging.example.net"])
    response = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"id", "config", "channel"}
    assert body["id"] == widget["id"]
    assert body["channel"] == "webrtc"
    assert body["config"] == widget["config"]
    assert set(body["config"]) == {"v1"}
    assert body["config"]["v1"]["forms"][0]["id"] == "pre"
    text = response.text
    for private in ("org_a", "organization", "domains", "secret-staging", "shop.example.org",
                    widget["agent_id"], widget["agent_version_id"], "published", "live"):
        assert private not in text, private


def test_config_read_answers_cors_for_exactly_the_requesting_origin(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app, domains=["example.com", "*.example.org"])
    for origin in (ALLOWED, "https://a.example.org", "https://a.b.example.org"):
        response = client.get(widget_path(widget["id"]), headers={"Origin": origin})
        assert response.status_code == 200, (origin, response.text)
        assert_cors_for(response, origin)


def test_config_read_is_cacheable_with_max_age_and_an_etag(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    response = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS)
    assert response.status_code == 200
    cache_control = response.headers["cache-control"]
    assert f"max-age={app.state.services.settings.public_max_age}" in cache_control
    assert "no-store" not in cache_control
    tag = response.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"') and len(tag) > 2


def test_config_read_answers_304_without_a_body_when_if_none_match_names_the_current_etag(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    tag = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).headers["etag"]
    response = client.get(widget_path(widget["id"]), headers={**ALLOWED_HEADERS, "If-None-Match": tag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag
    assert_cors_for(response, ALLOWED)
    stale = client.get(widget_path(widget["id"]), headers={**ALLOWED_HEADERS, "If-None-Match": '"stale-tag"'})
    assert stale.status_code == 200 and stale.json()["id"] == widget["id"]


def test_if_none_match_with_a_list_or_a_weak_tag_still_answers_304(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    tag = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).headers["etag"]
    for header in (f'"other", {tag}', f"W/{tag}", "*"):
        response = client.get(widget_path(widget["id"]), headers={**ALLOWED_HEADERS, "If-None-Match": header})
        assert response.status_code == 304, header


def test_if_none_match_from_a_refused_origin_is_still_403(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    tag = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).headers["etag"]
    response = client.get(widget_path(widget["id"]), headers={**REFUSED_HEADERS, "If-None-Match": tag})
    assert_problem(response, 403, "origin_not_allowed")
    assert_no_cors(response)


def test_a_config_change_changes_the_body_and_the_etag(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    first = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS)
    changed = org_a.call("PATCH", f"/v1/widgets/{widget['id']}/config", json={"v1": {"appearance": {"theme": "dark"}}})
    assert changed.status_code == 200, changed.text
    sync(app)

    def refreshed() -> bool:
        return client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).json()["config"]["v1"]["appearance"]["theme"] == "dark"

    eventually(refreshed, what="config change visible")
    second = client.get(widget_path(widget["id"]), headers={**ALLOWED_HEADERS, "If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]


# --- what is not live is not found -----------------------------------------------------------


def test_an_unknown_or_malformed_widget_id_is_404_for_every_origin(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    live_widget(org_a, app)
    for widget_id in (str(uuid.uuid4()), "not-a-uuid", "0", "%00", uuid.uuid4().hex.upper()[:30]):
        for headers in (ALLOWED_HEADERS, REFUSED_HEADERS, {}):
            response = client.get(widget_path(widget_id), headers=headers)
            assert_problem(response, 404, "not_found")
            assert_no_cors(response)


def test_an_unpublished_widget_is_404_even_for_its_own_origin(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = org_a.widget(published=False, domains=["example.com"])
    sync(app)
    response = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS)
    assert_problem(response, 404, "widget_not_live")  # not found, and says so: the loader tells the site owner
    assert_no_cors(response)


def test_a_widget_unpublished_after_being_live_goes_404(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
    assert org_a.call("POST", f"/v1/widgets/{widget['id']}/unpublish").status_code == 200
    sync(app)
    until_dark(client, widget["id"])
    assert_problem(client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS), 404, "widget_not_live")


def test_a_widget_whose_pinned_version_is_unpublished_goes_404(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
    response = org_a.call("POST", f"/v1/agents/{widget['agent_id']}/versions/{widget['agent_version_id']}/unpublish")
    assert response.status_code == 200, response.text
    sync(app)
    until_dark(client, widget["id"])
    response = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS)
    assert_problem(response, 404, "widget_not_live")
    assert_no_cors(response)


def test_a_deleted_widget_is_404(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
    assert org_a.call("DELETE", f"/v1/widgets/{widget['id']}").status_code == 204
    sync(app)
    until_dark(client, widget["id"])
    assert_problem(client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS), 404, "not_found")


def test_a_dark_widget_serves_again_once_repinned_to_a_published_version(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    draft = org_a.version(widget["agent_id"])
    refused = org_a.call("PUT", f"/v1/widgets/{widget['id']}/agent-version", json={"agent_version_id": draft["id"]})
    assert refused.status_code == 409, refused.text  # a published widget never pins a draft
    org_a.call("POST", f"/v1/agents/{widget['agent_id']}/versions/{widget['agent_version_id']}/unpublish")
    sync(app)
    until_dark(client, widget["id"])
    published = org_a.version(widget["agent_id"], published=True)
    assert org_a.call("PUT", f"/v1/widgets/{widget['id']}/agent-version", json={"agent_version_id": published["id"]}).status_code == 200
    sync(app)
    eventually(lambda: client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200, what="widget live again")


# --- origins --------------------------------------------------------------------------------


def test_a_refused_origin_is_403_origin_not_allowed_without_cors_headers(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    response = client.get(widget_path(widget["id"]), headers=REFUSED_HEADERS)
    body = assert_problem(response, 403, "origin_not_allowed")
    assert_no_cors(response)
    assert "etag" not in response.headers
    assert json.dumps(CONFIG["v1"]["forms"][0]["title"]) not in response.text
    assert body.get("errors") is None


def test_no_origin_and_no_referer_is_403_origin_required_without_cors_headers(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    response = client.get(widget_path(widget["id"]))
    assert_problem(response, 403, "origin_required")
    assert_no_cors(response)


def test_referer_stands_in_for_a_missing_origin_with_only_its_origin_part(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    response = client.get(widget_path(widget["id"]), headers={"Referer": "https://example.com/shop/cart?item=1"})
    assert response.status_code == 200, response.text
    assert_cors_for(response, ALLOWED)


@pytest.mark.parametrize("referer", [
    "https://evil.example.net/page?ref=https://example.com",
    "https://example.com.evil.example.net/",
    "https://evil.example.net/https://example.com/",
    "https://example.com@evil.example.net/",
    "http://example.com/page",
    "https://example.com\\@evil.example.net/",
])
def test_a_referer_whose_origin_is_not_allowed_is_refused(
    referer: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    response = client.get(widget_path(widget["id"]), headers={"Referer": referer})
    assert response.status_code == 403, (referer, response.text)
    assert_no_cors(response)


def test_referer_is_ignored_when_an_origin_is_present(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    for origin in (REFUSED, "null"):
        response = client.get(widget_path(widget["id"]), headers={"Origin": origin, "Referer": "https://example.com/page"})
        assert response.status_code == 403, (origin, response.text)
        assert_no_cors(response)


def test_referer_does_not_stand_in_on_conversation_calls(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    response = client.post(widget_path(widget["id"], "conversations"), json={}, headers={"Referer": "https://example.com/page"})
    assert_problem(response, 403, "origin_required")
    assert_no_cors(response)


# The widget's allowed domains for the HTTP origin table below.
TABLE_DOMAINS = [
    "example.com",
    "*.shop.example.org",
    "localhost:3000",
    "http://legacy.example.net",
    "203.0.113.7",
    "[2001:db8::1]",
    "app.example.io:8443",
]

# (Origin header, allowed?) through HTTP; tests/unit/test_origin_table.py holds the domain-level table.
HTTP_ORIGIN_TABLE: list[tuple[str, bool]] = [
    ("https://example.com", True),
    ("https://example.com:443", True),
    ("http://example.com", False),
    ("https://www.example.com", False),
    ("https://example.com:8443", False),
    ("https://example.com.evil.example.net", False),
    ("https://evilexample.com", False),
    ("https://example.co", False),
    ("https://example.com@evil.example.net", False),
    ("https://evil.example.net@example.com", False),
    ("https://example.com\\@evil.example.net", False),
    ("https://example.com.", False),
    ("https://example.com/", False),
    ("https://example.com/path", False),
    ("ftp://example.com", False),
    ("wss://example.com", False),
    ("null", False),
    ("", False),
    ("https://exämple.com", False),
    ("https://xn--exmple-cua.com", False),
    ("https://example.com, https://evil.example.net", False),
    ("https://a.shop.example.org", True),
    ("https://a.b.c.shop.example.org", True),
    ("https://shop.example.org", False),
    ("https://ashop.example.org", False),
    ("https://a.shop.example.org.evil.example.net", False),
    ("http://a.shop.example.org", False),
    ("http://localhost:3000", True),
    ("https://localhost:3000", True),
    ("http://LOCALHOST:3000", True),
    ("http://localhost", False),
    ("http://localhost:3001", False),
    ("http://localhost.:3000", False),
    ("http://sub.localhost:3000", False),
    ("http://127.0.0.1:3000", False),
    ("http://legacy.example.net", True),
    ("https://legacy.example.net", False),
    ("http://legacy.example.net:8080", False),
    ("https://203.0.113.7", True),
    ("http://203.0.113.7", True),
    ("http://203.0.113.7:8080", False),
    ("http://203.0.113.07", False),
    ("http://3405803783", False),
    ("http://0xcb.0.113.7", False),
    ("https://203.0.113.8", False),
    ("https://[2001:db8::1]", True),
    ("https://[2001:db8::2]", False),
    ("https://2001:db8::1", False),
    ("https://app.example.io:8443", True),
    ("https://app.example.io", False),
    ("https://app.example.io:443", False),
]


@pytest.fixture
def table_widget(org_a: Admin, app: Litestar) -> dict:
    return live_widget(org_a, app, domains=TABLE_DOMAINS)


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
@pytest.mark.parametrize(("origin", "allowed"), HTTP_ORIGIN_TABLE, ids=[repr(o) for o, _ in HTTP_ORIGIN_TABLE])
def test_http_origin_table(origin: str, allowed: bool, table_widget: dict, client: TestClient[Litestar]) -> None:
    header = origin.encode("utf-8")
    response = client.get(widget_path(table_widget["id"]), headers={"Origin": header})
    if allowed:
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"].lower() in (origin.lower(), origin.lower().removesuffix(":443"))
        assert "Origin" in response.headers["vary"]
    else:
        assert response.status_code == 403, response.text
        assert response.json()["code"] in ("origin_not_allowed", "origin_required")
        assert_no_cors(response)


@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_the_http_origin_table_holds_on_the_production_wiring_too(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app, domains=TABLE_DOMAINS)
    wrong = []
    for origin, allowed in HTTP_ORIGIN_TABLE:
        status = client.get(widget_path(widget["id"]), headers={"Origin": origin.encode("utf-8")}).status_code
        if status != (200 if allowed else 403):
            wrong.append((origin, status))
    assert wrong == []


def test_an_empty_domain_list_allows_no_origin(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    agent = org_a.agent()
    version = org_a.version(agent["id"], published=True)
    created = org_a.call("POST", "/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": version["id"], "domains": []})
    widget = created.json()
    assert org_a.call("POST", f"/v1/widgets/{widget['id']}/publish").status_code == 200
    sync(app)
    for origin in (ALLOWED, "http://localhost", "https://anything.test"):
        response = client.get(widget_path(widget["id"]), headers={"Origin": origin})
        assert_problem(response, 403, "origin_not_allowed")


def test_a_domains_change_takes_effect_on_the_public_read(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
    assert org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["other.example.org"]}).status_code == 200
    sync(app)
    eventually(lambda: client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 403, what="old origin refused")
    assert client.get(widget_path(widget["id"]), headers={"Origin": "https://other.example.org"}).status_code == 200


# --- preflight ------------------------------------------------------------------------------

PREFLIGHT_PATHS = ["", "conversations", "conversations/{cid}/resume", "conversations/{cid}/forms/pre",
                   "conversations/{cid}/feedback", "conversations/{cid}/end"]


def preflight(client: TestClient[Litestar], widget_id: str, rest: str, origin: str | None) -> httpx.Response:
    path = widget_path(widget_id, rest.format(cid=uuid.uuid4())) if rest else widget_path(widget_id)
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    if origin is not None:
        headers["Origin"] = origin
    return client.options(path, headers=headers)


@pytest.mark.parametrize("rest", PREFLIGHT_PATHS)
def test_preflight_from_an_allowed_origin_answers_cors_with_the_methods(
    rest: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    response = preflight(client, widget["id"], rest, ALLOWED)
    assert response.status_code in (200, 204), response.text
    assert_cors_for(response, ALLOWED)
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST"} <= methods
    assert "content-type" in response.headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize("rest", PREFLIGHT_PATHS)
def test_preflight_from_a_refused_or_missing_origin_gets_no_cors(
    rest: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    for origin in (REFUSED, "null", None, "https://example.com.evil.example.net"):
        response = preflight(client, widget["id"], rest, origin)
        assert response.status_code == 403, (origin, response.text)
        assert_no_cors(response)


def test_preflight_for_a_widget_that_is_not_live_gets_no_cors(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = org_a.widget(published=False)
    sync(app)
    for widget_id in (widget["id"], str(uuid.uuid4()), "nope"):
        response = preflight(client, widget_id, "conversations", ALLOWED)
        assert response.status_code == 404
        assert_no_cors(response)

"""The public config read's front (api/hot_path.py) answers exactly as Litestar does, and only when it may.

Each request is sent twice to one app: once with the front on, once with it off
(every request then goes through Litestar's routing, `MethodsFront`,
`RequestContextMiddleware` and `PublicWidgetController`). Status, headers (in
order), body, the request log line, the request metrics and the installation
counts must be the same, whatever the method, origin, `Referer`,
`If-None-Match`, `X-Request-Id` and widget id.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from api.app import create_app
from api.hot_path import PublicConfigFront
from api.middleware import HOT_ROUTE
from api.request_limits import HEADERS_LIMIT, URI_LIMIT
from infrastructure.settings import Settings
from tests.api.conftest import Admin, client_for
from tests.api.conftest import _started as started_listening
from tests.api.public_helpers import ALLOWED, REFUSED, eventually, live_widget, sync, widget_path

GENERATED_ID = re.compile(r"^req_[0-9a-f]{16}$")
ORIGINS = [ALLOWED, "https://shop.example.org", "https://a.b.shop.example.org", "http://example.com", "https://example.com:443",
           "HTTPS://EXAMPLE.COM", "https://example.com:8443", REFUSED, "null", "https://example.com/", "", "https://exa mple.com",
           "https://shop.example.org.evil.test", None]
REFERERS = [None, "https://example.com/pricing?x=1", "https://evil.example.net/page"]
REQUEST_IDS = [None, "trace-0123456789", "bad id!", "short"]


@pytest.fixture
def hot_settings(settings: Settings) -> Settings:
    # Request log lines at info, in JSON; entries cached for the whole test (no TTL expiry mid-test); counts
    # kept in the process for the whole test (a hand-over to the store mid-comparison would hide what was counted).
    return dataclasses.replace(settings, log_level="info", log_format="json", public_cache_ttl=600.0,
                               rate_config_reads="1000000/minute", installations_flush_interval=3600.0)


class LogLines(io.StringIO):
    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        return text


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every line the app logs from now on (its processors unchanged: JSON, request id, level, time)."""
    lines = LogLines()
    yield lines
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


@pytest.fixture
def hot_app(hot_settings: Settings, log_lines: LogLines) -> Litestar:
    app = create_app(hot_settings)  # configures logging; then its lines are sent to `log_lines`
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log_lines))
    return app


@pytest.fixture
def hot_client(hot_app: Litestar) -> Iterator[TestClient[Litestar]]:
    with client_for(hot_app) as client:
        client.blocking_portal.call(started_listening, hot_app)
        yield client


@pytest.fixture
def widgets(hot_client: TestClient[Litestar], hot_settings: Settings, hot_app: Litestar) -> dict[str, str]:
    """A live widget (exact and wildcard domains), an unpublished one, and an id that names nothing; the live one cached."""
    admin = Admin(hot_client, hot_settings, "org_a", "alice")
    live = live_widget(admin, hot_app, domains=["example.com", "*.shop.example.org"])
    hidden = admin.widget(published=False, domains=["example.com"])
    sync(hot_app)
    for widget_id in (live["id"], hidden["id"]):  # fill the reader's cache, as a first page view does
        hot_client.get(widget_path(widget_id), headers={"Origin": ALLOWED})
    return {"live": live["id"], "hidden": hidden["id"], "unknown": "0b7e6a5e-2c3f-4d1a-9e8b-5f4c3d2e1a0b"}


def front_of(app: Litestar) -> PublicConfigFront:
    front = app.front  # type: ignore[attr-defined]
    assert isinstance(front, PublicConfigFront)
    return front


def metric(method: str, status: int) -> float:
    return REGISTRY.get_sample_value("widgets_http_requests_total", {"route": HOT_ROUTE, "method": method, "status": str(status)}) or 0.0


def counts(app: Litestar) -> dict[tuple[str, ...], int]:
    """What this process counted and has not flushed: loads per (widget, origin, allowed), and per widget the day's loads."""
    found: dict[tuple[str, ...], int] = {}
    for widget_id, tally in app.state.services.installations.pending.items():
        for allowed, seen in ((True, tally.allowed), (False, tally.refused)):
            for origin, sighting in seen.items():
                found[(widget_id, origin, "allowed" if allowed else "refused")] = sighting.loads
        found[(widget_id, "day loads")] = sum(day[0] for day in tally.days.values())
        found[(widget_id, "day refused loads")] = sum(day[1] for day in tally.days.values())
    return found


def request_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "request":
            entry.pop("timestamp", None)
            entry.pop("duration_ms", None)
            if GENERATED_ID.match(entry.get("request_id", "")):
                entry["request_id"] = "generated"
            lines.append(entry)
    return lines


@dataclasses.dataclass
class Seen:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    logged: list[dict[str, Any]]
    metrics: float
    installations: dict[tuple[str, ...], int]


def observed(client: TestClient[Litestar], app: Litestar, log_lines: LogLines, method: str, path: str,
             headers: dict[str, str]) -> tuple[Seen, httpx.Response]:
    log_lines.take()
    front_of(app).flush_metrics()  # what it counted is handed to Prometheus every second; read it now
    before_counts = counts(app)
    before_metrics = {(m, s): metric(m, s) for m in ("GET", "OPTIONS") for s in (200, 204, 304, 403, 404, 429)}
    response = client.request(method, path, headers=headers)
    front_of(app).flush_metrics()
    after_counts = counts(app)
    delta_counts = {key: value - before_counts.get(key, 0) for key, value in after_counts.items() if value != before_counts.get(key, 0)}
    delta_metrics = sum(metric(m, s) - v for (m, s), v in before_metrics.items())
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
    raw = [(k, "generated" if k == "x-request-id" and GENERATED_ID.match(v) else v) for k, v in raw]
    return Seen(response.status_code, raw, response.content, request_lines(log_lines.take()), delta_metrics, delta_counts), response


def compare(client: TestClient[Litestar], app: Litestar, log_lines: LogLines, method: str, path: str,
            headers: dict[str, str]) -> tuple[Seen, bool]:
    """The request answered with the front on and off: the same in every respect. Returns it, and whether the front answered."""
    front = front_of(app)
    answered = front.answered
    front.enabled = True
    with_front, _ = observed(client, app, log_lines, method, path, headers)
    by_front = front.answered > answered
    front.enabled = False
    try:
        litestar, _ = observed(client, app, log_lines, method, path, headers)
    finally:
        front.enabled = True
    assert with_front == litestar, (method, path, headers)
    return with_front, by_front


def expected_by_front(method: str, widget: str, origin: str | None, path: str, live_id: str) -> bool:
    allowed = origin in {ALLOWED, "https://a.b.shop.example.org", "https://example.com:443",
                         "HTTPS://EXAMPLE.COM"}
    return method in {"GET", "HEAD", "OPTIONS"} and widget == "live" and path == widget_path(live_id) and allowed


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "HEAD", "OPTIONS"]),
    widget=st.sampled_from(["live", "live", "live", "hidden", "unknown", "upper", "slash"]),
    origin=st.sampled_from(ORIGINS),
    referer=st.sampled_from(REFERERS),
    if_none_match=st.sampled_from([None, "current", "weak", "*", '"0"', "list", "garbage"]),
    request_id=st.sampled_from(REQUEST_IDS),
)
def test_the_front_and_litestar_answer_alike(
    hot_client: TestClient[Litestar], hot_app: Litestar, widgets: dict[str, str], log_lines: LogLines,
    method: str, widget: str, origin: str | None, referer: str | None, if_none_match: str | None, request_id: str | None,
) -> None:
    live = widgets["live"]
    widget_id = {"upper": live.upper(), "slash": live}.get(widget) or widgets[widget]
    path = widget_path(widget_id) + ("/" if widget == "slash" else "")
    tag = hot_client.get(widget_path(live), headers={"Origin": ALLOWED}).headers["etag"]
    headers = {}
    if origin is not None:
        headers["Origin"] = origin
    if referer is not None:
        headers["Referer"] = referer
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    if if_none_match is not None:
        headers["If-None-Match"] = {"current": tag, "weak": f"W/{tag}", "list": f'"0", {tag}'}.get(if_none_match, if_none_match)
    seen, by_front = compare(hot_client, hot_app, log_lines, method, path, headers)
    assert by_front == expected_by_front(method, widget, origin, path, live), seen


def test_each_answer_of_the_front_is_what_the_page_needs(
    hot_client: TestClient[Litestar], hot_app: Litestar, widgets: dict[str, str], log_lines: LogLines
) -> None:
    path = widget_path(widgets["live"])
    ok, by_front = compare(hot_client, hot_app, log_lines, "GET", path, {"Origin": ALLOWED, "X-Request-Id": "trace-0123456789"})
    assert by_front and ok.status == 200
    assert [k for k, _ in ok.headers] == ["access-control-allow-origin", "vary", "etag", "cache-control", "content-length",
                                          "content-type", "x-request-id"]
    assert dict(ok.headers)["x-request-id"] == "trace-0123456789"
    assert ok.logged == [] and ok.metrics == 1  # a served config read: counted in the metrics, not logged
    assert ok.installations == {(widgets["live"], ALLOWED, "allowed"): 1, (widgets["live"], "day loads"): 1}
    tag = dict(ok.headers)["etag"]
    not_modified, by_front = compare(hot_client, hot_app, log_lines, "GET", path, {"Origin": ALLOWED, "If-None-Match": tag})
    assert by_front and not_modified.status == 304 and not_modified.body == b""
    assert not_modified.installations == ok.installations
    head, by_front = compare(hot_client, hot_app, log_lines, "HEAD", path, {"Origin": ALLOWED})
    assert by_front and head.status == 200 and head.body == b"" and dict(head.headers)["content-length"] == str(len(ok.body))
    preflight, by_front = compare(hot_client, hot_app, log_lines, "OPTIONS", path, {"Origin": ALLOWED, "Access-Control-Request-Method": "GET"})
    assert by_front and preflight.status == 204
    assert dict(preflight.headers)["allow"] == "GET, HEAD, OPTIONS"
    assert preflight.installations == {}  # a preflight is not a load
    assert preflight.logged == [] and preflight.metrics == 1  # a served preflight too: counted, not logged
    refused, by_front = compare(hot_client, hot_app, log_lines, "GET", path, {"Origin": REFUSED})
    assert not by_front and refused.status == 403
    assert refused.installations == {(widgets["live"], REFUSED, "refused"): 1, (widgets["live"], "day refused loads"): 1}
    assert [line["status"] for line in refused.logged] == [403]


def test_a_changed_widget_is_answered_with_its_new_config_and_etag(
    hot_client: TestClient[Litestar], hot_app: Litestar, hot_settings: Settings, widgets: dict[str, str],
    log_lines: LogLines,
) -> None:
    path = widget_path(widgets["live"])
    before = hot_client.get(path, headers={"Origin": ALLOWED})
    assert hot_client.get(path, headers={"Origin": "https://a.shop.example.org"}).status_code == 200
    admin = Admin(hot_client, hot_settings, "org_a", "alice")
    response = admin.call("PUT", f"/v1/widgets/{widgets['live']}/domains", json={"domains": ["example.com"]})
    assert response.status_code == 200, response.text
    sync(hot_app)

    def settled() -> bool:
        return hot_client.get(path, headers={"Origin": ALLOWED}).headers["etag"] != before.headers["etag"]

    eventually(settled, timeout=5, what="the changed widget served")
    after, by_front = compare(hot_client, hot_app, log_lines, "GET", path, {"Origin": ALLOWED})
    assert by_front and after.status == 200 and dict(after.headers)["etag"] != before.headers["etag"]
    gone, by_front = compare(hot_client, hot_app, log_lines, "GET", path, {"Origin": "https://a.shop.example.org"})
    assert not by_front and gone.status == 403  # the wildcard was removed: the front's old answer is not reused


@pytest.mark.parametrize("limit", [5, 150])
def test_the_rate_limit_allows_exactly_its_bound_with_the_front_on(
    settings: Settings, limit: int) -> None:
    tight = dataclasses.replace(settings, rate_config_reads=f"{limit}/minute", public_cache_ttl=600.0)
    # The config-read counter's windows are fixed minutes: start the burst where it cannot cross into the next one.
    into_minute = time.time() % 60
    if into_minute > 40:
        time.sleep(60.5 - into_minute)
    app = create_app(tight)
    with client_for(app) as client:
        client.blocking_portal.call(started_listening, app)
        admin = Admin(client, tight, "org_a", "alice")
        widget = live_widget(admin, app)
        path = widget_path(widget["id"])
        statuses = [client.get(path, headers={"Origin": ALLOWED}).status_code for _ in range(limit + 3)]
        assert statuses == [200] * limit + [429] * 3
        refused = client.get(path, headers={"Origin": ALLOWED})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.headers["access-control-allow-origin"] == ALLOWED
        front = front_of(app)
        assert front.answered >= (1 if tight.redis_url == "" or limit > 100 else 0)


@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_a_cache_miss_goes_to_litestar_which_fills_the_cache_for_the_front(
    hot_client: TestClient[Litestar], hot_app: Litestar, widgets: dict[str, str], log_lines: LogLines
) -> None:
    reader = hot_app.state.services.reader
    path = widget_path(widgets["live"])
    reader.cache.clear()  # as when the invalidation listener reconnects, or an entry outlives its TTL
    missed, by_front = compare(hot_client, hot_app, log_lines, "GET", path, {"Origin": ALLOWED})
    assert not by_front and missed.status == 200  # Litestar read Redis (and the second call found it cached)
    reader.cache.clear()
    front = front_of(hot_app)
    answered = front.answered
    assert hot_client.get(path, headers={"Origin": ALLOWED}).status_code == 200
    assert front.answered == answered  # that one went to Litestar, which cached the entry
    assert hot_client.get(path, headers={"Origin": ALLOWED}).status_code == 200
    assert front.answered == answered + 1


def test_requests_over_the_limits_are_refused_alike_and_near_them_answered_by_litestar(
    hot_client: TestClient[Litestar], hot_app: Litestar, widgets: dict[str, str], log_lines: LogLines
) -> None:
    """The front sums the header sizes in the loop that reads them and checks the query's length beside the path's;
    over either limit (api/request_limits.py) it leaves the request to Litestar's side, which refuses it."""
    path = widget_path(widgets["live"])
    padding = {"Origin": ALLOWED, "X-Padding": "p" * HEADERS_LIMIT}
    target = f"{path}?q={'a' * (URI_LIMIT - len(path) - 2)}"  # one byte over
    for method, url, headers, status in [("GET", target, {"Origin": ALLOWED}, 414), ("HEAD", target, {"Origin": ALLOWED}, 414),
                                         ("GET", path, padding, 431), ("HEAD", path, padding, 431),
                                         ("OPTIONS", path, {**padding, "Access-Control-Request-Method": "GET"}, 431)]:
        refused, by_front = compare(hot_client, hot_app, log_lines, method, url, headers)
        assert refused.status == status and not by_front, (method, status)
        assert dict(refused.headers)["content-type"] == "application/problem+json"
        assert [line["status"] for line in refused.logged] == [status] and "path" not in refused.logged[0]
    near, by_front = compare(hot_client, hot_app, log_lines, "GET", target[:-1], {"Origin": ALLOWED})  # at the limit
    assert near.status == 200 and not by_front
    short, by_front = compare(hot_client, hot_app, log_lines, "GET", f"{path}?q=1", {"Origin": ALLOWED})
    assert short.status == 200 and by_front

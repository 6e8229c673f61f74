"""Faults the outage tests (tests/integration/test_*_outage.py) leave out.

Redis restarted EMPTY, as a Redis without a volume comes back: the public API
never serves from the empty lookup what it no longer holds, never allows what
is not allowed, and follows changes made during and after the outage; the
service notices and rebuilds the lookup in Redis from the event store. And the
ADMIN API with PostgreSQL stopped: every admin call answers 503 with
Retry-After (never a 500 or a hang), nothing is half-written, and commands work
again once it returns. Both use private servers (tests/servers.py); the
machine's shared ones are never touched.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings
from projections.public_entry import decode_entry
from projections.public_views import RedisKeys
from tests.api.conftest import Admin, client_for
from tests.api.public_helpers import eventually, live_widget, position, sync, widget_path
from tests.conftest import PRODUCTION_SECRETS, admin_headers
from tests.reliability.conftest import record
from tests.servers import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

ORIGINS = ["https://example.com", "https://shop.example.org", "https://evil.example.net"]
REQUEST_BUDGET = 20.0  # seconds; with a 1 s connect timeout, a store call's two attempts take a few seconds


# ---- Redis restarted empty ----------------------------------------------------------------------


def expected(widget: dict[str, Any], origin: str) -> int:
    """What the public config read must answer, from the admin API's view of the widget (the truth)."""
    if not widget["live"]:
        return 404
    return 200 if origin.removeprefix("https://") in widget["domains"] else 403


def lookup_holds(client: redis.Redis, prefix: str, widgets: list[dict[str, Any]]) -> bool:
    """Redis holds a caught-up generation of the public lookup with every widget as it stands."""
    generation = client.get(RedisKeys(prefix, 0).current)
    if generation is None:
        return False
    keys = RedisKeys(prefix, int(generation))
    if client.get(keys.ready) != b"1":
        return False
    for widget in widgets:
        data = client.get(keys.widget(widget["id"]))
        if data is None:
            return False
        row = decode_entry(data).row
        if (row.live, row.domains, row.version) != (widget["live"], widget["domains"], widget["version"]):
            return False
    return True


def test_redis_restarted_empty_is_rebuilt_and_never_serves_what_is_no_longer_allowed(
    production_settings: Settings, private_redis: PrivateRedis
) -> None:
    settings = dataclasses.replace(production_settings, redis_url=private_redis.url)
    app = create_app(settings)
    with client_for(app) as client:  # fails the test on any 5xx
        admin = Admin(client, settings, "org_a", "alice")
        stays = live_widget(admin, app, domains=["example.com"])
        moves = live_widget(admin, app, domains=["example.com"])
        goes_dark = live_widget(admin, app, domains=["example.com"])
        comes_up = admin.widget(published=False, domains=["shop.example.org"])
        widgets = [stays, moves, goes_dark, comes_up]
        checks = 0

        def truth() -> list[dict[str, Any]]:
            return [admin.get_widget(w["id"]) for w in widgets]

        def assert_public_answers_the_truth(current: list[dict[str, Any]]) -> None:
            nonlocal checks
            for widget in current:
                for origin in ORIGINS:
                    response = client.get(widget_path(widget["id"]), headers={"Origin": origin})
                    want = expected(widget, origin)
                    assert response.status_code == want, (widget["id"], origin, response.status_code, want, response.text)
                    if want == 200:
                        assert response.headers["access-control-allow-origin"] == origin
                        assert response.json()["config"] == widget["config"]
                    else:  # readable by any page (so the loader says why), never granted to this origin
                        assert response.headers.get("access-control-allow-origin") == "*"
                    checks += 1

        current = truth()
        assert_public_answers_the_truth(current)  # read once: in the reader's cache when Redis goes

        private_redis.stop()
        assert admin.call("PUT", f"/v1/widgets/{moves['id']}/domains", json={"domains": ["shop.example.org"]}).status_code == 200
        assert admin.call("POST", f"/v1/widgets/{goes_dark['id']}/unpublish").status_code == 200
        agent_id, version_id = comes_up["agent_id"], comes_up["agent_version_id"]
        assert admin.call("POST", f"/v1/agents/{agent_id}/versions/{version_id}/publish").status_code == 200
        assert admin.call("POST", f"/v1/widgets/{comes_up['id']}/publish").status_code == 200
        current = truth()
        assert_public_answers_the_truth(current)  # from the event store while Redis is down

        for dump in Path(private_redis.datadir).glob("*.rdb"):
            dump.unlink()  # what Redis saved on shutdown: gone, as with a Redis that has no volume
        private_redis.start()  # with no data: no generation, no ready flag, no widget
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # across the restart and whatever the service does about it
            assert_public_answers_the_truth(current)
            time.sleep(0.05)

        # The service noticed that Redis lost everything and rebuilt the lookup there from the event store.
        stored = redis.Redis.from_url(private_redis.url)
        try:
            eventually(lambda: lookup_holds(stored, settings.redis_prefix, current), timeout=20,
                       what="the public lookup rebuilt in the empty Redis")
        finally:
            stored.close()
        readiness = client.get("/readyz").json()
        assert readiness["status"] == "ready" and readiness["projections"]["public_lookup"]["lag"] == 0, readiness
        assert_public_answers_the_truth(current)  # now from Redis again

        # Changes after the restart are followed too, and a refused start writes nothing.
        assert admin.call("POST", f"/v1/widgets/{stays['id']}/unpublish").status_code == 200
        eventually(lambda: client.get(widget_path(stays["id"]), headers={"Origin": ORIGINS[0]}).status_code == 404,
                   timeout=5, what="unpublished after the restart")
        assert_public_answers_the_truth(truth())
        before = position(app)
        refused = client.post(widget_path(moves["id"], "conversations"), headers={"Origin": "https://example.com"})
        assert refused.status_code == 403 and position(app) == before
        started = client.post(widget_path(moves["id"], "conversations"), headers={"Origin": "https://shop.example.org"})
        assert started.status_code == 201, started.text
    record("faults.redis_restarted_empty", 1)
    record("faults.redis_public_answers_checked", checks)


# ---- PostgreSQL stopped: the admin API ----------------------------------------------------------


def event_count(server: PrivatePostgres) -> int:
    with psycopg.connect(server.url) as conn:
        row = conn.execute("SELECT count(*) FROM public.widgets_events").fetchone()
        assert row is not None
        return int(row[0])


def admin_calls(ids: dict[str, str]) -> list[tuple[str, str, Any, dict[str, str]]]:
    """Every admin call (method, path, body, extra headers), on existing resources."""
    widget, agent = f"/v1/widgets/{ids['widget_id']}", f"/v1/agents/{ids['agent_id']}"
    return [
        ("POST", "/v1/agents", {"name": "During the outage"}, {"Idempotency-Key": "outage-agent"}),
        ("GET", agent, None, {}),
        ("POST", f"{agent}/versions", {"label": "outage"}, {}),
        ("POST", f"{agent}/versions/{ids['draft_version_id']}/publish", None, {}),
        ("POST", f"{agent}/versions/{ids['version_id']}/unpublish", None, {"If-Match": '"3"'}),
        ("POST", "/v1/widgets", {"agent_id": ids["agent_id"], "agent_version_id": ids["version_id"]}, {}),
        ("GET", "/v1/widgets", None, {}),
        ("GET", widget, None, {}),
        ("GET", f"{widget}?version=1", None, {}),
        ("GET", f"{widget}/history", None, {}),
        ("GET", f"{widget}/conversations", None, {}),
        ("GET", "/v1/audit/events", None, {}),
        ("PUT", f"{widget}/domains", {"domains": ["outage.example.com"]}, {"If-Match": '"2"'}),
        ("PUT", f"{widget}/agent-version", {"agent_version_id": ids["draft_version_id"]}, {}),
        ("PUT", f"{widget}/config", {"v1": {"locale": "de"}}, {}),
        ("PATCH", f"{widget}/config", {"v1": {"locale": "fr"}}, {}),
        ("POST", f"{widget}/publish", None, {}),
        ("POST", f"{widget}/unpublish", None, {}),
        ("DELETE", widget, None, {}),
    ]


def assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json"), what
    body = response.json()
    assert body["code"] == "store_unavailable" and body["status"] == 503, what
    assert int(response.headers["retry-after"]) >= 1, what
    text = response.text.lower()
    assert "traceback" not in text and "psycopg" not in text and "select " not in text and "insert " not in text, what


def test_admin_calls_answer_503_with_retry_after_while_postgres_is_down_and_half_write_nothing(
    tmp_path: Path, private_postgres: PrivatePostgres, redis_server_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1 s instead of the service's 2 s: a call whose attempts all time out answers sooner
    monkeypatch.setenv("WIDGETS_POSTGRES_CONNECT_TIMEOUT", "1")
    settings = Settings(
        data_dir=str(tmp_path / "var"), database_url=private_postgres.url, redis_url=redis_server_url,
        redis_prefix=redis_prefix, projections="inprocess", startup_timeout=10, log_format="json", log_level="warning",
        **PRODUCTION_SECRETS,
    )
    app = create_app(settings)
    with TestClient(app) as client:  # 503 is the expected answer here; each call asserts it is never a 500
        admin = Admin(client, settings, "org_a", "alice")
        widget = live_widget(admin, app, domains=["example.com"])
        draft_version = admin.version(widget["agent_id"])
        ids = {"widget_id": widget["id"], "agent_id": widget["agent_id"], "version_id": widget["agent_version_id"],
               "draft_version_id": draft_version["id"]}
        sync(app)
        stored = event_count(private_postgres)
        headers = admin_headers(settings, "org_a", "alice")

        private_postgres.stop()
        try:
            def call(spec: tuple[str, str, Any, dict[str, str]]) -> tuple[httpx.Response, float]:
                method, path, body, extra = spec
                began = time.monotonic()
                response = TestClient(app).request(method, path, json=body, headers={**headers, **extra})
                return response, time.monotonic() - began

            calls = admin_calls(ids)
            with ThreadPoolExecutor(max_workers=len(calls)) as pool:  # at once: each takes the store's full retry time
                answers = list(pool.map(call, calls))
            for (method, path, _, _), (response, elapsed) in zip(calls, answers, strict=True):
                assert_unavailable(response, f"{method} {path}")
                assert elapsed < REQUEST_BUDGET, f"{method} {path} answered after {elapsed:.1f}s"
        finally:
            private_postgres.start()
        assert event_count(private_postgres) == stored, "a command refused with 503 left an event behind"

        # Back: the same commands work, each writing what it should, and the retried create creates once.
        eventually(lambda: client.get(f"/v1/widgets/{widget['id']}", headers=headers).status_code == 200,
                   timeout=60, what="admin API back after PostgreSQL returned")
        response = client.put(f"/v1/widgets/{widget['id']}/domains", json={"domains": ["after.example.com"]}, headers=headers)
        assert response.status_code == 200 and response.json()["version"] == widget["version"] + 1, response.text
        created = [client.post("/v1/agents", json={"name": "During the outage"}, headers={**headers, "Idempotency-Key": "outage-agent"})
                   for _ in range(2)]
        assert [r.status_code for r in created] == [201, 201] and created[0].json() == created[1].json()
        assert event_count(private_postgres) == stored + 2
    record("faults.postgres_stopped", 1)
    record("faults.admin_calls_answered_503", len(calls))

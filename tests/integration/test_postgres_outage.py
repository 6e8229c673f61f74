"""PostgreSQL goes down under the production wiring: config reads go on from Redis, writes answer 503.

A private PostgreSQL cluster (tests/servers.py, run as the postgres user) on its
own port is stopped and restarted by the test; the machine's shared server is
never touched. While it is down: the public config read answers from Redis, a
conversation start or any conversation call answers 503 with Retry-After (never
500, never a hang), and nothing is half-written. After it returns, starts work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin
from tests.api.public_helpers import (
    ALLOWED,
    ALLOWED_HEADERS,
    REFUSED_HEADERS,
    conversation_call,
    eventually,
    live_widget,
    sync,
    verify_grant,
    widget_path,
)
from tests.conftest import PRODUCTION_SECRETS
from tests.servers import PrivatePostgres

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
SKIPPED_WIRINGS = {
    "embedded": "embedded has no PostgreSQL to stop",
    "production": "it stops a PostgreSQL of its own (tests/servers.py), under the production wiring built on it here",
    "managed": "not yet: it would need a PgBouncer and a Redis Cluster in front of the private PostgreSQL it stops, and "
               "what PgBouncer answers while its server is down (it queues clients up to query_wait_timeout) is still "
               "to be examined; left open in issue 28's report",
}
# A store call makes two attempts (infrastructure/pg_recorder.py), each waiting up to the pool's connect timeout
# (2 s, infrastructure/eventstore.py): much longer than REQUEST_BUDGET is a bug. The functional tests shorten the
# timeout to 1 s through the library's application-prefixed setting, and allow FAST_FAIL_BUDGET for a whole call.
REQUEST_BUDGET = 12.0  # seconds
FAST_FAIL_BUDGET = 20.0


@pytest.fixture
def outage_settings(tmp_path: Path, private_postgres: PrivatePostgres, redis_server_url: str, redis_prefix: str) -> Settings:
    return Settings(
        data_dir=str(tmp_path / "var"),
        database_url=private_postgres.url,
        database_schema="public",
        redis_url=redis_server_url,
        redis_prefix=redis_prefix,
        projections="inprocess",
        startup_timeout=10,
        log_format="json",
        log_level="warning",
        **PRODUCTION_SECRETS,
    )


@pytest.fixture
def app(outage_settings: Settings) -> Litestar:
    return create_app(outage_settings)


@pytest.fixture
def client(app: Litestar, private_postgres: PrivatePostgres) -> Iterator[TestClient[Litestar]]:
    with TestClient(app) as client:  # 503 is expected here; 500 is asserted against in each call
        yield client
        if not _listening(private_postgres):
            private_postgres.start()  # let the app's shutdown close its pools against a live server


def _listening(server: PrivatePostgres) -> bool:
    try:
        psycopg.connect(server.url, connect_timeout=1).close()
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def admin(client: TestClient[Litestar], outage_settings: Settings) -> Admin:
    return Admin(client, outage_settings, "org_a", "alice")


def event_count(server: PrivatePostgres) -> int:
    with psycopg.connect(server.url) as conn:
        return conn.execute("SELECT count(*) FROM public.widgets_events").fetchone()[0]


@pytest.fixture
def fast_failing_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIDGETS_POSTGRES_CONNECT_TIMEOUT", "1")


def timed(call: Any, *args: Any, budget: float = FAST_FAIL_BUDGET, **kwargs: Any) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = call(*args, **kwargs)
    elapsed = time.monotonic() - began
    assert response.status_code < 500 or response.status_code == 503, f"{response.status_code}: {response.text}"
    assert elapsed < budget, f"{response.request.method} {response.request.url} took {elapsed:.1f}s"
    return response, elapsed


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "store_unavailable" and body["status"] == 503
    assert int(response.headers["retry-after"]) >= 1
    text = response.text.lower()
    assert "traceback" not in text and "psycopg" not in text and "select " not in text and "insert " not in text


def start(client: TestClient[Litestar], widget_id: str, headers: dict[str, str] = ALLOWED_HEADERS,
          budget: float = FAST_FAIL_BUDGET) -> tuple[httpx.Response, float]:
    return timed(client.post, widget_path(widget_id, "conversations"), json={"visitor": {"name": "Ann"}}, headers=headers,
                 budget=budget)


@pytest.mark.usefixtures("fast_failing_store")
def test_config_reads_go_on_from_redis_and_starts_answer_503_while_postgres_is_down(
    admin: Admin, app: Litestar, client: TestClient[Litestar], private_postgres: PrivatePostgres, outage_settings: Settings
) -> None:
    cached = live_widget(admin, app)
    uncached = live_widget(admin, app)  # never read before the outage: Redis answers, not the process cache
    assert client.get(widget_path(cached["id"]), headers=ALLOWED_HEADERS).status_code == 200
    response = client.post(widget_path(cached["id"], "conversations"), headers=ALLOWED_HEADERS)
    assert response.status_code == 201, response.text
    grant = response.json()
    sync(app)
    count = event_count(private_postgres)

    private_postgres.stop()
    for widget in (cached, uncached):
        response, _ = timed(client.get, widget_path(widget["id"]), headers=ALLOWED_HEADERS)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == widget["id"]
        assert response.headers["access-control-allow-origin"] == ALLOWED
        refused, _ = timed(client.get, widget_path(widget["id"]), headers=REFUSED_HEADERS)
        assert refused.status_code == 403 and refused.headers.get("access-control-allow-origin") == "*"  # readable, not granted
    unknown, _ = timed(client.get, widget_path("5b3a4a9e-0000-4000-8000-000000000000"), headers=ALLOWED_HEADERS)
    assert unknown.status_code == 404
    preflight, _ = timed(client.options, widget_path(uncached["id"], "conversations"),
                         headers={**ALLOWED_HEADERS, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204

    response, _ = start(client, uncached["id"])
    assert_unavailable(response)
    refused, _ = start(client, uncached["id"], REFUSED_HEADERS)
    assert refused.status_code == 403, "an origin check needs no event store"
    # Every conversation call loads the conversation from the event store; two stand for all four here.
    for action, body in (("resume", {"resume_token": grant["resume_token"]}), ("end", {"resume_token": grant["resume_token"]})):
        response, _ = timed(conversation_call, client, cached["id"], grant["conversation_id"], action, body)
        assert_unavailable(response)

    private_postgres.start()
    assert event_count(private_postgres) == count, "a start refused with 503 left an event behind"

    def starts_again() -> bool:
        response, _ = start(client, uncached["id"])
        return response.status_code == 201

    # The store's connection pool reconnects with a growing backoff, so the first starts after the restart may still
    # answer 503 for a while (about as long as the outage lasted: reported, not asserted tighter here).
    eventually(starts_again, timeout=60, what="starts after PostgreSQL returned")
    assert event_count(private_postgres) == count + 1
    response, _ = start(client, cached["id"])
    assert response.status_code == 201
    assert verify_grant(outage_settings, response.json()["livekit"]["token"]).video.room == response.json()["livekit"]["room"]
    resumed, _ = timed(conversation_call, client, cached["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert resumed.status_code == 200, resumed.text


def test_a_start_during_the_outage_answers_503_within_the_connect_timeout(
    admin: Admin, app: Litestar, client: TestClient[Litestar], private_postgres: PrivatePostgres
) -> None:
    widget = live_widget(admin, app)
    private_postgres.stop()
    began = time.monotonic()
    response = client.post(widget_path(widget["id"], "conversations"), headers=ALLOWED_HEADERS)
    elapsed = time.monotonic() - began
    assert_unavailable(response)
    assert elapsed < REQUEST_BUDGET, f"503 after {elapsed:.1f}s"


@pytest.mark.usefixtures("fast_failing_store")
def test_read_models_catch_up_after_postgres_returns(
    admin: Admin, app: Litestar, client: TestClient[Litestar], private_postgres: PrivatePostgres
) -> None:
    live_widget(admin, app)
    private_postgres.stop()
    time.sleep(3)  # longer than the runners' safety wake
    private_postgres.start()
    eventually(lambda: admin.call("GET", "/v1/widgets").status_code == 200, timeout=20, what="admin API back")
    widget = admin.widget(published=True, domains=["example.com"])
    services = app.state.services
    assert services.read_models.wait(services.store.recorder.max_notification_id(), 10), services.read_models.positions()
    assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200

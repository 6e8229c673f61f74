"""Redis goes down under the production wiring: the public API keeps answering correctly from the event store.

A private Redis on its own port (tests/servers.py) is stopped and restarted by the
test; the machine's shared Redis is never touched. While it is down, config reads,
preflights and conversation calls answer what they would answer with Redis up:
never a 5xx, and never something more permissive. The private Redis saves
on shutdown, so it comes back holding the lookup as it stood before the outage:
stale until the projection catches up.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings
from projections.public_views import RedisKeys
from tests.api.conftest import Admin, client_for
from tests.api.public_helpers import (
    ALLOWED,
    ALLOWED_HEADERS,
    REFUSED_HEADERS,
    conversation_call,
    eventually,
    live_widget,
    position,
    sync,
    verify_grant,
    widget_path,
)
from tests.servers import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
SKIPPED_WIRINGS = {
    "embedded": "embedded has no Redis to stop",
    "production": "it stops a Redis of its own (tests/servers.py), under the production wiring built on it here",
    "managed": "a Redis Cluster does not go down as one Redis does: a primary dying while replicas take over is "
               "tests/integration/test_redis_cluster.py",
}
REQUEST_BUDGET = 10.0  # seconds: a request that takes longer while a store is down is a bug


@pytest.fixture
def outage_settings(production_settings: Settings, private_redis: PrivateRedis) -> Settings:
    return dataclasses.replace(production_settings, redis_url=private_redis.url)


@pytest.fixture
def app(outage_settings: Settings) -> Litestar:
    return create_app(outage_settings)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with client_for(app) as client:  # fails the test on any 5xx
        yield client


@pytest.fixture
def admin(client: TestClient[Litestar], outage_settings: Settings) -> Admin:
    return Admin(client, outage_settings, "org_a", "alice")


def timed(call: Any, *args: Any, **kwargs: Any) -> httpx.Response:
    began = time.monotonic()
    response = call(*args, **kwargs)
    elapsed = time.monotonic() - began
    assert elapsed < REQUEST_BUDGET, f"{response.request.method} {response.request.url} took {elapsed:.1f}s"
    return response


def get(client: TestClient[Litestar], widget_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return timed(client.get, widget_path(widget_id), headers=ALLOWED_HEADERS if headers is None else headers)


def post(client: TestClient[Litestar], path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return timed(client.post, path, json=body, headers=ALLOWED_HEADERS if headers is None else headers)


class World:
    """Widgets in every state, projected into Redis before it goes down."""

    def __init__(self, admin: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
        self.read_before = live_widget(admin, app)  # in the reader's cache when Redis stops
        self.unread = live_widget(admin, app, domains=["example.com", "*.example.org"])  # never read before the outage
        self.draft = admin.widget(published=False, domains=["example.com"])
        self.dark_version = live_widget(admin, app)
        response = admin.call("POST", f"/v1/agents/{self.dark_version['agent_id']}/versions/{self.dark_version['agent_version_id']}/unpublish")
        assert response.status_code == 200, response.text
        sync(app)
        assert get(client, self.read_before["id"]).status_code == 200
        start = post(client, widget_path(self.read_before["id"], "conversations"))
        assert start.status_code == 201, start.text
        self.grant = start.json()


def assert_refused(response: httpx.Response, status: int, code: str | None = None, *, origin_checked: bool = False) -> None:
    """A problem answer; without CORS unless the widget allowed the origin before refusing something else."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if origin_checked:
        assert response.headers.get("access-control-allow-origin") == ALLOWED
    elif response.request.method == "GET" and response.request.url.path.count("/") == 4:  # the config read
        assert response.headers.get("access-control-allow-origin") == "*"  # readable by any page, granted to none
    else:
        assert "access-control-allow-origin" not in response.headers
    if code is not None:
        assert response.json()["code"] == code


def assert_answers_like_with_redis_up(world: World, client: TestClient[Litestar], settings: Settings, app: Litestar) -> None:
    for widget in (world.read_before, world.unread):
        response = get(client, widget["id"])
        assert response.status_code == 200, response.text
        assert response.json()["id"] == widget["id"]
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert_refused(get(client, widget["id"], REFUSED_HEADERS), 403, "origin_not_allowed")
        assert_refused(get(client, widget["id"], {}), 403, "origin_required")
        assert_refused(get(client, widget["id"], {"Origin": "http://example.com"}), 403, "origin_not_allowed")
    assert get(client, world.unread["id"], {"Origin": "https://a.b.example.org"}).status_code == 200
    assert_refused(get(client, world.unread["id"], {"Origin": "https://example.org"}), 403, "origin_not_allowed")
    for widget_id in (world.draft["id"], world.dark_version["id"]):  # known to the read model, and not live
        assert_refused(get(client, widget_id), 404, "widget_not_live")
    for widget_id in ("5b3a4a9e-0000-4000-8000-000000000000", "nope"):
        assert_refused(get(client, widget_id), 404, "not_found")

    preflight = timed(client.options, widget_path(world.unread["id"], "conversations"),
                      headers={**ALLOWED_HEADERS, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == ALLOWED
    refused = timed(client.options, widget_path(world.unread["id"], "conversations"),
                    headers={**REFUSED_HEADERS, "Access-Control-Request-Method": "POST"})
    assert_refused(refused, 403)

    before = position(app)
    assert_refused(post(client, widget_path(world.unread["id"], "conversations"), headers=REFUSED_HEADERS), 403, "origin_not_allowed")
    assert_refused(post(client, widget_path(world.draft["id"], "conversations")), 404, "widget_not_live")
    assert_refused(post(client, widget_path(world.dark_version["id"], "conversations")), 404, "widget_not_live")
    assert position(app) == before, "a refused start wrote an event"

    started = post(client, widget_path(world.unread["id"], "conversations"), {"visitor": {"name": "Ann"}})
    assert started.status_code == 201, started.text
    claims = verify_grant(settings, started.json()["livekit"]["token"])
    assert claims.video.room == started.json()["livekit"]["room"]
    resumed = conversation_call(client, world.read_before["id"], world.grant["conversation_id"], "resume",
                                {"resume_token": world.grant["resume_token"]})
    assert resumed.status_code == 200, resumed.text
    world.grant = {**world.grant, "resume_token": resumed.json()["resume_token"]}  # the resume retired the one it was given
    wrong = conversation_call(client, world.read_before["id"], world.grant["conversation_id"], "resume", {"resume_token": "wrong"})
    assert_refused(wrong, 404, "not_found", origin_checked=True)


def test_the_public_api_answers_correctly_while_redis_is_down_and_after_it_restarts(
    admin: Admin, app: Litestar, client: TestClient[Litestar], outage_settings: Settings, private_redis: PrivateRedis
) -> None:
    world = World(admin, app, client)
    private_redis.stop()
    assert_answers_like_with_redis_up(world, client, outage_settings, app)
    private_redis.start()
    assert_answers_like_with_redis_up(world, client, outage_settings, app)


def go_dark_while_redis_is_down(admin: Admin, app: Litestar, client: TestClient[Litestar], private_redis: PrivateRedis) -> World:
    """Redis stops; one widget is unpublished and another's domains change while it is down."""
    world = World(admin, app, client)
    private_redis.stop()
    assert get(client, world.unread["id"]).status_code == 200
    assert admin.call("POST", f"/v1/widgets/{world.read_before['id']}/unpublish").status_code == 200
    assert admin.call("PUT", f"/v1/widgets/{world.unread['id']}/domains", json={"domains": ["other.example.net"]}).status_code == 200
    return world


def assert_dark_changes_hold(world: World, client: TestClient[Litestar]) -> None:
    assert_refused(get(client, world.read_before["id"]), 404, "widget_not_live")
    assert_refused(get(client, world.unread["id"]), 403, "origin_not_allowed")
    assert get(client, world.unread["id"], {"Origin": "https://other.example.net"}).status_code == 200


def test_a_widget_that_goes_dark_while_redis_is_down_is_refused_at_once(
    admin: Admin, app: Litestar, client: TestClient[Litestar], private_redis: PrivateRedis
) -> None:
    world = go_dark_while_redis_is_down(admin, app, client, private_redis)
    # The reader dropped its cache when it lost Redis, so the event store answers at once.
    eventually(lambda: get(client, world.read_before["id"]).status_code == 404, timeout=3, what="unpublished widget refused")
    before = position(app)
    assert_dark_changes_hold(world, client)
    assert_refused(post(client, widget_path(world.read_before["id"], "conversations")), 404, "widget_not_live")
    assert_refused(post(client, widget_path(world.unread["id"], "conversations")), 403, "origin_not_allowed")
    assert position(app) == before


def test_changes_made_while_redis_was_down_hold_after_it_restarts_with_its_old_data(
    admin: Admin, app: Litestar, client: TestClient[Litestar], private_redis: PrivateRedis
) -> None:
    world = go_dark_while_redis_is_down(admin, app, client, private_redis)
    private_redis.start()  # the private Redis saves on shutdown: it comes back with the pre-outage lookup
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # across the restart and the projection's catch-up, never the stale answer
        assert_dark_changes_hold(world, client)
        time.sleep(0.1)


def test_the_public_lookup_catches_up_in_redis_after_it_restarts(
    admin: Admin, app: Litestar, client: TestClient[Litestar], private_redis: PrivateRedis, outage_settings: Settings
) -> None:
    world = World(admin, app, client)
    private_redis.stop()
    draft = world.draft
    assert admin.call("POST", f"/v1/agents/{draft['agent_id']}/versions/{draft['agent_version_id']}/publish").status_code == 200
    assert admin.call("POST", f"/v1/widgets/{draft['id']}/publish").status_code == 200
    private_redis.start()
    services = app.state.services
    assert services.read_models.wait(position(app), 10), f"read models stuck at {services.read_models.positions()}"
    stored = redis.Redis.from_url(private_redis.url)
    try:
        assert stored.exists(RedisKeys(outage_settings.redis_prefix, 1).widget(world.draft["id"])), "Redis never got the new widget"
    finally:
        stored.close()
    assert get(client, world.draft["id"]).status_code == 200
    readiness = timed(client.get, "/readyz")
    assert readiness.status_code == 200, readiness.text

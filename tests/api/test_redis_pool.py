"""The public reader's Redis pool under more concurrent reads than it has connections.

`redis.asyncio.ConnectionPool(max_connections=N)` raises `MaxConnectionsError`
when an N+1th command wants a connection (LIBRARIES.md). The production
wiring is therefore tested with a pool of 2 and the in-process cache off
(size 0, TTL 0), so that every one of 64 concurrent public config reads needs
Redis at the same moment. Every answer must be a 200 with the widget's body.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin, client_for
from tests.api.public_helpers import ALLOWED_HEADERS, live_widget, widget_path

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

POOL = 2
CONCURRENT = 64


class InFlight:
    """Wraps an async callable and records how many of its calls were pending at once."""

    def __init__(self, target: Callable[..., Awaitable[Any]]) -> None:
        self.target = target
        self.calls = self.now = self.peak = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.target(*args, **kwargs)
        finally:
            self.now -= 1


@pytest.fixture
def pool_settings(production_settings: Settings) -> Settings:
    # No in-process cache: every read is a Redis GET. Config reads are not rate limited here.
    return dataclasses.replace(
        production_settings,
        redis_max_connections=POOL,
        public_cache_size=0,
        public_cache_ttl=0.0,
        rate_config_reads="1000000/minute",
    )


def test_more_concurrent_public_reads_than_redis_connections_all_answer_200(pool_settings: Settings) -> None:
    app = create_app(pool_settings)
    with client_for(app) as client:
        admin = Admin(client, pool_settings, "org_a", "alice")
        widget = live_widget(admin, app, domains=["example.com"])
        path = widget_path(widget["id"])
        first = client.get(path, headers=ALLOWED_HEADERS)
        assert first.status_code == 200, first.text
        expected = first.content

        reader = app.state.services.reader
        assert reader.cache.size == 0, "the in-process cache must be off, so that every read needs Redis"
        gets = InFlight(reader.client.get)
        reader.client.get = gets  # type: ignore[method-assign]
        fallbacks = InFlight(reader.fallback)
        reader.fallback = fallbacks
        reads = InFlight(reader.get)
        reader.get = reads  # type: ignore[method-assign]

        async def burst() -> list[httpx.Response]:
            # On the loop that runs the app (the TestClient's portal), where the reader's pool lives.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as concurrent:
                return await asyncio.gather(*(concurrent.get(path, headers=ALLOWED_HEADERS) for _ in range(CONCURRENT)))

        responses = client.blocking_portal.call(burst)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * CONCURRENT, f"statuses: {statuses}"
    assert all(r.content == expected for r in responses), "every answer carries the widget's public body"
    assert all(r.headers["access-control-allow-origin"] == ALLOWED_HEADERS["Origin"] for r in responses)
    # The test means something only if the reads really overlapped, far beyond the pool's size.
    print(f"\nreads {reads.calls} peak {reads.peak}; Redis GETs: {gets.calls}, at most {gets.peak} at once; event-store fallbacks: {fallbacks.calls}")
    assert reads.peak > POOL * 10, f"only {reads.peak} public reads were in flight at once"

"""The public reader's Redis pool under more concurrent reads than it has connections.

`redis.asyncio.ConnectionPool(max_connections=N)` raises `MaxConnectionsError`
when an N+1th command wants a connection (LIBRARIES.md). The production
wiring is therefore tested with a pool of 2 (the managed one, with 2 per node
of its Redis Cluster) and the in-process cache off
(size 0, TTL 0), so that every one of 64 concurrent public config reads needs
Redis at the same moment. Every answer must be a 200 with the widget's body.
Reads that overflow the pool are answered by the event-store fallback today
(`RedisPublicReader` catches `MaxConnectionsError` as a `RedisError`); the
test reports how many as a `RedisPoolOverflow` warning rather than failing.

The reads go through `httpx.ASGITransport` on the loop that runs the app (the
TestClient's portal, where the reader's pool and its pub/sub listener live),
so they really overlap; the test checks that they did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin, client_for
from tests.api.public_helpers import ALLOWED_HEADERS, live_widget, widget_path

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.wirings("production", "managed")]
SKIPPED_WIRINGS = {"embedded": "no Redis pool: the embedded public read model is in the process"}

POOL = 2
CONCURRENT = 64


class RedisPoolOverflow(UserWarning):
    """Reads that the Redis pool could not serve went to the event-store fallback."""


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


@dataclass
class Burst:
    expected: bytes
    responses: list[httpx.Response]
    reads: InFlight  # RedisPublicReader.get: the public reads
    fallbacks: InFlight  # the event-store read-through, used when Redis could not answer


@pytest.fixture
def pool_settings(settings: Settings) -> Settings:
    # No in-process cache: every read is a Redis GET (on a cluster, the pool is per node). Config reads are not rate
    # limited here.
    return dataclasses.replace(
        settings,
        redis_max_connections=POOL,
        public_cache_size=0,
        public_cache_ttl=0.0,
        rate_config_reads="1000000/minute",
    )


@pytest.fixture
def burst(pool_settings: Settings) -> Burst:
    """64 concurrent config reads of one live widget, after one read alone gave the expected body."""
    app = create_app(pool_settings)
    with client_for(app) as client:
        admin = Admin(client, pool_settings, "org_a", "alice")
        widget = live_widget(admin, app, domains=["example.com"])
        path = widget_path(widget["id"])
        first = client.get(path, headers=ALLOWED_HEADERS)
        assert first.status_code == 200, first.text

        reader = app.state.services.reader
        assert reader.cache.size == 0 and reader.cache.ttl == 0, "the in-process cache must be off"
        pools = [node.max_connections for node in reader.client.get_nodes()] if hasattr(reader.client, "get_nodes") else \
            [reader.client.connection_pool.max_connections]
        assert pools and set(pools) == {POOL}
        reads, fallbacks = InFlight(reader.get), InFlight(reader.fallback)
        reader.get, reader.fallback = reads, fallbacks

        async def gather() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as concurrent:
                return await asyncio.gather(*(concurrent.get(path, headers=ALLOWED_HEADERS) for _ in range(CONCURRENT)))

        responses = client.blocking_portal.call(gather)
    return Burst(first.content, responses, reads, fallbacks)


def test_more_concurrent_public_reads_than_redis_connections_all_answer_200(burst: Burst) -> None:
    statuses = sorted(r.status_code for r in burst.responses)
    assert statuses == [200] * CONCURRENT, f"statuses: {statuses}"
    assert all(r.content == burst.expected for r in burst.responses), "every answer carries the widget's public body"
    assert all(r.headers["access-control-allow-origin"] == ALLOWED_HEADERS["Origin"] for r in burst.responses)
    assert all(r.headers["content-type"] == "application/json" for r in burst.responses)
    # The test means something only if the reads really overlapped, far beyond the pool's size.
    assert burst.reads.calls == CONCURRENT
    assert burst.reads.peak > POOL * 10, f"only {burst.reads.peak} public reads were in flight at once"
    if burst.fallbacks.calls:
        # Not a failure of this contract (the answers are right), but worth seeing: the pool raised
        # MaxConnectionsError and those reads were served by the event store (PostgreSQL) instead.
        warnings.warn(
            f"{burst.fallbacks.calls} of {CONCURRENT} concurrent reads overflowed the Redis pool of {POOL} "
            "and were answered by the event-store fallback",
            RedisPoolOverflow,
            stacklevel=1,
        )

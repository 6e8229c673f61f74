"""Stores for the projection tests: the real PostgreSQL, Redis and SQLite, fresh per test.

Also `dump_*`: a read model's whole stored state as plain data, to compare one
store with another (an incremental run against a rebuild) byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from application.store import EventStore
from infrastructure.eventstore import open_event_store
from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_entry import encode_entry
from projections.public_views import InProcessPublicView, RedisKeys
from projections.widget_list import TABLES, WidgetListView
from tests.servers import fresh_schema


@pytest.fixture
def pg_store(production_settings: Settings) -> Iterator[EventStore]:
    """The event store as production opens it, in this test's schema."""
    store = open_event_store(production_settings)
    yield store
    store.close()


@pytest.fixture
def pg_db(production_settings: Settings) -> Iterator[Database]:
    db = Database(production_settings)
    yield db
    db.close()


@pytest.fixture
def sqlite_store(embedded_settings: Settings) -> Iterator[EventStore]:
    store = open_event_store(embedded_settings)
    yield store
    store.close()


@pytest.fixture
def sqlite_db(embedded_settings: Settings) -> Iterator[Database]:
    db = Database(embedded_settings)
    yield db
    db.close()


@pytest.fixture
def cluster_client(redis_cluster: Any) -> Iterator[Any]:
    """A client of the tests' Redis Cluster (tests/conftest.py starts it once per session)."""
    client = sync_client(redis_cluster.url)
    yield client
    client.close()


@pytest.fixture
def pooled_pg_store(pooler_settings: Settings) -> Iterator[EventStore]:
    """The event store through the transaction-mode PgBouncer, in this test's schema."""
    store = open_event_store(pooler_settings)
    yield store
    store.close()


@pytest.fixture
def pooled_pg_db(pooler_settings: Settings) -> Iterator[Database]:
    db = Database(pooler_settings)
    yield db
    db.close()


@pytest.fixture
def redis_client(redis_server_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server_url)
    yield client
    client.close()


@pytest.fixture
def other_pg_schema(pg_server_url: str) -> Iterator[str]:
    """A second fresh schema, for a rebuild to compare with."""
    with fresh_schema(pg_server_url) as schema:
        yield schema


@pytest.fixture
def other_pg_db(production_settings: Settings, other_pg_schema: str) -> Iterator[Database]:
    db = Database(replace(production_settings, database_schema=other_pg_schema))
    yield db
    db.close()


@pytest.fixture
def other_redis_prefix(redis_client: redis.Redis, redis_prefix: str) -> Iterator[str]:
    """A second fresh key prefix, for a rebuild to compare with."""
    prefix = f"{redis_prefix}other:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


def dump_redis_generation(client: redis.Redis, prefix: str, generation: int) -> dict[str, Any]:
    """Every entry key of one generation (without the prefix), as bytes or, for sets, a set of bytes; not the
    positions applied to each entry, which depend on where pages began and ended."""
    keys = RedisKeys(prefix, generation)
    base = keys.base
    found: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{base}*", count=1000):
        name = key.decode()[len(base):]
        if keys.id_of(key.decode())[0] in ("aw", "av"):
            continue
        kind = client.type(key)
        found[name] = client.smembers(key) if kind == b"set" else client.get(key)
    for name, key in (("position", keys.position), ("ready", keys.ready)):
        if (value := client.get(key)) is not None:
            found[name] = value
    return found


def dump_sql(db: Database) -> dict[str, Any]:
    found: dict[str, Any] = {table: sorted(db.query(f"SELECT * FROM {table}")) for table in TABLES}
    found["position"] = WidgetListView(db, create=False).position()
    return found


def dump_in_process(view: InProcessPublicView) -> dict[str, Any]:
    return {
        "entries": {w: encode_entry(e) for w, e in view.entries.items()},
        "versions": dict(view.versions),
        "pins": {v: set(ws) for v, ws in view.pins.items() if ws},
        "position": view.position(),
    }


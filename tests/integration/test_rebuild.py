"""Rebuilds: replay into a fresh generation (Redis) or inside one transaction (SQL), switch
atomically while readers read, and let the live runner carry on in what was built.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from application.store import EventStore
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_reader import RedisPublicReader
from projections.public_views import RedisKeys, RedisPublicView, current_generation
from projections.rebuild import rebuild_redis, rebuild_sql
from projections.runner import ProjectionRunner
from projections.setup import redis_public_view
from projections.widget_list import WidgetListView
from tests.integration.conftest import dump_redis_generation, dump_sql
from tests.unit.test_widget_rows import Admin, config_named

SKIPPED_WIRINGS = {
    "embedded": "Redis generations: embedded has no Redis; a SQL rebuild on SQLite is test_conversation_list_rebuild.py",
    "production": "on the production stores (PostgreSQL, one Redis) opened here, beside the live runner it races",
    "managed": "a rebuild on the Redis Cluster is test_redis_cluster.py (on the cluster and the managed wiring), and a "
               "SQL rebuild through PgBouncer is test_conversation_list_rebuild.py on the managed wiring",
}


def live_runner(store: EventStore, client: redis.Redis, settings: Settings) -> ProjectionRunner:
    """The public lookup's runner as projections/setup.py builds it: it reopens the current generation."""
    return ProjectionRunner(
        "public_lookup", store, redis_public_view(client, settings), reopen=lambda: redis_public_view(client, settings)
    )


def head(store: EventStore) -> int:
    return store.recorder.max_notification_id() or 0


@dataclass
class Reads:
    count: int = 0
    missing: set[str] = field(default_factory=set)
    generations: set[int] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)


def read_directly(client: redis.Redis, prefix: str, ids: list[str], stop: threading.Event, reads: Reads) -> None:
    """What any reader may do: resolve the current generation, then GET the widget in it."""
    try:
        while not stop.is_set():
            for widget_id in ids:
                generation = int(client.get(RedisKeys(prefix, 0).current) or 0)
                if client.get(RedisKeys(prefix, generation).widget(widget_id)) is None:
                    reads.missing.add(widget_id)
                reads.count += 1
                reads.generations.add(generation)
    except BaseException as error:  # noqa: BLE001 (asserted by the test)
        reads.errors.append(error)


def read_through_reader(url: str, prefix: str, ids: list[str], stop: threading.Event, reads: Reads) -> None:
    """The API's reader, with a TTL of zero so that every read goes to Redis."""

    async def loop() -> None:
        reader = RedisPublicReader(aioredis.Redis.from_url(url), prefix, cache_size=10, ttl=0)
        await reader.start()
        try:
            while not stop.is_set():
                for widget_id in ids:
                    if await reader.get(widget_id) is None:
                        reads.missing.add(widget_id)
                    reads.count += 1
        finally:
            await reader.close()

    try:
        asyncio.run(loop())
    except BaseException as error:  # noqa: BLE001 (asserted by the test)
        reads.errors.append(error)


@pytest.mark.slow
def test_readers_never_miss_a_widget_while_a_rebuild_switches_generations_and_the_live_runner_follows(
    production_settings: Settings, pg_store: EventStore, redis_client: redis.Redis, redis_prefix: str,
    other_redis_prefix: str,
) -> None:
    admin = Admin(pg_store)
    shared = admin.version()
    existing = [str(admin.widget(shared, published=i % 2 == 0)) for i in range(60)]
    runner = live_runner(pg_store, redis_client, production_settings)
    runner.catch_up()
    old_generation = runner.view.generation
    runner.start()

    stop_reading, stop_writing = threading.Event(), threading.Event()
    direct, through_reader = Reads(), Reads()
    added: list[str] = []

    def write() -> None:
        n = 0
        while not stop_writing.is_set():
            admin.configure(existing[n % len(existing)], config_named(f"During {n}"))
            if n % 5 == 0:
                added.append(str(admin.widget(shared, published=True)))
            n += 1

    threads = [
        threading.Thread(target=read_directly, args=(redis_client, redis_prefix, existing, stop_reading, direct)),
        threading.Thread(target=read_through_reader,
                         args=(production_settings.redis_url, redis_prefix, existing, stop_reading, through_reader)),
    ]
    writer = threading.Thread(target=write)
    try:
        for thread in threads:
            thread.start()
        writer.start()
        time.sleep(0.3)
        new_generation = rebuild_redis(pg_store, redis_client, redis_prefix, grace=0.2)
        time.sleep(0.3)
    finally:
        stop_writing.set()
        writer.join()
        stop_reading.set()
        for thread in threads:
            thread.join()

    try:
        for reads in (direct, through_reader):
            assert reads.errors == []
            assert reads.missing == set(), "a widget that exists read as missing during the switch"
            assert reads.count > 2 * len(existing)
        assert direct.generations == {old_generation, new_generation}
        assert new_generation > old_generation
        assert current_generation(redis_client, redis_prefix) == new_generation
        assert dump_redis_generation(redis_client, redis_prefix, old_generation) == {}
        assert redis_client.get(RedisKeys(redis_prefix, 0).building) is None

        # The live runner carries on in the new generation, and nothing more lands in the old one.
        gone, changed = existing[1], existing[2]
        admin.delete(gone)
        admin.configure(changed, config_named("After the rebuild"))
        assert runner.wait(head(pg_store), timeout=15)
    finally:
        runner.stop()
    assert runner.failure is None
    assert runner.view.generation == new_generation
    view = RedisPublicView(redis_client, redis_prefix, new_generation)
    assert view.get(gone) is None
    assert b"After the rebuild" in view.get(changed).body  # type: ignore[union-attr]
    assert all(view.get(w) is not None for w in added)
    assert dump_redis_generation(redis_client, redis_prefix, old_generation) == {}

    fresh = rebuild_redis(pg_store, redis_client, other_redis_prefix, grace=0)
    assert dump_redis_generation(redis_client, redis_prefix, new_generation) == dump_redis_generation(
        redis_client, other_redis_prefix, fresh)


def test_an_event_the_live_runner_applies_just_before_the_switch_is_in_the_new_generation(
    production_settings: Settings, pg_store: EventStore, redis_client: redis.Redis, redis_prefix: str,
) -> None:
    admin = Admin(pg_store)
    widget_id = str(admin.widget(config=config_named("Before"), published=True))
    runner = live_runner(pg_store, redis_client, production_settings)
    runner.catch_up()
    passes = 0

    def on_page(position: int, applied: int) -> None:
        nonlocal passes
        passes += 1
        if passes == 1:  # so that the rebuild makes a second pass
            admin.configure(widget_id, config_named("During the first pass"))
        elif passes == 2:  # after its last pass, before it switches: the live runner writes the old generation
            admin.configure(widget_id, config_named("Just before the switch"))
            runner.catch_up()

    new_generation = rebuild_redis(pg_store, redis_client, redis_prefix, on_page=on_page, grace=0)

    assert passes == 2
    runner.catch_up()  # an idle runner has nothing new to apply
    entry = RedisPublicView(redis_client, redis_prefix, new_generation).get(widget_id)
    assert entry is not None
    assert b"Just before the switch" in entry.body
    assert RedisPublicView(redis_client, redis_prefix, new_generation).position() == head(pg_store)


def test_a_rebuild_stores_the_same_public_bytes_as_the_live_projection(
    production_settings: Settings, pg_store: EventStore, redis_client: redis.Redis, redis_prefix: str,
    other_redis_prefix: str,
) -> None:
    admin = Admin(pg_store)
    runner = live_runner(pg_store, redis_client, production_settings)
    agent_version = admin.version()
    widget_id = admin.widget(agent_version, config={"v1": {"voice": {"mode": "open_mic"}, "appearance": {"theme": "dark"}}})
    runner.catch_up()  # rows read back from Redis in the next pages, built from events in the rebuild's one page
    for step in (lambda: admin.publish(widget_id), lambda: admin.change_domains(widget_id, ["shop.example.com"]),
                 lambda: admin.unpublish_version(agent_version)):
        step()
        runner.catch_up()

    fresh = rebuild_redis(pg_store, redis_client, other_redis_prefix, grace=0)

    assert dump_redis_generation(redis_client, redis_prefix, runner.view.generation) == dump_redis_generation(
        redis_client, other_redis_prefix, fresh)


def test_a_sql_rebuild_shows_readers_the_old_list_until_it_commits_and_the_live_runner_carries_on(
    pg_store: EventStore, pg_db: Database, other_pg_db: Database,
) -> None:
    admin = Admin(pg_store)
    widgets = [admin.widget(published=True) for _ in range(4)]
    view = WidgetListView(pg_db)
    runner = ProjectionRunner("widget_list", pg_store, view, page_size=3)
    runner.catch_up()
    with pg_db.transaction() as tx:  # damage the model, as a bug might
        tx.execute("UPDATE widget_list SET row_json = replace(row_json, '\"live\":true', '\"live\":false')")
    damaged = view.page("org_a", 10, None)[0]
    assert not any(r.live for r in damaged)
    seen_during: list[list[Any]] = []
    admin.unpublish(widgets[0])

    def on_page(position: int, applied: int) -> None:
        seen_during.append(view.page("org_a", 10, None)[0])  # another connection, outside the rebuild's transaction

    rebuild_sql(pg_store, pg_db, on_page=on_page)

    assert seen_during and all(rows == damaged for rows in seen_during)
    rows = {r.id: r for r in view.page("org_a", 10, None)[0]}
    assert [rows[str(w)].live for w in widgets] == [False, True, True, True]

    admin.delete(widgets[1])
    runner.catch_up()  # its next page starts below the rebuilt position: refused, then it carries on
    assert runner.position == view.position() == head(pg_store)
    assert str(widgets[1]) not in {r.id for r in view.page("org_a", 10, None)[0]}
    rebuild_sql(pg_store, other_pg_db)
    assert dump_sql(pg_db) == dump_sql(other_pg_db)

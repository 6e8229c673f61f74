"""Rebuild a read model from position zero, and switch readers over atomically.

Redis: replay into a fresh generation of keys, then move the generation pointer
in one script and tell every reader; the live runner's next write to the old
generation is refused, and it carries on in the new one. The old generation is
deleted afterwards. SQL: replay inside one transaction, so that readers see the
old model until the commit and the new one after it. Either way, memory holds
two pages of events at a time (the one applied, and the next, read ahead), however long the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_views import RedisKeys, RedisPublicView, current_generation
from projections.runner import EventLog, ProjectionRunner

# Larger pages than the live runner's: fewer round trips and statements, still two pages of events in memory.
REBUILD_PAGE_SIZE = 2000
Progress = Callable[[int, int], None]  # (position reached, events applied)

# KEYS: current pointer, building pointer, invalidation channel (one slot). ARGV: the new generation, the
# publish command.
SWITCH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call(ARGV[2], KEYS[3], '*')
return 1
"""


def rebuild_redis(
    store: EventLog, client: redis.Redis, prefix: str, on_page: Progress | None = None, grace: float = 2.0
) -> int:
    """Replay into a new generation and switch to it; returns the new generation. On a cluster the
    generation is switched by one script in the `{meta}` slot, so readers move over all at once."""
    old = current_generation(client, prefix)
    meta = RedisKeys(prefix, old)
    new = max(int(client.incr(meta.counter)), old + 1)
    client.set(meta.counter, new)
    keys = RedisKeys(prefix, new)
    client.set(keys.building, new)
    view = RedisPublicView(client, prefix, new, building=True)
    runner = ProjectionRunner(f"rebuild-g{new}", store, view, read_ahead=True)
    runner.catch_up(on_page=on_page)
    runner.catch_up(on_page=on_page)  # what arrived during the first pass, so the live runner has little left
    if not client.register_script(SWITCH)(keys=[keys.current, keys.building, keys.channel], args=[str(new), view.publish]):
        raise RuntimeError(f"generation {new} was no longer the one being built; another rebuild ran at the same time")
    # An idle live runner that wrote the old generation after our last pass would not notice the
    # switch until its next write: finish the catch-up as the new generation's owner (positions keep
    # it exactly once if the live runner gets there too).
    ProjectionRunner(f"rebuild-g{new}-switched", store, RedisPublicView(client, prefix, new)).catch_up()
    time.sleep(grace)  # readers that resolved the old generation just before the switch finish reading it
    drop_generation(client, prefix, old)
    return new


def drop_generation(client: redis.Redis, prefix: str, generation: int) -> int:
    """Delete one generation's keys (on a cluster, scanned on every primary and deleted slot by slot)."""
    keys = RedisKeys(prefix, generation)
    dropped = 0
    batch: list[bytes | str] = list(keys.generation_keys())
    for key in client.scan_iter(match=f"{keys.base}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            dropped += client.unlink(*batch)
            batch.clear()
    if batch:
        dropped += client.unlink(*batch)
    return dropped


def rebuild_sql(store: EventLog, db: Database, name: str = "widget_list", on_page: Progress | None = None,
                page_size: int = REBUILD_PAGE_SIZE) -> int:
    """Replay one SQL read model inside one transaction; returns the position reached.

    Readers keep seeing the old model until the commit; the live runner's next
    page then meets a position it has passed, and carries on after it.
    """
    from projections.setup import SQL_PROJECTIONS

    view_class, projection_class = SQL_PROJECTIONS[name]
    view_class.create_tables(db)
    with db.transaction() as tx:
        view_class.reset(tx)
        view = view_class(tx, create=False, fresh=True)
        runner = ProjectionRunner(f"rebuild-{name}", store, view, projection_factory=projection_class,
                                  page_size=page_size, read_ahead=True)
        runner.catch_up(on_page=on_page)
        return runner.position


def rebuild(settings: Settings, store: EventLog, db: Database, names: tuple[str, ...], on_page: Progress | None = None) -> None:
    from projections.setup import PUBLIC_LOOKUP, SQL_PROJECTIONS, sync_redis

    for name in names:
        if name in SQL_PROJECTIONS:
            rebuild_sql(store, db, name, on_page)
    if PUBLIC_LOOKUP in names and settings.redis_url:
        client = sync_redis(settings)
        try:
            rebuild_redis(store, client, settings.redis_prefix, on_page)
        finally:
            client.close()

"""The query side of the public lookup, on the hot path of every page view.

Production: an in-process cache in front of Redis. The projection publishes
the id of every widget it changes; a listener evicts it here. Staleness is
bounded: an entry is trusted for at most `ttl` seconds even if an invalidation
message is lost, and the whole cache is dropped whenever the listener's
connection is lost or a rebuild switches generations. When Redis is down, or
has just come back (possibly from an old snapshot) and its position has not yet
reached the event store's head, the reader answers from the event store
instead: slower, never more permissive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisError
from redis.utils import str_if_bytes

from infrastructure.tasks import stop_task
from projections.public_entry import PublicEntry, decode_entry
from projections.public_views import InProcessPublicView, RedisKeys

log = structlog.get_logger("public_reader")
Fallback = Callable[[str], Awaitable[PublicEntry | None]]
VERIFY_INTERVAL = 0.5


class BoundedCache:
    """An LRU of public entries, each trusted for at most `ttl` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl
        self._items: OrderedDict[str, tuple[float, PublicEntry | None]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, PublicEntry | None]:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return False, None
        return True, item[1]

    def put(self, key: str, entry: PublicEntry | None) -> None:
        self._items[key] = (time.monotonic() + self.ttl, entry)
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def evict(self, key: str) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


class InProcessPublicReader:
    def __init__(self, view: Callable[[], InProcessPublicView]) -> None:
        self._view = view

    async def get(self, widget_id: str) -> PublicEntry | None:
        return self._view().get(widget_id)

    def peek(self, widget_id: str) -> tuple[bool, PublicEntry | None]:
        """`get` without waiting: (True, the entry or None); the in-process view always knows."""
        return True, self._view().get(widget_id)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        return True


class RedisPublicReader:
    def __init__(
        self, client: aioredis.Redis, prefix: str, cache_size: int, ttl: float, fallback: Fallback | None = None,
        head: Callable[[], Awaitable[int]] | None = None, listener: aioredis.Redis | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.client = client
        # Pub/sub holds its connection for good, so it gets its own client; and reads wait for a pooled
        # connection rather than overflow the pool, which redis-py reports as an error, not as "busy".
        self.listener_client = listener or client
        self._slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self.prefix = prefix
        self.cache = BoundedCache(cache_size, ttl)
        self.fallback = fallback
        self.head = head  # the event store's last position: Redis is trusted once it has caught up with it
        self._verified = head is None
        self._next_check = 0.0
        self._keys: RedisKeys | None = None
        self._ready = False
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="public-cache-invalidation")

    async def close(self) -> None:
        await stop_task(self._listener)
        await self.client.aclose()
        if self.listener_client is not self.client:
            await self.listener_client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    def peek(self, widget_id: str) -> tuple[bool, PublicEntry | None]:
        """What `get` would answer without I/O: (True, entry or None) from the cache, or (False, None) when it would ask Redis."""
        return self.cache.get(widget_id)

    async def get(self, widget_id: str) -> PublicEntry | None:
        hit, entry = self.cache.get(widget_id)
        if hit:
            return entry
        try:
            keys = self._keys or await self._resolve_generation()
            if not self._ready or not await self._caught_up(keys):
                return await self._read_through(widget_id, "read model not ready")
            data = await self._get(keys.widget(widget_id))
            if data is None and (await self._resolve_generation()).generation != keys.generation:
                data = await self._get(self._keys.widget(widget_id))  # a rebuild switched generations
        except (RedisError, OSError) as error:
            self._keys = None
            self._verified = self.head is None
            return await self._read_through(widget_id, type(error).__name__)
        entry = decode_entry(data) if data is not None else None
        if self.listening.is_set():
            self.cache.put(widget_id, entry)
        return entry

    async def _get(self, key: str) -> bytes | None:
        if self._slots is None:
            return await self.client.get(key)
        async with self._slots:
            return await self.client.get(key)

    async def _caught_up(self, keys: RedisKeys) -> bool:
        """After (re)connecting, Redis may hold an old snapshot: trust it once its position reaches the log's head."""
        if self._verified:
            return True
        now = time.monotonic()
        if now < self._next_check or self.head is None:
            return False
        self._next_check = now + VERIFY_INTERVAL
        position = int(await self.client.get(keys.position) or 0)
        self._verified = position >= await self.head()
        if self._verified:
            self.cache.clear()
            log.info("public_read_model_trusted", position=position)
        return self._verified

    async def _read_through(self, widget_id: str, reason: str) -> PublicEntry | None:
        if self.fallback is None:
            raise RuntimeError(f"public read model unavailable ({reason}) and no fallback")
        log.warning("public_read_fallback", reason=reason)
        return await self.fallback(widget_id)

    async def _resolve_generation(self) -> RedisKeys:
        raw = await self.client.get(RedisKeys(self.prefix, 0).current)
        keys = RedisKeys(self.prefix, int(raw or 1))
        self._ready = raw is not None and await self.client.get(keys.ready) == b"1"
        self._keys = keys
        return keys

    async def _listen(self) -> None:
        channel = RedisKeys(self.prefix, 0).channel
        while True:
            try:
                if isinstance(self.listener_client, AsyncRedisCluster):
                    await self._listen_sharded(channel)
                else:
                    async with self.listener_client.pubsub() as pubsub:
                        await pubsub.subscribe(channel)
                        self._subscribed()
                        async for message in pubsub.listen():
                            if message.get("type") == "message":
                                self._invalidate(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:  # connection lost: nothing cached, nor Redis when it returns, is trusted yet
                self.listening.clear()
                self.cache.clear()
                self._verified = self.head is None
                log.warning("public_cache_listener_lost", error=type(error).__name__)
                await asyncio.sleep(0.5)

    async def _listen_sharded(self, channel: str) -> None:
        """On a cluster: sharded pub/sub on the node that serves the channel's slot. When that node fails or
        gives the slot up (a failover), the subscription ends and the loop above subscribes again, on the
        node the refreshed slot map names."""
        cluster = self.listener_client
        await cluster.initialize()
        pubsub = cluster.pubsub()
        try:
            await pubsub.ssubscribe(channel)
            self._subscribed()
            while True:
                message = await pubsub.get_sharded_message(timeout=1.0)
                if message is None:
                    continue
                kind = str_if_bytes(message.get("type"))
                if kind == "smessage":
                    self._invalidate(message["data"])
                elif kind == "sunsubscribe":
                    raise ConnectionError("the channel's slot moved to another node")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):  # the next subscription reads the slot map afresh
                await cluster.nodes_manager.initialize()

    def _subscribed(self) -> None:
        self.cache.clear()
        self._keys = None
        self._verified = self.head is None  # what Redis holds now may predate a restart
        self.listening.set()

    def _invalidate(self, data: bytes) -> None:
        target = data.decode()
        if target == "*":
            self.cache.clear()
            self._keys = None
        else:
            self.cache.evict(target)

"""Abuse limits on the public endpoints, shared across workers through Redis (in-process when embedded).

Conversation starts, resumes and submissions use the `limits` package (moving
windows, exact across workers). Config reads, on every page view, use a local-first window counter
that shares its counts through Redis in the background (below). If Redis
fails, each process falls back to its own counts rather than failing open or
failing the request.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from infrastructure.redis_clients import async_client, is_cluster, limits_storage_url
from infrastructure.tasks import stop_task

log = structlog.get_logger("ratelimit")


class RateLimited(Exception):
    """Too many requests; `retry_after` seconds until the window frees a slot (HTTP 429). `code` and `limit` say which
    limit, when the answer names it (`submission_limit`)."""

    code = "rate_limited"

    def __init__(self, retry_after: int, code: str | None = None, limit: str | None = None) -> None:
        named = f" ({limit})" if limit else ""
        super().__init__(f"Too many requests{named}; retry after {retry_after} s.")
        self.retry_after = retry_after
        if code is not None:
            self.code = code


class PublicRateLimits:
    def __init__(self, config_reads: str, conversation_starts: str, redis_url: str = "", prefix: str = "widgets:",
                 resumes: str = "10/minute", submissions: str = "20/minute") -> None:
        self.config_reads: RateLimitItem = parse(config_reads)
        self.conversation_starts: RateLimitItem = parse(conversation_starts)
        self.resumes: RateLimitItem = parse(resumes)
        self.submissions: RateLimitItem = parse(submissions)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        storage: Storage | None = None
        if redis_url:
            # limits' own cluster storage for a Redis Cluster (`async+redis+cluster://`): each window is one key.
            url, options = limits_storage_url(redis_url)
            storage_class = RedisClusterStorage if is_cluster(redis_url) else RedisStorage
            storage = storage_class(
                url, implementation="redispy", key_prefix=f"{prefix}rl", socket_timeout=1, socket_connect_timeout=1, **options
            )
        self._shared = MovingWindowRateLimiter(storage) if storage is not None else self._local
        counter_client = None
        if redis_url:
            counter_client = async_client(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self._reads = SharedWindowCounter(self.config_reads, counter_client, prefix)
        # Count a config read and allow it when this process can decide alone (no I/O): True. False: nothing
        # counted; call `check_config_read`. (The counter's own method, so the hot path makes one call.)
        self.config_read_decided_here = self._reads.hit_locally
        self._sync_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._reads.client is not None:
            self._sync_task = asyncio.create_task(self._reads.run(), name="rate-limit-sync")

    async def close(self) -> None:
        await stop_task(self._sync_task)
        if self._reads.client is not None:
            await self._reads.client.aclose()

    async def check_config_read(self, client: str) -> None:
        await self._reads.hit(client)

    async def check_conversation_start(self, client: str, widget_id: str) -> None:
        await self._hit(self.conversation_starts, "start", client, widget_id)

    async def check_resume(self, client: str, conversation_id: str) -> None:
        await self._hit(self.resumes, "resume", client, conversation_id)

    async def check_submission(self, client: str, widget_id: str) -> None:
        """A form submission or feedback; beyond the limit, a 429 `submission_limit` naming it."""
        limit = f"at most {self.submissions.amount} form submissions and feedback per {_window(self.submissions)} from one address"
        await self._hit(self.submissions, "submission", client, widget_id, code="submission_limit", limit=limit)

    async def _hit(self, item: RateLimitItem, *keys: str, code: str | None = None, limit: str | None = None) -> None:
        try:
            allowed = await self._shared.hit(item, *keys)
            limiter = self._shared
        except Exception as error:  # Redis is down: this process still counts, on its own
            log.warning("rate_limit_fallback", reason=type(error).__name__)
            allowed = await self._local.hit(item, *keys)
            limiter = self._local
        if not allowed:
            retry_after = 1
            try:
                stats = await limiter.get_window_stats(item, *keys)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            except Exception:
                pass
            raise RateLimited(retry_after, code, limit)


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


class SharedWindowCounter:
    """Fixed-window counts decided in this process and shared through Redis in the background.

    For the hot path (config reads on every page view): a decision costs a dict
    lookup, not a Redis round trip. Every `sync_interval` seconds, and at once
    whenever a key comes near its limit (or always, for limits of at most
    `EXACT_UP_TO` a window), this process adds its new hits to Redis (INCRBY)
    and learns the total from every worker. Far from a large limit, the
    workers together may overshoot by what they served in one sync interval. Without Redis, or while Redis
    is down, each process counts on its own.
    """

    NEAR = 0.8
    EXACT_UP_TO = 100  # small limits mean low rates: every decision then takes the shared total
    MAX_KEYS = 100_000

    def __init__(self, item: RateLimitItem, client: Any | None, prefix: str, sync_interval: float = 0.1) -> None:
        self.limit = item.amount
        self.window = item.get_expiry()
        self.client = client
        self.prefix = f"{prefix}rl:w:"
        self.sync_interval = sync_interval
        self.current = -1
        self.unsynced: dict[str, int] = {}
        self.known: dict[str, int] = {}
        # `hit_locally` decides alone while a key's total is below this: the limit without Redis; with it, the
        # total from which `hit` asks Redis (never, for small limits, which always take the shared total).
        self.local_bound = (self.limit if client is None else
                            0 if self.limit <= self.EXACT_UP_TO else min(self.limit, self.limit * self.NEAR - 1))

    def _roll(self, now: float) -> int:
        window = int(now // self.window)
        if window != self.current:
            self.current = window
            self.unsynced.clear()
            self.known.clear()
        return window

    def _retry_after(self, now: float) -> int:
        return max(1, math.ceil((self.current + 1) * self.window - now))

    async def hit(self, key: str) -> None:
        now = time.time()
        self._roll(now)
        total = self.known.get(key, 0) + self.unsynced.get(key, 0)
        if self.client is not None and (self.limit <= self.EXACT_UP_TO or total + 1 >= self.limit * self.NEAR):
            # Decide on the shared total, this hit included (if Redis is down, on what this process knows).
            self.unsynced[key] = self.unsynced.get(key, 0) + 1
            await self.sync([key])
            if self.known.get(key, 0) + self.unsynced.get(key, 0) > self.limit:
                raise RateLimited(self._retry_after(now))
            return
        if total >= self.limit:
            raise RateLimited(self._retry_after(now))
        self.unsynced[key] = self.unsynced.get(key, 0) + 1
        if len(self.unsynced) > self.MAX_KEYS and self.client is not None:
            await self.sync(list(self.unsynced))

    def hit_locally(self, key: str) -> bool:
        """`hit` for the case it decides with no I/O and allows: counted, True. Otherwise nothing counted, False.

        The hot path's front (api/hot_path.py) asks this first; on False it hands the request to the
        handler, which calls `hit`, so every request is counted once and decided as `hit` decides it."""
        now = time.time()
        if now // self.window != self.current:
            self._roll(now)  # a new window starts here as in `hit` (no I/O either way)
        unsynced = self.unsynced
        mine = unsynced.get(key, 0)
        if self.known.get(key, 0) + mine >= self.local_bound:
            return False
        if not mine and len(unsynced) >= self.MAX_KEYS:
            return False
        unsynced[key] = mine + 1
        return True

    async def sync(self, keys: list[str] | None = None) -> None:
        """Add this process's new hits to the shared counts and learn the totals."""
        if self.client is None:
            return
        window = self.current
        keys = list(self.unsynced) if keys is None else keys
        if not keys:
            return
        deltas = {k: self.unsynced.pop(k, 0) for k in keys}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, delta in deltas.items():
                    name = f"{self.prefix}{window}:{key}"
                    pipe.incrby(name, delta)
                    pipe.expire(name, self.window * 2)
                results = await pipe.execute()
        except Exception as error:  # keep counting here; the hits are added back for the next try
            for key, delta in deltas.items():
                self.unsynced[key] = self.unsynced.get(key, 0) + delta
            log.warning("rate_limit_sync_failed", reason=type(error).__name__)
            return
        if window == self.current:
            for key, total in zip(deltas, results[::2], strict=True):
                self.known[key] = int(total)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            self._roll(time.time())
            await self.sync()

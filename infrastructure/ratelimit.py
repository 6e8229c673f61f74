"""Abuse limits on the public endpoints, shared across workers through Redis (in-process when embedded).

Built on the `limits` package (moving windows). If Redis fails, each process
falls back to its own in-memory window for that request rather than failing
open or failing the request.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = structlog.get_logger("ratelimit")


class RateLimited(Exception):
    """Too many requests; `retry_after` seconds until the window frees a slot (HTTP 429)."""

    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests; retry after {retry_after} s.")
        self.retry_after = retry_after


class PublicRateLimits:
    def __init__(self, config_reads: str, conversation_starts: str, redis_url: str = "", prefix: str = "widgets:") -> None:
        self.config_reads: RateLimitItem = parse(config_reads)
        self.conversation_starts: RateLimitItem = parse(conversation_starts)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        storage: Storage | None = None
        if redis_url:
            storage = RedisStorage(
                "async+" + redis_url, implementation="redispy", key_prefix=f"{prefix}rl", socket_timeout=1, socket_connect_timeout=1
            )
        self._shared = MovingWindowRateLimiter(storage) if storage is not None else self._local

    async def check_config_read(self, client: str) -> None:
        await self._hit(self.config_reads, "config", client)

    async def check_conversation_start(self, client: str, widget_id: str) -> None:
        await self._hit(self.conversation_starts, "start", client, widget_id)

    async def _hit(self, item: RateLimitItem, *keys: str) -> None:
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
            raise RateLimited(retry_after)

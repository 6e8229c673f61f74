"""Stopping background asyncio tasks at shutdown without hanging on one that swallows its cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

import structlog

log = structlog.get_logger("tasks")


async def stop_task(task: asyncio.Task[None] | None, timeout: float = 2.0) -> None:
    """Cancel a background task and wait for it, boundedly: a client library may swallow one cancellation."""
    if task is None:
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            log.warning("background_task_did_not_stop", task=task.get_name())
            return
        await asyncio.wait({task}, timeout=min(0.2, remaining))
    with suppress(asyncio.CancelledError, Exception):
        task.result()


async def every(interval: float, work: Callable[[], None]) -> None:
    """Call `work` (quick, synchronous, on the event loop) every `interval` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            work()
        except Exception:
            log.exception("periodic_task_failed", work=getattr(work, "__qualname__", repr(work)))

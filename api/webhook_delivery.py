"""Delivers the webhook outbox: the projection process's dispatcher (in the server itself when embedded).

The outbox projection (projections/webhook_outbox.py) queues one row per
event and endpoint with its own position; this dispatcher attempts what is
due. Each attempt is leased in the database first, so several processes share
the work and a crashed one's leases run out and are taken again: a crash
repeats an attempt (the same `webhook-id`), never loses one. The result is
written after the attempt, so an attempt sent but not recorded is sent again.

Each endpoint has at most `PER_ENDPOINT` attempts in flight and each attempt
at most the sender's 10 s: a slow or dead endpoint holds its own slots only,
and the rows of the others keep being claimed around it. Bodies are rendered
from the log when sent, through the mapper that opens personal data, so an
erasure made after the event (a destroyed key) shows as null in every later
attempt. Logs name endpoints, messages and codes, never a body, URL or secret.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import msgspec
import structlog

from application.store import EventStore
from application.webhook_endpoints import disable_endpoint
from domain.records import describe
from domain.webhook_endpoint import DISABLED_FAILING, DISABLED_GONE
from infrastructure.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_LAG, WEBHOOK_ENDPOINTS_DISABLED
from infrastructure.personal_data import DeploymentKeys
from infrastructure.settings import Settings
from infrastructure.sql import Database
from infrastructure.webhook_sender import TIMEOUT, Attempt, WebhookSender
from projections.webhook_endpoints import DeliveryTarget, endpoint_target
from projections.webhook_outbox import Due, claim, due_deliveries

log = structlog.get_logger("webhooks")

PER_ENDPOINT = 4  # attempts in flight per endpoint
BATCH = 200
POLL = 1.0  # how often the outbox is looked at when nothing wakes the dispatcher (other processes' retries)
LEASE = TIMEOUT + 30.0
DISABLE_AFTER_FAILING = 5 * 86400.0
TARGET_CACHE = 1.0  # seconds an endpoint's URL and secrets are reused between attempts
_encode = msgspec.json.Encoder().encode


class WebhookDispatcher:
    def __init__(self, store: EventStore, db: Database, keys: DeploymentKeys, schedule: Sequence[float],
                 allow_private: bool = False, sender: WebhookSender | None = None, clock: Callable[[], float] = time.time,
                 disable_after_failing: float = DISABLE_AFTER_FAILING) -> None:
        self.store = store
        self.db = db
        self.keys = keys
        self.schedule = tuple(schedule)
        self.allow_private = allow_private
        self.sender = sender
        self.clock = clock
        self.disable_after_failing = disable_after_failing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._targets: dict[str, tuple[float, Any, DeliveryTarget | None]] = {}
        self._inflight: dict[str, int] = defaultdict(int)

    @classmethod
    def from_settings(cls, settings: Settings, store: EventStore, db: Database) -> WebhookDispatcher:
        return cls(store, db, DeploymentKeys.from_settings(settings), settings.webhook_retry_delays, settings.webhook_allow_private)

    # Running

    def start(self, stopping: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=lambda: asyncio.run(self.run(stopping)), name="webhook-dispatcher", daemon=True)
        thread.start()
        return thread

    def wake(self) -> None:
        """Look at the outbox now (called by the outbox projection after it queued deliveries)."""
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:
                pass  # the loop has stopped

    async def run(self, stopping: threading.Event) -> None:
        self._loop, self._wakeup = asyncio.get_running_loop(), asyncio.Event()
        sender = self.sender or WebhookSender(allow_private=self.allow_private)
        tasks: set[asyncio.Task[None]] = set()
        backoff = 0.2
        try:
            while not stopping.is_set():
                self._wakeup.clear()
                try:
                    taken = await asyncio.to_thread(self._claim)
                    backoff = 0.2
                except Exception as error:  # noqa: BLE001 - the database is unreachable for now: try again
                    log.warning("webhook_outbox_unavailable", error=type(error).__name__, retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                for due in taken:
                    self._inflight[due.endpoint_id] += 1
                    task = asyncio.create_task(self._attempt(sender, due))
                    tasks.add(task)
                    task.add_done_callback(lambda done, endpoint=due.endpoint_id: self._finished(tasks, done, endpoint))
                if taken:
                    continue  # there may be more due: look again before waiting
                try:
                    await asyncio.wait_for(self._wakeup.wait(), POLL)
                except TimeoutError:
                    pass
        finally:
            if tasks:
                await asyncio.wait(tasks, timeout=TIMEOUT + 1)  # attempts in flight finish, or their leases run out
            if self.sender is None:
                await sender.close()

    def _finished(self, tasks: set[asyncio.Task[None]], task: asyncio.Task[None], endpoint_id: str) -> None:
        tasks.discard(task)
        self._inflight[endpoint_id] -= 1
        if self._inflight[endpoint_id] <= 0:
            del self._inflight[endpoint_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook_attempt_crashed", endpoint_id=endpoint_id, error=repr(task.exception()))
        assert self._wakeup is not None
        self._wakeup.set()  # a slot is free

    def _claim(self) -> list[Due]:
        now = self.clock()
        busy = sorted(e for e, n in self._inflight.items() if n >= PER_ENDPOINT)
        room = dict(self._inflight)
        chosen = []
        for due in due_deliveries(self.db, now, BATCH, busy):
            if room.get(due.endpoint_id, 0) < PER_ENDPOINT:
                room[due.endpoint_id] = room.get(due.endpoint_id, 0) + 1
                chosen.append(due)
        return claim(self.db, chosen, now, now + LEASE) if chosen else []

    # One attempt

    async def _attempt(self, sender: WebhookSender, due: Due) -> None:
        lease = await asyncio.to_thread(self._prepare, due)
        if lease is None:
            return
        target, body = lease
        attempt = await sender.send(target.url, due.message_id, int(self.clock()), body, target.signing_secrets)
        await asyncio.to_thread(self._record, due, attempt)

    def _prepare(self, due: Due) -> tuple[DeliveryTarget, bytes] | None:
        """Where the delivery goes and its body, or None when it is not to be sent now (the row says why)."""
        now = self.clock()
        row, target = self._target(due.endpoint_id, now)
        if row is None:  # the endpoints' read model has not reached this endpoint yet: in a moment
            self._release(due, now + 1.0)
            return None
        if target is None or not target.signing_secrets:
            reason = "endpoint_deleted" if row.deleted else "endpoint_disabled" if row.disabled else "no_signing_secret"
            self._finish(due, "failed", None, reason, now, counted=False)
            log.info("webhook_not_sent", endpoint_id=due.endpoint_id, message_id=due.message_id, reason=reason)
            return None
        return target, self.render(due.position)

    def _target(self, endpoint_id: str, now: float) -> tuple[Any, DeliveryTarget | None]:
        cached = self._targets.get(endpoint_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        row, target = endpoint_target(self.db, self.keys, endpoint_id)
        if row is not None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[endpoint_id] = (now + TARGET_CACHE, row, target)
        return row, target

    def render(self, position: int) -> bytes:
        """The body of the event at `position`, as the audit feed shows it, with personal values as they are now."""
        found = self.store.recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            raise LookupError(f"no event at position {position}")
        record = describe(self.store.mapper.to_domain_event(found[0]))
        data = {f"{record.aggregate_type}_id": record.aggregate_id, **record.data}
        return _encode({"type": record.type, "timestamp": record.occurred_at, "data": data})

    def _record(self, due: Due, attempt: Attempt) -> None:
        now = self.clock()
        attempts = due.attempts + 1
        if attempt.succeeded:
            self._finish(due, "succeeded", attempt.status, None, now, delivered=True)
            self._healthy(due.endpoint_id)
            WEBHOOK_DELIVERIES.labels("succeeded").inc()
            WEBHOOK_DELIVERY_LAG.observe(max(0.0, now - due.committed_at))
            return
        log.info("webhook_attempt_failed", endpoint_id=due.endpoint_id, message_id=due.message_id, attempt=attempts,
                 status=attempt.status, error=attempt.error)
        if attempt.status == 410:
            self._finish(due, "failed", attempt.status, None, now)
            WEBHOOK_DELIVERIES.labels("failed").inc()
            self._disable(due.endpoint_id, DISABLED_GONE)
            return
        if attempts <= len(self.schedule):
            self._finish(due, "pending", attempt.status, attempt.error, now, next_at=now + self.schedule[attempts - 1])
            WEBHOOK_DELIVERIES.labels("retrying").inc()
        else:
            self._finish(due, "failed", attempt.status, attempt.error, now)
            WEBHOOK_DELIVERIES.labels("failed").inc()
        if now - self._failing_since(due.endpoint_id, now) >= self.disable_after_failing:
            self._disable(due.endpoint_id, DISABLED_FAILING)

    # The outbox's delivery columns

    def _finish(self, due: Due, status: str, response: int | None, error: str | None, now: float,
                next_at: float | None = None, delivered: bool = False, counted: bool = True) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                """UPDATE webhook_outbox SET status = ?, attempts = attempts + ?, last_response_status = ?, last_error = ?,
                   last_attempt_at = ?, next_attempt_at = ?, delivered_at = ?, lease_until = NULL
                   WHERE message_id = ? AND status = 'pending'""",
                [status, int(counted), response, error, now, next_at, now if delivered else None, due.message_id])

    def _release(self, due: Due, next_at: float) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE webhook_outbox SET lease_until = NULL, next_attempt_at = ? WHERE message_id = ?",
                       [next_at, due.message_id])

    def _healthy(self, endpoint_id: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM webhook_endpoint_health WHERE endpoint_id = ?", [endpoint_id])

    def _failing_since(self, endpoint_id: str, now: float) -> float:
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO webhook_endpoint_health (endpoint_id, failing_since) VALUES (?, ?) ON CONFLICT (endpoint_id) "
                       "DO NOTHING", [endpoint_id, now])
            return float(tx.query("SELECT failing_since FROM webhook_endpoint_health WHERE endpoint_id = ?", [endpoint_id])[0][0])

    def _disable(self, endpoint_id: str, reason: str) -> None:
        if disable_endpoint(self.store, UUID(endpoint_id), reason):
            WEBHOOK_ENDPOINTS_DISABLED.labels(reason).inc()
            log.warning("webhook_endpoint_disabled", endpoint_id=endpoint_id, reason=reason)
        self._targets.pop(endpoint_id, None)

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

Where an event goes and with which secrets comes from another read model, the
endpoints model, which follows the log on its own: a delivery is prepared only
once that model has reached the delivery's event (`projections.positions`),
and a target cached for a moment is reused only for events at or below the
position it was read at. So a delivery of an event committed after a rotation
is signed by the new secret (and by the old ones still within their 24 h),
never by the old ones alone. A secret the model names but the secrets table
lacks puts the delivery off (an attempt not made, on the retry schedule), with
a log line and a count, rather than sending it with fewer signatures.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from uuid import UUID

import msgspec
import structlog

from application.store import EventStore
from application.webhook_endpoints import disable_endpoint
from domain.records import describe
from domain.webhook_endpoint import DISABLED_FAILING, DISABLED_GONE
from infrastructure.metrics import (
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERIES_DEFERRED,
    WEBHOOK_DELIVERY_LAG,
    WEBHOOK_ENDPOINTS_DISABLED,
)
from infrastructure.personal_data import DeploymentKeys
from infrastructure.settings import Settings
from infrastructure.sql import Database
from infrastructure.webhook_sender import TIMEOUT, Attempt, WebhookSender
from projections.positions import reached
from projections.runner import is_unavailable
from projections.webhook_endpoints import DeliveryTarget, EndpointRow, WebhookEndpointsView, endpoint_target
from projections.webhook_outbox import Due, claim, due_deliveries, prune

log = structlog.get_logger("webhooks")

PER_ENDPOINT = 8  # attempts in flight per endpoint
BATCH = 200
POLL = 1.0  # how often the outbox is looked at when nothing wakes the dispatcher (other processes' retries)
LEASE = TIMEOUT + 30.0
DISABLE_AFTER_FAILING = 5 * 86400.0
KEEP_FINISHED = 30 * 86400.0  # a finished delivery stays in the delivery log this long
PRUNE_EVERY = 3600.0
TARGET_CACHE = 1.0  # seconds an endpoint's URL and secrets are reused between attempts (of events it has reached)
BEHIND_WAIT = 0.25  # how long a claim waits for the endpoints model to reach its deliveries' events
BEHIND_RETRY = 0.1  # then a delivery still ahead of it is looked at again this much later
SECRET_MISSING = "signing_secret_missing"
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
        self.endpoints = WebhookEndpointsView(db, create=False)
        # endpoint id -> (reuse until, the endpoints model's position when read, its row, its target)
        self._targets: dict[str, tuple[float, int, EndpointRow, DeliveryTarget | None]] = {}
        self._inflight: dict[str, int] = defaultdict(int)
        self._soonest: float | None = None  # the earliest retry recorded since the last claim

    @classmethod
    def from_settings(cls, settings: Settings, store: EventStore, db: Database) -> WebhookDispatcher:
        return cls(store, db, DeploymentKeys.from_settings(settings), settings.webhook_retry_delays, settings.webhook_allow_private)

    # Running

    def start(self, stopping: threading.Event) -> threading.Thread:
        def run() -> None:
            try:
                asyncio.run(self.run(stopping))
            except BaseException as error:
                log.error("webhook_dispatcher_stopped", error=repr(error))  # what is queued waits for the next process
                raise

        thread = threading.Thread(target=run, name="webhook-dispatcher", daemon=True)
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
        sender = self.sender or WebhookSender(allow_private=self.allow_private, per_endpoint=PER_ENDPOINT)
        tasks: set[asyncio.Task[None]] = set()
        self._results: list[tuple[Due, Attempt]] = []
        self._recorded = asyncio.Event()
        recorder = asyncio.create_task(self._record_results(stopping))
        backoff = 0.2
        pruned_at = 0.0
        try:
            while not stopping.is_set():
                self._wakeup.clear()
                if self.clock() - pruned_at >= PRUNE_EVERY:
                    pruned_at = self.clock()
                    try:
                        gone = await asyncio.to_thread(prune, self.db, pruned_at - KEEP_FINISHED)
                        if gone:
                            log.info("webhook_deliveries_pruned", deliveries=gone)
                    except Exception as error:  # noqa: BLE001 - next hour, then
                        log.warning("webhook_prune_failed", error=type(error).__name__)
                try:
                    ready = await asyncio.to_thread(self._claim_and_prepare, dict(self._inflight))
                    backoff = 0.2
                except Exception as error:  # noqa: BLE001 - the database is unreachable for now: try again
                    log.warning("webhook_outbox_unavailable", error=type(error).__name__, retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                for due, target, body in ready:
                    self._inflight[due.endpoint_id] += 1
                    task = asyncio.create_task(self._attempt(sender, due, target, body))
                    tasks.add(task)
                    task.add_done_callback(lambda done, endpoint=due.endpoint_id: self._finished(tasks, done, endpoint))
                if ready:
                    continue  # there may be more due: look again before waiting
                # Until woken, or the soonest retry this process scheduled, or the poll (other processes' rows).
                soonest, self._soonest = self._soonest, None
                timeout = POLL if soonest is None else min(POLL, max(0.01, soonest - self.clock()))
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            if tasks:
                await asyncio.wait(tasks, timeout=TIMEOUT + 1)  # attempts in flight finish, or their leases run out
            self._recorded.set()
            await recorder
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

    async def _attempt(self, sender: WebhookSender, due: Due, target: DeliveryTarget, body: bytes) -> None:
        attempt = await sender.send(target.url, due.message_id, int(self.clock()), body, target.signing_secrets, due.endpoint_id)
        self._results.append((due, attempt))
        self._recorded.set()

    async def _record_results(self, stopping: threading.Event) -> None:
        """Write the attempts' results, as many as have come in, one transaction at a time."""
        while True:
            await self._recorded.wait()
            self._recorded.clear()
            batch, self._results = self._results, []
            if batch:
                try:
                    await asyncio.to_thread(self._record, batch)
                except Exception as error:  # noqa: BLE001 - unrecorded: the leases run out and the attempts are repeated
                    log.warning("webhook_results_not_recorded", attempts=len(batch), error=type(error).__name__)
            if stopping.is_set() and not self._results:
                return

    # Claiming, in one worker thread: the leases, then each delivery's target and body.

    def _claim_and_prepare(self, inflight: dict[str, int]) -> list[tuple[Due, DeliveryTarget, bytes]]:
        now = self.clock()
        busy = sorted(e for e, n in inflight.items() if n >= PER_ENDPOINT)
        room = dict(inflight)
        chosen = []
        for due in due_deliveries(self.db, now, BATCH, busy):
            if room.get(due.endpoint_id, 0) < PER_ENDPOINT:
                room[due.endpoint_id] = room.get(due.endpoint_id, 0) + 1
                chosen.append(due)
        taken = claim(self.db, chosen, now, now + LEASE) if chosen else []
        # The endpoints model at least at the deliveries' events, or those ahead of it wait a moment: rows read
        # after its position hold at least what the position says.
        model_at = reached(self.endpoints, max(d.position for d in taken), BEHIND_WAIT) if taken else 0
        ready, bodies = [], {}
        later: list[Due] = []
        not_sent: list[tuple[Due, str]] = []
        unsigned: list[tuple[Due, int]] = []
        for due in taken:
            row, target = self._target(due, model_at, now) if due.position <= model_at else (None, None)
            if row is None:  # the endpoints model has not reached this delivery's event: in a moment
                later.append(due)
                continue
            if target is None:
                not_sent.append((due, "endpoint_deleted" if row.deleted else "endpoint_disabled"))
                continue
            if target.missing_secrets or not target.signing_secrets:
                unsigned.append((due, len(target.missing_secrets)))
                continue
            if due.position not in bodies:  # one rendering per event, however many endpoints it goes to
                try:
                    bodies[due.position] = self.render(due.position)
                except Exception as error:  # the lease runs out and the attempt is made again later
                    if is_unavailable(error):
                        raise
                    log.error("webhook_not_rendered", message_id=due.message_id, position=due.position, error=type(error).__name__)
                    continue
            ready.append((due, target, bodies[due.position]))
        if later or not_sent or unsigned:
            self._put_off(now, later, not_sent, unsigned)
        return ready

    def _put_off(self, now: float, later: list[Due], not_sent: list[tuple[Due, str]], unsigned: list[tuple[Due, int]]) -> None:
        """Leave for a moment what the endpoints model has not reached; fail what goes nowhere; and count an attempt
        not made for what lacks a signing secret (retried on the schedule, as an attempt that got no answer)."""
        retries = []
        for due, _ in unsigned:
            attempts = due.attempts + 1
            next_at = now + self.schedule[attempts - 1] if attempts <= len(self.schedule) else None
            retries.append(("pending" if next_at is not None else "failed", SECRET_MISSING, now, next_at, due.message_id))
        with self.db.transaction() as tx:
            tx.executemany("UPDATE webhook_outbox SET lease_until = NULL, next_attempt_at = ? WHERE message_id = ?",
                           [(now + BEHIND_RETRY, due.message_id) for due in later])
            tx.executemany("UPDATE webhook_outbox SET status = 'failed', last_error = ?, last_attempt_at = ?, "
                           "next_attempt_at = NULL, lease_until = NULL WHERE message_id = ? AND status = 'pending'",
                           [(reason, now, due.message_id) for due, reason in not_sent])
            tx.executemany("UPDATE webhook_outbox SET status = ?, attempts = attempts + 1, last_error = ?, last_attempt_at = ?, "
                           "next_attempt_at = ?, lease_until = NULL WHERE message_id = ? AND status = 'pending'", retries)
        soonest = [t for t in [*(now + BEHIND_RETRY for _ in later[:1]), *(r[3] for r in retries)] if t is not None]
        if soonest:
            self._soonest = min(soonest) if self._soonest is None else min(self._soonest, *soonest)
        if later:
            WEBHOOK_DELIVERIES_DEFERRED.labels("endpoints_behind").inc(len(later))
        for due, reason in not_sent:
            log.info("webhook_not_sent", endpoint_id=due.endpoint_id, message_id=due.message_id, reason=reason)
        for (due, missing), (status, *_) in zip(unsigned, retries, strict=True):
            self._targets.pop(due.endpoint_id, None)  # read again next time: the secret may be back (a restore)
            WEBHOOK_DELIVERIES_DEFERRED.labels(SECRET_MISSING).inc()
            if status == "failed":
                WEBHOOK_DELIVERIES.labels("failed").inc()
            # The secrets' ids and values stay out of the log: how many are missing says enough to look for them.
            log.warning("webhook_signing_secret_missing", endpoint_id=due.endpoint_id, message_id=due.message_id,
                        missing=missing, attempt=due.attempts + 1, retrying=status == "pending")

    def _target(self, due: Due, model_at: int, now: float) -> tuple[EndpointRow | None, DeliveryTarget | None]:
        """The endpoint as the endpoints model has it at `model_at` or later (`model_at` >= the delivery's event);
        a cached target only if it was read at or after the delivery's event, and a moment ago at most."""
        cached = self._targets.get(due.endpoint_id)
        if cached is not None and cached[0] > now and cached[1] >= due.position:
            return cached[2], cached[3]
        row, target = endpoint_target(self.db, self.keys, due.endpoint_id)  # read after `model_at`: at least there
        if row is not None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[due.endpoint_id] = (now + TARGET_CACHE, model_at, row, target)
        return row, target

    def render(self, position: int) -> bytes:
        """The body of the event at `position`, as the audit feed shows it, with personal values as they are now."""
        found = self.store.recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            raise LookupError(f"no event at position {position}")
        record = describe(self.store.mapper.to_domain_event(found[0]))
        data = {f"{record.aggregate_type}_id": record.aggregate_id, **record.data}
        return _encode({"type": record.type, "timestamp": record.occurred_at, "data": data})

    def _record(self, results: Sequence[tuple[Due, Attempt]]) -> None:
        """The attempts' results in the outbox, in one transaction; then the endpoints a 410 or 5 days of failures
        disable."""
        now = self.clock()
        rows, succeeded, failing, gone = [], set(), set(), set()
        for due, attempt in results:
            attempts = due.attempts + 1
            if attempt.succeeded:
                rows.append(("succeeded", attempt.status, None, now, None, now, due.message_id))
                succeeded.add(due.endpoint_id)
                WEBHOOK_DELIVERIES.labels("succeeded").inc()
                WEBHOOK_DELIVERY_LAG.observe(max(0.0, now - due.committed_at))
                continue
            log.info("webhook_attempt_failed", endpoint_id=due.endpoint_id, message_id=due.message_id, attempt=attempts,
                     status=attempt.status, error=attempt.error)
            if attempt.status == 410:
                rows.append(("failed", attempt.status, None, now, None, None, due.message_id))
                gone.add(due.endpoint_id)
                WEBHOOK_DELIVERIES.labels("failed").inc()
            elif attempts <= len(self.schedule):
                next_at = now + self.schedule[attempts - 1]
                rows.append(("pending", attempt.status, attempt.error, now, next_at, None, due.message_id))
                soonest = self._soonest
                self._soonest = next_at if soonest is None else min(soonest, next_at)
                failing.add(due.endpoint_id)
                WEBHOOK_DELIVERIES.labels("retrying").inc()
            else:
                rows.append(("failed", attempt.status, attempt.error, now, None, None, due.message_id))
                failing.add(due.endpoint_id)
                WEBHOOK_DELIVERIES.labels("failed").inc()
        failing -= succeeded  # one success in the batch: the endpoint is not failing
        with self.db.transaction() as tx:
            tx.executemany(
                """UPDATE webhook_outbox SET status = ?, attempts = attempts + 1, last_response_status = ?, last_error = ?,
                   last_attempt_at = ?, next_attempt_at = ?, delivered_at = ?, lease_until = NULL
                   WHERE message_id = ? AND status = 'pending'""", rows)
            tx.executemany("DELETE FROM webhook_endpoint_health WHERE endpoint_id = ?", [(e,) for e in sorted(succeeded)])
            tx.executemany("INSERT INTO webhook_endpoint_health (endpoint_id, failing_since) VALUES (?, ?) "
                           "ON CONFLICT (endpoint_id) DO NOTHING", [(e, now) for e in sorted(failing)])
            since = {e: float(f) for e, f in tx.query(
                f"SELECT endpoint_id, failing_since FROM webhook_endpoint_health WHERE endpoint_id IN ({','.join('?' * len(failing))})",
                sorted(failing))} if failing else {}
        for endpoint_id in sorted(gone):
            self._disable(endpoint_id, DISABLED_GONE)
        for endpoint_id, failing_since in sorted(since.items()):
            if now - failing_since >= self.disable_after_failing:
                self._disable(endpoint_id, DISABLED_FAILING)

    def _disable(self, endpoint_id: str, reason: str) -> None:
        if disable_endpoint(self.store, UUID(endpoint_id), reason):
            WEBHOOK_ENDPOINTS_DISABLED.labels(reason).inc()
            log.warning("webhook_endpoint_disabled", endpoint_id=endpoint_id, reason=reason)
        self._targets.pop(endpoint_id, None)

"""The webhook outbox: one row per (event, endpoint) that must be delivered, written with the projection's position.

The projection follows the whole log. It keeps, at its own position, which
organization owns each aggregate and which endpoints are subscribed to what
(`webhook_routes`), so an event is queued for exactly the endpoints that were
enabled and subscribed when it was committed, for its own organization only,
whatever other projections have reached. Rows and position go in one
transaction (SqlView), so a crash repeats a page at most, and the stable
`message_id` (the Standard Webhooks `webhook-id`, one per event and endpoint)
makes a repeated page queue nothing twice.

The dispatcher (api/webhook_delivery.py) owns the delivery columns (status,
attempts, times, lease); a rebuild replays routes and owners but never empties
the outbox, so history and statuses survive it, and nothing is delivered
again. Rows hold positions, types, codes and times, never a body: bodies are
rendered from the log at send time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from domain.webhook_endpoint import SUBSCRIBABLE_EVENT_TYPES, WebhookEndpoint, subscribes_to
from infrastructure.sql import Database, Executor
from projections.cursor import decode_cursor, encode_cursor
from projections.sql_view import APPLIED, IN_CHUNK, SqlView

NAME = "webhook_outbox"
MESSAGE_IDS = uuid.UUID("7b0e3f52-9c61-4d7a-a1f4-2f6c1e0b8d45")
PENDING = "pending"
MESSAGE_ID_PATTERN = "^msg_[0-9a-f]{32}$"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS webhook_outbox (
        message_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, organization_id TEXT NOT NULL, position BIGINT NOT NULL,
        event_type TEXT NOT NULL, committed_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        next_attempt_at DOUBLE PRECISION, lease_until DOUBLE PRECISION, last_attempt_at DOUBLE PRECISION,
        last_response_status INTEGER, last_error TEXT, delivered_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_by_endpoint ON webhook_outbox (endpoint_id, position, message_id)",
    """CREATE TABLE IF NOT EXISTS webhook_routes (endpoint_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL,
        events_json TEXT NOT NULL, active BOOLEAN NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS webhook_routes_by_org ON webhook_routes (organization_id)",
    "CREATE TABLE IF NOT EXISTS webhook_owners (aggregate_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL)",
    # The position up to which finished deliveries were pruned: a replay queues nothing at or below it again.
    "CREATE TABLE IF NOT EXISTS webhook_outbox_horizon (id INTEGER PRIMARY KEY, position BIGINT NOT NULL)",
    # The dispatcher's: since when each endpoint has failed without a success (an endpoint failing 5 days is disabled).
    "CREATE TABLE IF NOT EXISTS webhook_endpoint_health (endpoint_id TEXT PRIMARY KEY, failing_since DOUBLE PRECISION)",
]


def message_id(endpoint_id: str, aggregate_id: str, version: int) -> str:
    """The `webhook-id` of one event to one endpoint: the same on every attempt, after a crash, and after a rebuild."""
    return "msg_" + uuid.uuid5(MESSAGE_IDS, f"{endpoint_id}/{aggregate_id}/{version}").hex


@dataclass
class Route:
    endpoint_id: str
    organization_id: str
    events: list[str]
    active: bool


@dataclass
class OutboxChanges:
    owners: dict[str, str] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    queued: list[tuple[str, str, str, int, str, float]] = field(default_factory=list)  # message, endpoint, org, position, type, at


class WebhookOutboxProjection:
    topics: Sequence[str] = ()  # every event: any of them may be subscribed to

    def apply(self, events: Sequence[Any], source: WebhookOutboxView, positions: Sequence[int] = ()) -> OutboxChanges:
        changes = OutboxChanges()
        horizon = source.horizon()
        owners = source.owners({str(e.originator_id) for e in events})
        for event in events:
            organization = getattr(event, "organization_id", None) if event.originator_version == 1 else None
            if organization and str(event.originator_id) not in owners:
                owners[str(event.originator_id)] = changes.owners[str(event.originator_id)] = organization
        routes = source.routes(set(owners.values()))
        for event, position in zip(events, positions, strict=True):
            aggregate_id = str(event.originator_id)
            organization = owners.get(aggregate_id)
            if organization is None:
                continue
            event_type = type(event).TOPIC
            if event_type in SUBSCRIBABLE_EVENT_TYPES and position > horizon:
                at = event.timestamp.timestamp()
                for route in routes.values():
                    if route.active and route.organization_id == organization and subscribes_to(route.events, event_type):
                        changes.queued.append((message_id(route.endpoint_id, aggregate_id, event.originator_version),
                                               route.endpoint_id, organization, position, event_type, at))
            # Then the subscriptions as of after this event: an endpoint hears of events after its creation (and
            # after its re-enabling), not of its own creation or disabling.
            self._route(event, aggregate_id, organization, routes, changes)
        return changes

    @staticmethod
    def _route(event: Any, endpoint_id: str, organization: str, routes: dict[str, Route], changes: OutboxChanges) -> None:
        """Keep the subscriptions up to date with an endpoint's own events."""
        route = routes.get(endpoint_id)
        if isinstance(event, WebhookEndpoint.Created):
            route = Route(endpoint_id, organization, list(event.events), True)
        elif route is None:
            return
        elif isinstance(event, WebhookEndpoint.EventsChanged):
            route.events = list(event.events)
        elif isinstance(event, WebhookEndpoint.Disabled | WebhookEndpoint.Deleted):
            route.active = False
        elif isinstance(event, WebhookEndpoint.Enabled):
            route.active = True
        else:
            return
        routes[endpoint_id] = changes.routes[endpoint_id] = route


class Delivery(msgspec.Struct):
    """One row of an endpoint's delivery log, as the admin API answers it (no body: codes and times only)."""

    message_id: str
    event_type: str
    attempts: int
    status: str
    last_response_status: int | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    last_attempt_at: datetime | None
    last_error: str | None  # why an attempt got no status: timeout, connect_failed, address_not_allowed, ...


@dataclass(frozen=True)
class Due:
    """A delivery to attempt now."""

    message_id: str
    endpoint_id: str
    organization_id: str
    position: int
    event_type: str
    committed_at: float
    attempts: int


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _delivery(row: Sequence[Any]) -> Delivery:
    """A delivery from (message_id, event_type, attempts, status, last_response_status, next_attempt_at, delivered_at,
    committed_at, last_attempt_at, last_error); `next_attempt_at` only while it is pending."""
    message, event_type, attempts, status, response, next_at, delivered, committed, attempted, error = row
    return Delivery(message, event_type, attempts, status, response, _time(next_at) if status == PENDING else None,
                    _time(delivered), datetime.fromtimestamp(committed, UTC), _time(attempted), error)


class WebhookOutboxView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = ("webhook_routes", "webhook_owners")  # a rebuild replays these; the outbox itself is kept (see above)
    on_queued: Callable[[], None] | None = None  # the dispatcher in this process, woken after a page queued deliveries

    @classmethod
    def prepare_replay(cls, live: Database, scratch: Database) -> None:
        """The horizon: deliveries pruned from the live outbox are not queued by the replay either."""
        found = live.query("SELECT position FROM webhook_outbox_horizon WHERE id = 1")
        if found:
            with scratch.transaction() as tx:
                tx.execute("INSERT INTO webhook_outbox_horizon (id, position) VALUES (1, ?)", [found[0][0]])

    def owners(self, ids: set[str]) -> dict[str, str]:
        return dict(self.select_in("SELECT aggregate_id, organization_id FROM webhook_owners WHERE aggregate_id IN", ids))

    def horizon(self) -> int:
        found = self.db.query("SELECT position FROM webhook_outbox_horizon WHERE id = 1")
        return int(found[0][0]) if found else 0

    def routes(self, organizations: set[str]) -> dict[str, Route]:
        found = self.select_in("SELECT endpoint_id, organization_id, events_json, active FROM webhook_routes WHERE organization_id IN",
                               organizations)
        return {e: Route(e, o, msgspec.json.decode(j), bool(a)) for e, o, j, a in found}

    def write(self, tx: Executor, changes: OutboxChanges) -> None:
        tx.executemany("INSERT INTO webhook_owners (aggregate_id, organization_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       sorted(changes.owners.items()))
        tx.executemany(
            """INSERT INTO webhook_routes (endpoint_id, organization_id, events_json, active) VALUES (?, ?, ?, ?)
               ON CONFLICT (endpoint_id) DO UPDATE SET events_json = excluded.events_json, active = excluded.active""",
            [(r.endpoint_id, r.organization_id, msgspec.json.encode(r.events).decode(), r.active) for r in changes.routes.values()])
        tx.executemany(
            """INSERT INTO webhook_outbox (message_id, endpoint_id, organization_id, position, event_type, committed_at, status,
               attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?) ON CONFLICT (message_id) DO NOTHING""",
            [(*row, row[5]) for row in changes.queued])

    def commit(self, changes: OutboxChanges, first: int, last: int) -> int:
        result = super().commit(changes, first, last)
        if result == APPLIED and changes.queued and self.on_queued is not None:
            self.on_queued()
        return result

    # The delivery log, for the admin API and the CLI.

    def deliveries(self, endpoint_id: str, limit: int, cursor: str | None = None) -> tuple[list[Delivery], str | None]:
        """One endpoint's deliveries, newest event first, and the cursor of the next page."""
        where, params = "endpoint_id = ?", [endpoint_id]  # (every parameter below is a string or an int)
        if cursor:
            text, after_id = decode_cursor(cursor)
            position = int(text)  # ValueError: not a cursor of this list
            where += " AND (position < ? OR (position = ? AND message_id < ?))"
            params += [position, position, after_id]
        found = self.db.query(
            f"""SELECT message_id, event_type, attempts, status, last_response_status, next_attempt_at, delivered_at, committed_at,
                last_attempt_at, last_error, position FROM webhook_outbox WHERE {where} ORDER BY position DESC, message_id DESC LIMIT ?""",
            [*params, limit + 1])
        items = [_delivery(row[:10]) for row in found[:limit]]
        next_cursor = encode_cursor(str(found[limit - 1][10]), found[limit - 1][0]) if len(found) > limit else None
        return items, next_cursor

    def failing(self, organization_id: str | None = None, limit: int = 100) -> list[tuple[str, Delivery]]:
        """Deliveries that failed or are being retried after a failure, newest first: (endpoint id, delivery)."""
        where = "(status = 'failed' OR (status = 'pending' AND attempts > 0))"
        params: list[Any] = []
        if organization_id is not None:
            where += " AND organization_id = ?"
            params.append(organization_id)
        found = self.db.query(
            f"""SELECT endpoint_id, message_id, event_type, attempts, status, last_response_status, next_attempt_at, delivered_at,
                committed_at, last_attempt_at, last_error FROM webhook_outbox WHERE {where} ORDER BY position DESC, message_id DESC
                LIMIT ?""", [*params, limit])
        return [(row[0], _delivery(row[1:])) for row in found]

    def retry(self, endpoint_id: str, message: str, now: float) -> bool:
        """Bring one delivery forward (or back from failed or succeeded) to be attempted at once; False if there is none."""
        with self.db.transaction() as tx:
            changed = tx.execute("UPDATE webhook_outbox SET status = 'pending', next_attempt_at = ? WHERE endpoint_id = ? AND "
                                 "message_id = ?", [now, endpoint_id, message])
            return bool(changed.rowcount)


def due_deliveries(db: Database, now: float, limit: int, busy: Sequence[str] = ()) -> list[Due]:
    """Pending deliveries whose time has come and that no process holds, oldest first, skipping `busy` endpoints."""
    where = ""
    if busy:
        where = f" AND endpoint_id NOT IN ({','.join('?' * len(busy))})"
    found = db.query(
        f"""SELECT message_id, endpoint_id, organization_id, position, event_type, committed_at, attempts FROM webhook_outbox
            WHERE status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?){where}
            ORDER BY next_attempt_at, position LIMIT ?""", [now, now, *busy, limit])
    return [Due(*row) for row in found]


def claim(db: Database, deliveries: Sequence[Due], now: float, until: float) -> list[Due]:
    """Take a lease on each delivery no other process holds; returns those taken (a crash lets the lease run out).
    One statement per chunk: `RETURNING` names the rows this process took."""
    by_id = {d.message_id: d for d in deliveries}
    taken: list[Due] = []
    ids = list(by_id)
    with db.transaction() as tx:
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i : i + IN_CHUNK]
            found = tx.query(f"""UPDATE webhook_outbox SET lease_until = ? WHERE message_id IN ({','.join('?' * len(chunk))})
                                 AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?) RETURNING message_id""",
                             [until, *chunk, now])
            taken += [by_id[m] for (m,) in found]
    return taken


def prune(db: Database, before: float) -> int:
    """Forget deliveries that finished (succeeded or failed) before `before`, and raise the horizon past them so
    that no replay queues them again; pending ones are kept, whatever their age. Returns how many went."""
    with db.transaction() as tx:
        found = tx.query("SELECT MAX(position), COUNT(*) FROM webhook_outbox WHERE status <> 'pending' AND last_attempt_at < ?",
                         [before])
        highest, count = found[0]
        if not count:
            return 0
        tx.execute("DELETE FROM webhook_outbox WHERE status <> 'pending' AND last_attempt_at < ? AND position <= ?",
                   [before, highest])
        tx.execute("INSERT INTO webhook_outbox_horizon (id, position) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET "
                   "position = CASE WHEN excluded.position > webhook_outbox_horizon.position THEN excluded.position "
                   "ELSE webhook_outbox_horizon.position END", [highest])
        return int(count)

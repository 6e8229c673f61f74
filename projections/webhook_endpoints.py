"""The webhook endpoints read model in SQL: the admin list, and what the deliverer reads to know where an event goes.

Rows and the position are written in one transaction (SqlView), so each event
counts once; a rebuild replays the endpoints' events. Rows name secrets by id
only: `endpoints_for_delivery` opens them from the sealed table
(infrastructure/webhook_secrets.py), which a rebuild does not touch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import singledispatchmethod
from typing import Any
from uuid import UUID

import msgspec

from domain import event_types as t
from domain.webhook_endpoint import WebhookEndpoint, subscribes_to
from infrastructure.personal_data import DeploymentKeys
from infrastructure.sql import Database, Executor
from infrastructure.webhook_secrets import open_secrets
from projections.sql_view import SqlView

NAME = "webhook_endpoints"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS webhook_endpoints (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, created_at TEXT NOT NULL,
        deleted BOOLEAN NOT NULL, disabled BOOLEAN NOT NULL, row_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS webhook_endpoints_by_org ON webhook_endpoints (organization_id, created_at, id)""",
]
TABLES = ("webhook_endpoints",)


class EndpointRow(msgspec.Struct, kw_only=True):
    id: str
    organization_id: str
    url: str
    events: list[str]
    description: str | None
    disabled: bool = False
    disabled_reason: str | None = None
    deleted: bool = False
    secret_id: str
    previous_secrets: dict[str, datetime] = {}  # secret id -> until when it still signs
    created_at: datetime
    updated_at: datetime
    version: int
    created_position: int = 0  # the log position of webhook_endpoint.created (0 in rows written before it was kept)


@dataclass(frozen=True)
class DeliveryTarget:
    """Where one event goes: an enabled endpoint subscribed to its type, with the secrets that sign it."""

    endpoint_id: UUID
    organization_id: str
    url: str
    # The current secret first, then rotated-out ones still within their 24 h, each that the secrets table holds.
    signing_secrets: list[bytes]
    # The log position of the endpoint's creation: an event at or below it happened before the endpoint existed.
    created_position: int = 0
    # The ids of secrets the row names but the secrets table lacks (a restore without the table, an endpoint deleted
    # since): the delivery waits rather than going out with fewer signatures than the contract promises.
    missing_secrets: tuple[str, ...] = ()


_encode = msgspec.json.Encoder().encode
_decode_row = msgspec.json.Decoder(EndpointRow).decode


class WebhookEndpointsProjection:
    """Applies a page of endpoint events to the rows it touches; returns the rows to write."""

    topics: Sequence[str] = (
        t.WEBHOOK_ENDPOINT_CREATED, t.WEBHOOK_ENDPOINT_URL_CHANGED, t.WEBHOOK_ENDPOINT_EVENTS_CHANGED,
        t.WEBHOOK_ENDPOINT_SECRET_ROTATED, t.WEBHOOK_ENDPOINT_DISABLED, t.WEBHOOK_ENDPOINT_ENABLED, t.WEBHOOK_ENDPOINT_DELETED,
    )

    def apply(self, events: Sequence[Any], source: WebhookEndpointsView, positions: Sequence[int] = ()) -> dict[str, EndpointRow]:
        self.rows = source.load({str(e.originator_id) for e in events})
        self.changed: dict[str, EndpointRow] = {}
        for event, position in zip(events, positions or [0] * len(events), strict=True):
            self.position = position
            self.process_event(event)
        return self.changed

    def _row(self, event: Any) -> EndpointRow | None:
        row = self.rows.get(str(event.originator_id))
        if row is not None:
            row.updated_at, row.version = event.timestamp, event.originator_version
            self.changed[row.id] = row
        return row

    @singledispatchmethod
    def process_event(self, event: Any) -> None:
        """Events this read model does not need change nothing."""

    @process_event.register
    def _(self, event: WebhookEndpoint.Created) -> None:
        row = EndpointRow(id=str(event.originator_id), organization_id=event.organization_id, url=event.url,
                          events=list(event.events), description=event.description, secret_id=str(event.secret_id),
                          created_at=event.timestamp, updated_at=event.timestamp, version=event.originator_version,
                          created_position=self.position)
        self.rows[row.id] = self.changed[row.id] = row

    @process_event.register
    def _(self, event: WebhookEndpoint.UrlChanged) -> None:
        if row := self._row(event):
            row.url = event.url

    @process_event.register
    def _(self, event: WebhookEndpoint.EventsChanged) -> None:
        if row := self._row(event):
            row.events = list(event.events)

    @process_event.register
    def _(self, event: WebhookEndpoint.SecretRotated) -> None:
        if row := self._row(event):
            row.previous_secrets = {**row.previous_secrets, row.secret_id: event.previous_secret_expires_at}
            row.secret_id = str(event.secret_id)

    @process_event.register
    def _(self, event: WebhookEndpoint.Disabled) -> None:
        if row := self._row(event):
            row.disabled, row.disabled_reason = True, event.reason

    @process_event.register
    def _(self, event: WebhookEndpoint.Enabled) -> None:
        if row := self._row(event):
            row.disabled, row.disabled_reason = False, None

    @process_event.register
    def _(self, event: WebhookEndpoint.Deleted) -> None:
        if row := self._row(event):
            row.deleted = True


class WebhookEndpointsView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = TABLES

    def load(self, ids: set[str]) -> dict[str, EndpointRow]:
        rows = [_decode_row(j) for (j,) in self.select_in("SELECT row_json FROM webhook_endpoints WHERE id IN", ids)]
        return {row.id: row for row in rows}

    def write(self, tx: Executor, changes: dict[str, EndpointRow]) -> None:
        tx.executemany(
            """INSERT INTO webhook_endpoints (id, organization_id, created_at, deleted, disabled, row_json) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET deleted = excluded.deleted, disabled = excluded.disabled, row_json = excluded.row_json""",
            [(r.id, r.organization_id, r.created_at.isoformat(), r.deleted, r.disabled, _encode(r).decode()) for r in changes.values()],
        )

    def endpoints(self, organization_id: str) -> list[EndpointRow]:
        """This organization's endpoints that are not deleted, oldest first."""
        return organization_endpoints(self.db, organization_id)


def organization_endpoints(db: Database | Executor, organization_id: str, enabled_only: bool = False) -> list[EndpointRow]:
    where = " AND disabled = ?" if enabled_only else ""
    found = db.query(f"SELECT row_json FROM webhook_endpoints WHERE organization_id = ? AND deleted = ?{where} "
                     "ORDER BY created_at, id", [organization_id, False, *([False] if enabled_only else [])])
    return [_decode_row(r[0]) for r in found]


def listed_endpoints(db: Database | Executor, organization_id: str | None = None) -> list[EndpointRow]:
    """Every organization's endpoints that are not deleted (or one organization's), oldest first (`widgets webhooks`)."""
    if organization_id is not None:
        return organization_endpoints(db, organization_id)
    found = db.query("SELECT row_json FROM webhook_endpoints WHERE deleted = ? ORDER BY created_at, id", [False])
    return [_decode_row(r[0]) for r in found]


def endpoints_for_delivery(db: Database | Executor, keys: DeploymentKeys, organization_id: str, event_type: str,
                           now: datetime | None = None) -> list[DeliveryTarget]:
    """The enabled, undeleted endpoints of `organization_id` subscribed to `event_type` ("*" takes every type),
    oldest first, each with its signing secrets opened: the current one first, then those rotated out less than
    24 hours before `now`."""
    now = now or datetime.now(UTC)
    rows = [r for r in organization_endpoints(db, organization_id, enabled_only=True) if subscribes_to(r.events, event_type)]
    wanted = {r.id: signing_secret_ids(r, now) for r in rows}
    opened = open_secrets(db, keys, [s for ids in wanted.values() for s in ids])
    return [_target(r, wanted[r.id], opened) for r in rows]


def _target(row: EndpointRow, secret_ids: list[str], opened: dict[UUID, bytes]) -> DeliveryTarget:
    return DeliveryTarget(UUID(row.id), row.organization_id, row.url, [opened[UUID(s)] for s in secret_ids if UUID(s) in opened],
                          row.created_position, tuple(s for s in secret_ids if UUID(s) not in opened))


def signing_secret_ids(row: EndpointRow, now: datetime) -> list[str]:
    previous = sorted(((until, s) for s, until in row.previous_secrets.items() if until > now), reverse=True)
    return [row.secret_id, *(s for _, s in previous)]


def endpoint_target(db: Database | Executor, keys: DeploymentKeys, endpoint_id: str,
                    now: datetime | None = None) -> tuple[EndpointRow | None, DeliveryTarget | None]:
    """One endpoint's row as the read model has it (None if it has not reached the endpoint), and where its
    deliveries go now (None unless it is enabled and not deleted)."""
    found = db.query("SELECT row_json FROM webhook_endpoints WHERE id = ?", [endpoint_id])
    if not found:
        return None, None
    row = _decode_row(found[0][0])
    if row.deleted or row.disabled:
        return row, None
    ids = signing_secret_ids(row, now or datetime.now(UTC))
    return row, _target(row, ids, open_secrets(db, keys, ids))

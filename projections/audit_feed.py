"""The organization's event feed: every event of its widgets, agents and conversations, in commit order.

Only Created events name the organization, so the projection keeps which
organization owns each aggregate, and writes each event under its owner, with
its position, in the same transaction as the tracking position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from domain.records import EventRecord, describe
from infrastructure.sql import Executor
from projections.sql_view import SqlView

NAME = "audit_feed"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS audit_feed (position BIGINT PRIMARY KEY, organization_id TEXT NOT NULL,
        aggregate_id TEXT NOT NULL, event_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS audit_feed_by_org ON audit_feed (organization_id, position)""",
    """CREATE TABLE IF NOT EXISTS audit_owners (aggregate_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL)""",
]


class FeedEvent(msgspec.Struct):
    """An event in the organization's feed; `position` is the cursor to resume after."""

    position: int
    aggregate_type: str
    aggregate_id: str
    version: int
    type: str
    occurred_at: Any
    actor: str
    data: dict[str, Any]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(FeedEvent).decode


class AuditFeedProjection:
    topics: Sequence[str] = ()  # every event

    def apply(
        self, events: Sequence[Any], source: AuditFeedView, positions: Sequence[int] = ()
    ) -> tuple[dict[str, str], list[tuple[str, FeedEvent]]]:
        owners = source.owners({str(e.originator_id) for e in events})
        feed: list[tuple[str, FeedEvent]] = []
        self.new_owners: dict[str, str] = {}
        for event, position in zip(events, positions, strict=True):
            aggregate_id = str(event.originator_id)
            organization = getattr(event, "organization_id", None) if event.originator_version == 1 else None
            if organization:
                owners[aggregate_id] = self.new_owners[aggregate_id] = organization
            owner = owners.get(aggregate_id)
            if owner is None:
                continue  # not an aggregate of any organization (nothing of ours today)
            record: EventRecord = describe(event)
            feed.append((owner, FeedEvent(position, record.aggregate_type, aggregate_id, record.version, record.type,
                                          record.occurred_at, record.actor, record.data)))
        return self.new_owners, feed


class AuditFeedView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = ("audit_feed", "audit_owners")

    def owners(self, ids: set[str]) -> dict[str, str]:
        return dict(self.select_in("SELECT aggregate_id, organization_id FROM audit_owners WHERE aggregate_id IN", ids))

    def write(self, tx: Executor, changes: tuple[dict[str, str], list[tuple[str, FeedEvent]]]) -> None:
        new_owners, feed = changes
        tx.executemany("INSERT INTO audit_owners (aggregate_id, organization_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       sorted(new_owners.items()))
        tx.executemany(
            "INSERT INTO audit_feed (position, organization_id, aggregate_id, event_json) VALUES (?, ?, ?, ?)",
            [(e.position, owner, e.aggregate_id, _encode(e).decode()) for owner, e in feed],
        )

    def page(self, organization_id: str, after: int, limit: int) -> list[FeedEvent]:
        found = self.db.query(
            "SELECT event_json FROM audit_feed WHERE organization_id = ? AND position > ? ORDER BY position LIMIT ?",
            [organization_id, after, limit],
        )
        return [_decode(r[0]) for r in found]

"""The organization's event feed: every event of its widgets, agents and conversations, in commit order.

Only Created events name the organization, so the projection keeps which
organization owns each aggregate, and writes each event under its owner, with
its position, in the same transaction as the tracking position.

Personal values stay sealed as the log holds them (the admin API opens them).
When a conversation's personal data is erased, its earlier events here are
rewritten with those values null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from domain import event_types as t
from domain.records import EventRecord, describe
from infrastructure.personal_data import PERSONAL_FIELDS
from infrastructure.sql import Executor
from projections.sql_view import SqlView

NAME = "audit_feed"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS audit_feed (position BIGINT PRIMARY KEY, organization_id TEXT NOT NULL,
        aggregate_id TEXT NOT NULL, event_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS audit_feed_by_org ON audit_feed (organization_id, position)""",
    """CREATE TABLE IF NOT EXISTS audit_owners (aggregate_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS audit_feed_by_aggregate ON audit_feed (aggregate_id, position)""",
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
Changes = tuple[dict[str, str], list[tuple[str, FeedEvent]], dict[str, int]]


def forget_personal(event: FeedEvent) -> bool:
    """Null the personal values of an event of an erased conversation; whether any was there."""
    changed = False
    for name in PERSONAL_FIELDS.get(event.type, ()):
        if event.data.get(name) is not None:
            event.data[name] = None
            changed = True
    return changed


class AuditFeedProjection:
    topics: Sequence[str] = ()  # every event

    def apply(self, events: Sequence[Any], source: AuditFeedView, positions: Sequence[int] = ()) -> Changes:
        owners = source.owners({str(e.originator_id) for e in events})
        feed: list[tuple[str, FeedEvent]] = []
        erased: dict[str, int] = {}  # conversation id -> the position of its erasure
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
            if record.type == t.CONVERSATION_PERSONAL_DATA_ERASED:
                erased[aggregate_id] = position
        for _, item in feed:
            if item.aggregate_id in erased and item.position < erased[item.aggregate_id]:
                forget_personal(item)
        return self.new_owners, feed, erased


class AuditFeedView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = ("audit_feed", "audit_owners")
    format = 2  # 2: personal values sealed (format 1 rows hold them in the clear)

    def scrubs(self, changes: Changes) -> bool:
        return bool(changes[2])

    def scrubs_fully(self, changes: Changes) -> bool:
        """An erasure that rewrote events in the clear: the feed held those values in the clear too."""
        return any(e.type == t.CONVERSATION_PERSONAL_DATA_ERASED and (e.data or {}).get("rewritten_events")
                   for _, e in changes[1])

    def owners(self, ids: set[str]) -> dict[str, str]:
        return dict(self.select_in("SELECT aggregate_id, organization_id FROM audit_owners WHERE aggregate_id IN", ids))

    def write(self, tx: Executor, changes: Changes) -> None:
        new_owners, feed, erased = changes
        tx.executemany("INSERT INTO audit_owners (aggregate_id, organization_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       sorted(new_owners.items()))
        tx.executemany(
            "INSERT INTO audit_feed (position, organization_id, aggregate_id, event_json) VALUES (?, ?, ?, ?)",
            [(e.position, owner, e.aggregate_id, _encode(e).decode()) for owner, e in feed],
        )
        for aggregate_id, position in sorted(erased.items()):
            rows = [_decode(j) for (j,) in tx.query(
                "SELECT event_json FROM audit_feed WHERE aggregate_id = ? AND position < ?", [aggregate_id, position])]
            tx.executemany("UPDATE audit_feed SET event_json = ? WHERE position = ?",
                           [(_encode(e).decode(), e.position) for e in rows if forget_personal(e)])

    def page(self, organization_id: str, after: int, limit: int) -> list[FeedEvent]:
        found = self.db.query(
            "SELECT event_json FROM audit_feed WHERE organization_id = ? AND position > ? ORDER BY position LIMIT ?",
            [organization_id, after, limit],
        )
        return [_decode(r[0]) for r in found]

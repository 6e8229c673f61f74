"""The SQLite recorder: eventsourcing's, with the key table beside the events (see `infrastructure.data_keys`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from infrastructure.data_keys import SQLiteKeyTable


class KeyedSQLiteApplicationRecorder(SQLiteKeyTable, SQLiteApplicationRecorder):
    """Writes a new conversation's wrapped data key in the same transaction as its `conversation.started`."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *self.data_keys_create_statements()]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        self.insert_data_keys_in(c, [(e.originator_id, e.data_key) for e in stored_events if getattr(e, "data_key", b"")])  # type: ignore[misc]
        return notification_ids

"""What auditors read: events as they were recorded, and an aggregate as it stood at any version or time."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from application.agents import AUDIT
from application.commands import Caller, load_owned
from application.store import EventStore
from domain.errors import NotFoundError
from domain.records import EventRecord, describe
from domain.widget import Widget


class HistoryService:
    """Reads the event store directly: history is the record itself, not a read model of it."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def widget_history(self, caller: Caller, widget_id: UUID, after: int = 0, limit: int = 100) -> list[EventRecord]:
        caller.require(AUDIT)
        load_owned(self.store, Widget, widget_id, caller, "Widget", version=1)
        return [describe(e) for e in self.store.events.get(widget_id, gt=after, limit=limit)]

    def widget_at_time(self, caller: Caller, widget_id: UUID, at: datetime) -> Widget:
        """The widget as it stood at `at`: after every event that had happened by then."""
        caller.require(AUDIT)
        first = load_owned(self.store, Widget, widget_id, caller, "Widget", version=1)
        if first.created_on > at:
            raise NotFoundError("Widget", f"{widget_id} at {at.isoformat()}")
        version = 1
        for event in self.store.events.get(widget_id, gt=1):
            if event.timestamp > at:
                break
            version = event.originator_version
        return load_owned(self.store, Widget, widget_id, caller, "Widget", version=version)

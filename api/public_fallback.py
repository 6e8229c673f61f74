"""The public lookup rebuilt from the event store, for when Redis is down: slower, same answers."""

from __future__ import annotations

from uuid import UUID

import anyio
from eventsourcing.application import AggregateNotFoundError

from application.store import EventStore
from domain.agent import Agent
from domain.widget import Widget
from projections.public_entry import PublicEntry, entry_for
from projections.widget_rows import IdentityKeyRow, WidgetRow


class EventStoreFallback:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def __call__(self, widget_id: str) -> PublicEntry | None:
        return await anyio.to_thread.run_sync(self.lookup, widget_id)

    async def head(self) -> int:
        """The event store's last position."""
        return await anyio.to_thread.run_sync(lambda: self.store.recorder.max_notification_id() or 0)

    def lookup(self, widget_id: str) -> PublicEntry | None:
        try:
            widget = self.store.repository.get(UUID(widget_id))
        except (AggregateNotFoundError, ValueError):
            return None
        if not isinstance(widget, Widget) or widget.deleted:
            return None
        try:
            agent = self.store.repository.get(widget.agent_id)
        except AggregateNotFoundError:
            return None
        version_published = isinstance(agent, Agent) and agent.has_published_version(widget.agent_version_id)
        row = WidgetRow(
            id=str(widget.id), organization_id=widget.organization_id, agent_id=str(widget.agent_id),
            agent_version_id=str(widget.agent_version_id), domains=list(widget.domains), config=widget.config,
            published=widget.published, deleted=widget.deleted, live=widget.published and version_published,
            identity_keys=[IdentityKeyRow(k["kid"], k["alg"], dict(k["jwk"]), k["added_at"]) for k in widget.identity_keys.values()],
            created_at=widget.created_on, updated_at=widget.modified_on, version=widget.version,
        )
        return entry_for(row)

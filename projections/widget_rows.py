"""The widget read model's logic, shared by every view that stores it.

Events go in; rows come out. A row is one widget as the read side needs it,
with `live` derived from both gates. A page of events is the unit of work: the
view prefetches every row and version the page touches, the handlers change
them in memory, and the view writes the result and the page's last position
atomically. Projectors trust events: nothing here validates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatchmethod
from typing import Any, Protocol

import msgspec

from domain.agent import Agent
from domain.widget import Widget


class IdentityKeyRow(msgspec.Struct):
    """A site's public key, as the hot path needs it to verify visitor tokens."""

    kid: str
    alg: str
    jwk: dict[str, str]
    added_at: datetime


class WidgetRow(msgspec.Struct, kw_only=True):
    id: str
    organization_id: str
    agent_id: str
    agent_version_id: str
    domains: list[str]
    config: dict[str, Any]
    published: bool = False
    deleted: bool = False
    live: bool = False
    identity_keys: list[IdentityKeyRow] = []
    retention_days: int | None = None
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass
class Changes:
    """What one page of events changed, to be written with the page's position in one atomic step."""

    rows: dict[str, WidgetRow | None] = field(default_factory=dict)  # None: the widget was deleted
    versions: dict[str, bool] = field(default_factory=dict)
    pinned: set[tuple[str, str]] = field(default_factory=set)  # (version id, widget id)
    unpinned: set[tuple[str, str]] = field(default_factory=set)

    def pin(self, version_id: str, widget_id: str) -> None:
        self.unpinned.discard((version_id, widget_id))
        self.pinned.add((version_id, widget_id))

    def unpin(self, version_id: str, widget_id: str) -> None:
        self.pinned.discard((version_id, widget_id))
        self.unpinned.add((version_id, widget_id))


class RowSource(Protocol):
    """Read access to the current state of a view, for the rows a page touches."""

    def load(self, widget_ids: set[str], version_ids: set[str]) -> tuple[dict[str, WidgetRow], dict[str, bool]]: ...

    def pinned_widgets(self, version_id: str) -> set[str]: ...


def touched_ids(events: Iterable[Any]) -> tuple[set[str], set[str]]:
    """The widget and version ids a page of events will read, so a view can fetch them in one go."""
    widgets: set[str] = set()
    versions: set[str] = set()
    for e in events:
        if isinstance(e, Widget.Event):
            widgets.add(str(e.originator_id))
            if isinstance(e, Widget.Created | Widget.VersionPinned):
                versions.add(str(e.agent_version_id))
        elif isinstance(e, Agent.VersionPublished | Agent.VersionUnpublished):
            versions.add(str(e.version_id))
    return widgets, versions


class WidgetRowsProjection:
    """Applies a page of events to rows loaded from a view; returns the changes to write."""

    topics: Sequence[str] = (
        "widget.created", "widget.domains_changed", "widget.version_pinned", "widget.config_changed",
        "widget.published", "widget.unpublished", "widget.deleted", "widget.identity_key_added", "widget.identity_key_removed",
        "widget.retention_changed",
        "agent.version_created", "agent.version_published", "agent.version_unpublished",
    )

    def apply(self, events: Sequence[Any], source: RowSource, positions: Sequence[int] = ()) -> Changes:
        widget_ids, version_ids = touched_ids(events)
        self.rows, self.versions = source.load(widget_ids, version_ids)
        self.source = source
        self._load_versions({row.agent_version_id for row in self.rows.values()})
        self.changes = Changes()
        for event in events:
            self.process_event(event)
        return self.changes

    def _load_versions(self, version_ids: set[str]) -> None:
        missing = version_ids - self.versions.keys()
        if missing:
            self.versions.update(dict.fromkeys(missing, False))  # unknown versions are not published
            self.versions.update(self.source.load(set(), missing)[1])

    def _touch(self, row: WidgetRow, event: Any) -> WidgetRow:
        row.updated_at = event.timestamp
        row.version = event.originator_version
        self._load_versions({row.agent_version_id})
        row.live = row.published and not row.deleted and self.versions.get(row.agent_version_id, False)
        self.changes.rows[row.id] = row
        return row

    def _row(self, event: Any) -> WidgetRow | None:
        return self.rows.get(str(event.originator_id))

    @singledispatchmethod
    def process_event(self, event: Any) -> None:
        """Events this read model does not need change nothing."""

    @process_event.register
    def _(self, event: Widget.Created) -> None:
        row = WidgetRow(
            id=str(event.originator_id), organization_id=event.organization_id, agent_id=str(event.agent_id),
            agent_version_id=str(event.agent_version_id), domains=list(event.domains), config=event.config,
            created_at=event.timestamp, updated_at=event.timestamp, version=event.originator_version,
        )
        self.rows[row.id] = row
        self.changes.pin(row.agent_version_id, row.id)
        self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.DomainsChanged) -> None:
        if row := self._row(event):
            row.domains = list(event.domains)
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.VersionPinned) -> None:
        if row := self._row(event):
            self.changes.unpin(row.agent_version_id, row.id)
            row.agent_id, row.agent_version_id = str(event.agent_id), str(event.agent_version_id)
            self.changes.pin(row.agent_version_id, row.id)
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.ConfigChanged) -> None:
        if row := self._row(event):
            row.config = event.config
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.Published) -> None:
        if row := self._row(event):
            row.published = True
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.Unpublished) -> None:
        if row := self._row(event):
            row.published = False
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.Deleted) -> None:
        if row := self._row(event):
            row.deleted, row.published = True, False
            self.changes.unpin(row.agent_version_id, row.id)
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.IdentityKeyAdded) -> None:
        if row := self._row(event):
            row.identity_keys = [*row.identity_keys, IdentityKeyRow(event.kid, event.alg, dict(event.jwk), event.timestamp)]
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.RetentionChanged) -> None:
        if row := self._row(event):
            row.retention_days = event.days
            self._touch(row, event)

    @process_event.register
    def _(self, event: Widget.IdentityKeyRemoved) -> None:
        if row := self._row(event):
            row.identity_keys = [key for key in row.identity_keys if key.kid != event.kid]
            self._touch(row, event)

    @process_event.register
    def _(self, event: Agent.VersionCreated) -> None:
        self._set_version(str(event.version_id), False)

    @process_event.register
    def _(self, event: Agent.VersionPublished) -> None:
        self._set_version(str(event.version_id), True)

    @process_event.register
    def _(self, event: Agent.VersionUnpublished) -> None:
        self._set_version(str(event.version_id), False)

    def _set_version(self, version_id: str, published: bool) -> None:
        self.versions[version_id] = published
        self.changes.versions[version_id] = published
        pinned = self.source.pinned_widgets(version_id)
        pinned |= {w for v, w in self.changes.pinned if v == version_id}
        pinned -= {w for v, w in self.changes.unpinned if v == version_id}
        missing = pinned - self.rows.keys()
        if missing:
            more, _ = self.source.load(missing, set())
            self.rows.update(more)
            self._load_versions({row.agent_version_id for row in more.values()})
        for widget_id in pinned:
            row = self.rows.get(widget_id)
            if row is None or row.deleted:
                continue
            live = row.published and published
            if live != row.live:
                row.live = live
                self.changes.rows[row.id] = row

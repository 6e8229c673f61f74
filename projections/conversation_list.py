"""The admin read model of conversations, with their forms and feedback, in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import singledispatchmethod
from typing import Any

import msgspec

from domain.conversation import Conversation
from infrastructure.sql import Executor
from projections.sql_view import SqlView

NAME = "conversation_list"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS conversation_list (
        id TEXT PRIMARY KEY, widget_id TEXT NOT NULL, organization_id TEXT NOT NULL,
        started_at TEXT NOT NULL, row_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS conversation_list_by_widget ON conversation_list (widget_id, started_at, id)""",
]


class SubmittedForm(msgspec.Struct):
    form_id: str
    values: dict[str, Any]
    submitted_at: datetime


class GivenFeedback(msgspec.Struct):
    rating: int
    comment: str | None
    given_at: datetime


class ConversationRow(msgspec.Struct, kw_only=True):
    id: str
    widget_id: str
    organization_id: str
    agent_id: str
    agent_version_id: str
    channel: str
    started_at: datetime
    updated_at: datetime
    rooms: int = 1
    ended: bool = False
    ended_by: str | None = None
    visitor: dict[str, Any] = {}
    forms: list[SubmittedForm] = []
    feedback: GivenFeedback | None = None
    version: int


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ConversationRow).decode


class ConversationListProjection:
    topics: Sequence[str] = (
        "conversation.started", "conversation.resumed", "conversation.form_submitted",
        "conversation.feedback_given", "conversation.ended",
    )

    def apply(
        self, events: Sequence[Any], source: ConversationListView, positions: Sequence[int] = ()
    ) -> dict[str, ConversationRow]:
        ids = {str(e.originator_id) for e in events if not isinstance(e, Conversation.Created)}
        self.rows = source.load(ids)
        self.changed: dict[str, ConversationRow] = {}
        for event in events:
            self.process_event(event)
        return self.changed

    def _touch(self, row: ConversationRow, event: Any) -> None:
        row.updated_at, row.version = event.timestamp, event.originator_version
        self.changed[row.id] = row

    @singledispatchmethod
    def process_event(self, event: Any) -> None:
        """Other events change nothing here."""

    @process_event.register
    def _(self, event: Conversation.Created) -> None:
        row = ConversationRow(
            id=str(event.originator_id), widget_id=str(event.widget_id), organization_id=event.organization_id,
            agent_id=str(event.agent_id), agent_version_id=str(event.agent_version_id), channel=event.channel,
            started_at=event.timestamp, updated_at=event.timestamp, visitor=dict(event.visitor), version=1,
        )
        self.rows[row.id] = row
        self._touch(row, event)

    @process_event.register
    def _(self, event: Conversation.Resumed) -> None:
        if row := self.rows.get(str(event.originator_id)):
            row.rooms += 1
            row.ended, row.ended_by = False, None
            row.agent_version_id = str(event.agent_version_id)
            self._touch(row, event)

    @process_event.register
    def _(self, event: Conversation.FormSubmitted) -> None:
        if row := self.rows.get(str(event.originator_id)):
            row.forms = [*row.forms, SubmittedForm(event.form_id, dict(event.values), event.timestamp)]
            self._touch(row, event)

    @process_event.register
    def _(self, event: Conversation.FeedbackGiven) -> None:
        if row := self.rows.get(str(event.originator_id)):
            row.feedback = GivenFeedback(event.rating, event.comment, event.timestamp)
            self._touch(row, event)

    @process_event.register
    def _(self, event: Conversation.Ended) -> None:
        if row := self.rows.get(str(event.originator_id)):
            row.ended, row.ended_by = True, event.by
            self._touch(row, event)


class ConversationListView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = ("conversation_list",)

    def load(self, ids: set[str]) -> dict[str, ConversationRow]:
        rows = [_decode(j) for (j,) in self.select_in("SELECT row_json FROM conversation_list WHERE id IN", ids)]
        return {row.id: row for row in rows}

    def write(self, tx: Executor, changes: dict[str, ConversationRow]) -> None:
        tx.executemany(
            """INSERT INTO conversation_list (id, widget_id, organization_id, started_at, row_json) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET row_json = excluded.row_json""",
            [(r.id, r.widget_id, r.organization_id, r.started_at.isoformat(), _encode(r).decode()) for r in changes.values()],
        )

    def page(self, organization_id: str, widget_id: str, limit: int, cursor: str | None) -> tuple[list[ConversationRow], str | None]:
        """A widget's conversations, newest first."""
        found, next_cursor = self.newest_first("conversation_list", "started_at", "organization_id = ? AND widget_id = ?",
                                               [organization_id, widget_id], limit, cursor)
        return [_decode(r) for r in found], next_cursor

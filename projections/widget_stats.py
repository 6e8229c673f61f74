"""Per-day conversation figures of each widget, in SQL: an ordinary projection of the log, exact and rebuildable.

A day is the UTC day of the event. Conversations count on the day they
started, resumes on theirs. A form counts once per conversation, and feedback
once per conversation: a visitor who submits the form again, or rates again,
replaces the earlier submission or rating, which leaves the day it was made and
joins the day of the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import singledispatchmethod
from typing import Any

import msgspec

from domain.conversation import Conversation
from infrastructure.sql import Executor
from projections.sql_view import SqlView

NAME = "widget_stats"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS widget_stats_days (
        widget_id TEXT NOT NULL, day TEXT NOT NULL, conversations BIGINT NOT NULL, resumes BIGINT NOT NULL,
        forms_submitted BIGINT NOT NULL, ratings_json TEXT NOT NULL, PRIMARY KEY (widget_id, day))""",
    """CREATE TABLE IF NOT EXISTS widget_stats_conversations (
        id TEXT PRIMARY KEY, widget_id TEXT NOT NULL, feedback_day TEXT, rating BIGINT)""",
    # The day each conversation's form was last submitted: where it counts.
    """CREATE TABLE IF NOT EXISTS widget_stats_forms (
        id TEXT NOT NULL, form_id TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (id, form_id))""",
]


@dataclass
class DayRow:
    widget_id: str
    day: str
    conversations: int = 0
    resumes: int = 0
    forms_submitted: int = 0
    ratings: dict[str, int] = field(default_factory=dict)  # rating -> conversations whose feedback it is


@dataclass
class ConversationRow:
    id: str
    widget_id: str
    feedback_day: str | None = None
    rating: int | None = None
    form_days: dict[str, str] = field(default_factory=dict)  # form id -> the day of its latest submission


@dataclass
class Changes:
    days: dict[tuple[str, str], DayRow]
    conversations: dict[str, ConversationRow]
    forms: dict[tuple[str, str], str] = field(default_factory=dict)  # (conversation id, form id) -> day


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


class WidgetStatsProjection:
    topics: Sequence[str] = (
        "conversation.started", "conversation.resumed", "conversation.form_submitted", "conversation.feedback_given",
    )

    def apply(self, events: Sequence[Any], source: WidgetStatsView, positions: Sequence[int] = ()) -> Changes:
        self.source = source
        ids = {str(e.originator_id) for e in events if not isinstance(e, Conversation.Created)}
        self.conversations = source.load_conversations(ids)
        self.changes = Changes({}, {})
        for event in events:
            self.process_event(event)
        return self.changes

    def _day(self, widget_id: str, day: str) -> DayRow:
        key = (widget_id, day)
        row = self.changes.days.get(key)
        if row is None:
            row = self.changes.days[key] = self.source.load_day(widget_id, day) or DayRow(widget_id, day)
        return row

    def _conversation(self, event: Any) -> ConversationRow | None:
        return self.conversations.get(str(event.originator_id))

    @singledispatchmethod
    def process_event(self, event: Any) -> None:
        """Other events change nothing here."""

    @process_event.register
    def _(self, event: Conversation.Created) -> None:
        row = ConversationRow(str(event.originator_id), str(event.widget_id))
        self.conversations[row.id] = self.changes.conversations[row.id] = row
        self._day(row.widget_id, utc_day(event.timestamp)).conversations += 1

    @process_event.register
    def _(self, event: Conversation.Resumed) -> None:
        if row := self._conversation(event):
            self._day(row.widget_id, utc_day(event.timestamp)).resumes += 1

    @process_event.register
    def _(self, event: Conversation.FormSubmitted) -> None:
        row = self._conversation(event)
        if row is None:
            return
        earlier = row.form_days.get(event.form_id)
        if earlier is not None:  # submitted again: it now counts on the day of this submission
            self._day(row.widget_id, earlier).forms_submitted -= 1
        row.form_days[event.form_id] = day = utc_day(event.timestamp)
        self._day(row.widget_id, day).forms_submitted += 1
        self.changes.forms[(row.id, event.form_id)] = day

    @process_event.register
    def _(self, event: Conversation.FeedbackGiven) -> None:
        row = self._conversation(event)
        if row is None:
            return
        if row.feedback_day is not None and row.rating is not None:  # a new rating replaces the earlier one
            earlier = self._day(row.widget_id, row.feedback_day)
            key = str(row.rating)
            earlier.ratings[key] -= 1
            if not earlier.ratings[key]:
                del earlier.ratings[key]
        row.feedback_day, row.rating = utc_day(event.timestamp), int(event.rating)
        day = self._day(row.widget_id, row.feedback_day)
        day.ratings[str(row.rating)] = day.ratings.get(str(row.rating), 0) + 1
        self.changes.conversations[row.id] = row


_ratings = msgspec.json.Encoder(order="sorted")


class WidgetStatsView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = ("widget_stats_days", "widget_stats_conversations", "widget_stats_forms")
    format = 2  # 2: a form counts once per conversation (widget_stats_forms)

    def load_conversations(self, ids: set[str]) -> dict[str, ConversationRow]:
        found = self.select_in("SELECT id, widget_id, feedback_day, rating FROM widget_stats_conversations WHERE id IN", ids)
        rows = {i: ConversationRow(i, w, d, None if r is None else int(r)) for i, w, d, r in found}
        for i, form_id, day in self.select_in("SELECT id, form_id, day FROM widget_stats_forms WHERE id IN", set(rows)):
            rows[i].form_days[form_id] = day
        return rows

    def load_day(self, widget_id: str, day: str) -> DayRow | None:
        rows = self.db.query("SELECT conversations, resumes, forms_submitted, ratings_json FROM widget_stats_days "
                             "WHERE widget_id = ? AND day = ?", [widget_id, day])
        if not rows:
            return None
        conversations, resumes, forms, ratings = rows[0]
        return DayRow(widget_id, day, int(conversations), int(resumes), int(forms), msgspec.json.decode(ratings))

    def write(self, tx: Executor, changes: Changes) -> None:
        tx.executemany(
            """INSERT INTO widget_stats_days (widget_id, day, conversations, resumes, forms_submitted, ratings_json)
               VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (widget_id, day) DO UPDATE SET conversations = excluded.conversations,
               resumes = excluded.resumes, forms_submitted = excluded.forms_submitted, ratings_json = excluded.ratings_json""",
            [(d.widget_id, d.day, d.conversations, d.resumes, d.forms_submitted, _ratings.encode(d.ratings).decode())
             for d in changes.days.values()],
        )
        tx.executemany(
            """INSERT INTO widget_stats_conversations (id, widget_id, feedback_day, rating) VALUES (?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET feedback_day = excluded.feedback_day, rating = excluded.rating""",
            [(c.id, c.widget_id, c.feedback_day, c.rating) for c in changes.conversations.values()],
        )
        tx.executemany(
            """INSERT INTO widget_stats_forms (id, form_id, day) VALUES (?, ?, ?)
               ON CONFLICT (id, form_id) DO UPDATE SET day = excluded.day""",
            [(i, form_id, day) for (i, form_id), day in changes.forms.items()],
        )

    def days(self, widget_id: str, first: str, last: str) -> dict[str, DayRow]:
        rows = self.db.query("SELECT day, conversations, resumes, forms_submitted, ratings_json FROM widget_stats_days "
                             "WHERE widget_id = ? AND day >= ? AND day <= ?", [widget_id, first, last])
        return {day: DayRow(widget_id, day, int(c), int(r), int(f), msgspec.json.decode(j)) for day, c, r, f, j in rows}

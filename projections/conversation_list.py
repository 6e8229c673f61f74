"""The admin read model of conversations, with their forms and feedback, in SQL.

Personal values (the visitor, form values, the feedback comment) are kept as the log holds them: sealed under
the conversation's data key (`infrastructure.personal_data`), opened only where an admin reads. An erasure
empties them here too, and drops the verified visitor's lookup row. A form submitted again replaces its earlier
submission, and feedback given again the earlier feedback: the latest is the one that counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from eventsourcing.persistence import DatetimeAsISO, UUIDAsHex

from domain import event_types as t
from domain.conversation import Conversation
from infrastructure.sql import Executor
from projections.cursor import decode_cursor, encode_cursor
from projections.sql_view import SqlView

NAME = "conversation_list"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS conversation_list (
        id TEXT PRIMARY KEY, widget_id TEXT NOT NULL, organization_id TEXT NOT NULL,
        started_at TEXT NOT NULL, row_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS conversation_list_by_widget ON conversation_list (widget_id, started_at, id)""",
    # A verified visitor's conversations, found by the keyed hash of their external id (never the id itself).
    """CREATE TABLE IF NOT EXISTS conversation_visitors (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, widget_id TEXT NOT NULL, visitor_ref TEXT NOT NULL,
        started_at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS conversation_visitors_by_ref
        ON conversation_visitors (organization_id, visitor_ref, widget_id, started_at, id)""",
    # When each conversation was last active, for retention: a widget's conversations past their time, unerased.
    """CREATE TABLE IF NOT EXISTS conversation_activity (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, widget_id TEXT NOT NULL, last_active_at TEXT NOT NULL,
        ended INTEGER NOT NULL, erased INTEGER NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS conversation_activity_by_widget ON conversation_activity (widget_id, erased, last_active_at)""",
]


def sortable(moment: datetime) -> str:
    """A UTC time as text that sorts as the time does (a fixed width, microseconds always written)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class SubmittedForm(msgspec.Struct):
    form_id: str
    values: dict[str, Any] | str  # sealed (a str), or a dict written before encryption existed
    submitted_at: datetime


class GivenFeedback(msgspec.Struct):
    rating: int
    comment: str | None  # sealed
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
    visitor: dict[str, Any] | str = {}  # sealed (a str), or a dict written before encryption existed
    verified: bool = False
    forms: list[SubmittedForm] = []
    feedback: GivenFeedback | None = None
    erased_at: datetime | None = None
    version: int


VERIFIED_CLAIMS = frozenset({"external_id", "verified", "name", "email"})


class ConversationChanges(msgspec.Struct):
    """What a page changed: rows, and the visitor lookup values of the verified visitors who started conversations."""

    rows: dict[str, ConversationRow]
    refs: dict[str, str]
    unlinked: set[str] = set()  # conversations whose visitor lookup row goes (erased)
    started: set[str] = set()  # conversations started in the page (their rows were not read from the model)
    plaintext: bool = False  # an erased conversation's rows held its values in the clear (stored before encryption)


class VisitorConversation(msgspec.Struct):
    id: str
    started_at: datetime
    ended: bool


def _personal(value: Any) -> Any:
    """A personal value as the row keeps it: sealed as the log holds it; None (erased, or its key gone) as empty."""
    if value is None:
        return {}
    return value if isinstance(value, str) else dict(value)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ConversationRow).decode


class Wrapped(msgspec.Struct):
    """A value as the store's JSON transcoder writes it: `{"_type_": "uuid_hex", "_data_": "..."}`."""

    type: str = msgspec.field(name="_type_")
    data: str = msgspec.field(name="_data_")


class Fact(msgspec.Struct, kw_only=True):
    """What this projection reads of a conversation event, decoded straight from its stored state; the
    conversation id and the version come from the notification."""

    timestamp: Wrapped
    conversation_id: str = ""
    version: int = 0


class Started(Fact):
    organization_id: str
    widget_id: Wrapped
    agent_id: Wrapped
    agent_version_id: Wrapped
    channel: str
    visitor: str | dict[str, Any] | None = None
    visitor_ref: str | None = None  # absent from conversations started before verified visitors


class Resumed(Fact):
    agent_version_id: Wrapped


class FormSubmitted(Fact):
    form_id: str
    values: str | dict[str, Any] | None = None


class FeedbackGiven(Fact):
    rating: int
    comment: str | None = None


class Ended(Fact):
    by: str


class Erased(Fact):
    rewritten_events: int = 0


FACTS: dict[str, type[Fact]] = {
    t.CONVERSATION_STARTED: Started, t.CONVERSATION_RESUMED: Resumed, t.CONVERSATION_FORM_SUBMITTED: FormSubmitted,
    t.CONVERSATION_FEEDBACK_GIVEN: FeedbackGiven, t.CONVERSATION_ENDED: Ended, t.CONVERSATION_PERSONAL_DATA_ERASED: Erased,
}
_READERS = {topic: msgspec.json.Decoder(fact) for topic, fact in FACTS.items()}
_UUID_HEX = re.compile("[0-9a-f]{32}")  # how the transcoder writes a UUID (`UUID.hex`)
_UUID, _TIME = UUIDAsHex.name, DatetimeAsISO.name  # the transcodings' names, as the store writes them


def _moment(value: Wrapped) -> datetime:
    return datetime.fromisoformat(value.data)


def _uuid_text(value: Wrapped) -> str:
    """A UUID's canonical text from the transcoder's hex (32 lowercase digits), without building a UUID."""
    h = value.data
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _wrapped_time(moment: datetime) -> Wrapped:
    return Wrapped(_TIME, moment.isoformat())


def _wrapped_uuid(value: Any) -> Wrapped:
    return Wrapped(_UUID, value.hex)


def _fits(fact: Fact) -> bool:
    """Whether the fast read gave what the library's mapper would: its wrapped values are of the types it knows, and no
    value in the clear (written before encryption) nests what the transcoder would have revived."""
    if fact.timestamp.type != _TIME:
        return False
    for name in ("widget_id", "agent_id", "agent_version_id"):
        wrapped = getattr(fact, name, None)
        if wrapped is not None and (wrapped.type != _UUID or _UUID_HEX.fullmatch(wrapped.data) is None):
            return False
    for name in ("visitor", "values"):
        value = getattr(fact, name, None)
        if isinstance(value, dict) and (("_type_" in value and "_data_" in value and len(value) == 2)
                                        or any(isinstance(v, (dict, list)) for v in value.values())):
            return False
    return True


def fact_of(event: Any) -> Fact | None:
    """The fact of a domain event as the library's mapper decodes it (None: not an event this projection reads)."""
    common: dict[str, Any] = {"timestamp": _wrapped_time(event.timestamp), "conversation_id": str(event.originator_id),
                              "version": event.originator_version}
    if isinstance(event, Conversation.Created):
        return Started(**common, organization_id=event.organization_id, widget_id=_wrapped_uuid(event.widget_id),
                       agent_id=_wrapped_uuid(event.agent_id), agent_version_id=_wrapped_uuid(event.agent_version_id),
                       channel=event.channel, visitor=event.visitor, visitor_ref=getattr(event, "visitor_ref", None))
    if isinstance(event, Conversation.Resumed):
        return Resumed(**common, agent_version_id=_wrapped_uuid(event.agent_version_id))
    if isinstance(event, Conversation.FormSubmitted):
        return FormSubmitted(**common, form_id=event.form_id, values=event.values)
    if isinstance(event, Conversation.FeedbackGiven):
        return FeedbackGiven(**common, rating=event.rating, comment=event.comment)
    if isinstance(event, Conversation.Ended):
        return Ended(**common, by=event.by)
    if isinstance(event, Conversation.PersonalDataErased):
        return Erased(**common, rewritten_events=getattr(event, "rewritten_events", 0))
    return None


class ConversationListProjection:
    topics: Sequence[str] = tuple(FACTS)

    @staticmethod
    def read_event(notification: Any, mapper: Any) -> Fact | None:
        """What the projection needs of a stored event, read from its state directly, without the library's
        decode, which builds every field's object (UUIDs, times) and the event. Anything the fast read does not
        fit (an unexpected shape or wrapped type, a value in the clear nesting others) goes through `mapper`,
        so both give the same fact (a property test holds them equal)."""
        reader = _READERS.get(notification.topic)
        if reader is not None:
            try:
                fact = reader.decode(notification.state)
            except msgspec.DecodeError:  # also its subclass ValidationError
                fact = None
            if fact is not None and _fits(fact):
                fact.conversation_id = str(notification.originator_id)
                fact.version = notification.originator_version
                return fact
        return fact_of(mapper.to_domain_event(notification))

    def apply(self, events: Sequence[Fact | None], source: ConversationListView, positions: Sequence[int] = ()) -> ConversationChanges:
        facts = [e for e in events if e is not None]
        started = {f.conversation_id for f in facts if type(f) is Started}
        # A conversation started in this page has its row here already: only the others are read.
        self.rows = source.load({f.conversation_id for f in facts} - started)
        self.changed: dict[str, ConversationRow] = {}
        self.refs: dict[str, str] = {}
        self.unlinked: set[str] = set()
        self.plaintext = False
        handlers = {Started: self._started, Resumed: self._resumed, FormSubmitted: self._form_submitted,
                    FeedbackGiven: self._feedback_given, Ended: self._ended, Erased: self._erased}
        for fact in facts:
            handlers[type(fact)](fact)
        return ConversationChanges(self.changed, self.refs, unlinked=self.unlinked, plaintext=self.plaintext, started=started)

    def _touch(self, row: ConversationRow, fact: Fact, moment: datetime | None = None) -> None:
        row.updated_at, row.version = moment or _moment(fact.timestamp), fact.version
        self.changed[row.id] = row

    def _started(self, fact: Started) -> None:
        moment = _moment(fact.timestamp)
        row = ConversationRow(
            id=fact.conversation_id, widget_id=_uuid_text(fact.widget_id), organization_id=fact.organization_id,
            agent_id=_uuid_text(fact.agent_id), agent_version_id=_uuid_text(fact.agent_version_id), channel=fact.channel,
            started_at=moment, updated_at=moment, visitor=_personal(fact.visitor), version=1,
        )
        if fact.visitor_ref is not None:
            row.verified = True
            self.refs[row.id] = fact.visitor_ref
            # A verified visitor's claims (external id, name, email) stay in the event, sealed; a row given them in
            # the clear keeps none of them (the admin API reads them from the event store). Sealed, they may stay.
            if isinstance(row.visitor, dict):
                row.visitor = {k: v for k, v in row.visitor.items() if k not in VERIFIED_CLAIMS}
        self.rows[row.id] = row
        self._touch(row, fact, moment)

    def _resumed(self, fact: Resumed) -> None:
        if row := self.rows.get(fact.conversation_id):
            row.rooms += 1
            row.ended, row.ended_by = False, None
            row.agent_version_id = _uuid_text(fact.agent_version_id)
            self._touch(row, fact)

    def _form_submitted(self, fact: FormSubmitted) -> None:
        if row := self.rows.get(fact.conversation_id):
            moment = _moment(fact.timestamp)
            earlier = [f for f in row.forms if f.form_id != fact.form_id]
            row.forms = [*earlier, SubmittedForm(fact.form_id, _personal(fact.values), moment)]
            self._touch(row, fact, moment)

    def _feedback_given(self, fact: FeedbackGiven) -> None:
        if row := self.rows.get(fact.conversation_id):
            moment = _moment(fact.timestamp)
            row.feedback = GivenFeedback(fact.rating, fact.comment, moment)
            self._touch(row, fact, moment)

    def _erased(self, fact: Erased) -> None:
        self.refs.pop(fact.conversation_id, None)
        self.unlinked.add(fact.conversation_id)
        if fact.rewritten_events:  # its events were in the clear: so were its rows
            self.plaintext = True
        if row := self.rows.get(fact.conversation_id):
            moment = _moment(fact.timestamp)
            row.visitor = {}
            row.forms = [SubmittedForm(f.form_id, {}, f.submitted_at) for f in row.forms]
            if row.feedback is not None:
                row.feedback = GivenFeedback(row.feedback.rating, None, row.feedback.given_at)
            row.erased_at = moment
            self._touch(row, fact, moment)

    def _ended(self, fact: Ended) -> None:
        if row := self.rows.get(fact.conversation_id):
            row.ended, row.ended_by = True, fact.by
            self._touch(row, fact)


LIST_COLUMNS = ("id", "widget_id", "organization_id", "started_at", "row_json")
VISITOR_COLUMNS = ("id", "organization_id", "widget_id", "visitor_ref", "started_at")
ACTIVITY_COLUMNS = ("id", "organization_id", "widget_id", "last_active_at", "ended", "erased")


def _list_row(r: ConversationRow) -> tuple[Any, ...]:
    return (r.id, r.widget_id, r.organization_id, r.started_at.isoformat(), _encode(r).decode())


def _visitor_row(r: ConversationRow, ref: str) -> tuple[Any, ...]:
    return (r.id, r.organization_id, r.widget_id, ref, r.started_at.isoformat())


def _activity_row(r: ConversationRow) -> tuple[Any, ...]:
    return (r.id, r.organization_id, r.widget_id, sortable(r.updated_at), int(r.ended), int(r.erased_at is not None))


class ConversationListView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = ("conversation_list", "conversation_visitors", "conversation_activity")
    # 2: personal values sealed (format 1 rows hold them in the clear); 3: conversation_activity; 4: a form's latest
    # submission only
    format = 4

    def scrubs(self, changes: ConversationChanges) -> bool:
        return bool(changes.unlinked)

    def scrubs_fully(self, changes: ConversationChanges) -> bool:
        return changes.plaintext

    def load(self, ids: set[str]) -> dict[str, ConversationRow]:
        rows = [_decode(j) for (j,) in self.select_in("SELECT row_json FROM conversation_list WHERE id IN", ids)]
        return {row.id: row for row in rows}

    def write(self, tx: Executor, changes: ConversationChanges) -> None:
        if self.fresh:
            self._write_fresh(tx, changes)
            return
        rows = changes.rows
        tx.executemany(
            """INSERT INTO conversation_list (id, widget_id, organization_id, started_at, row_json) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET row_json = excluded.row_json""",
            [_list_row(r) for r in rows.values()],
        )
        tx.executemany(
            """INSERT INTO conversation_visitors (id, organization_id, widget_id, visitor_ref, started_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (id) DO NOTHING""",
            [_visitor_row(rows[i], ref) for i, ref in changes.refs.items()],
        )
        tx.executemany("DELETE FROM conversation_visitors WHERE id = ?", [(i,) for i in sorted(changes.unlinked)])
        tx.executemany(
            """INSERT INTO conversation_activity (id, organization_id, widget_id, last_active_at, ended, erased)
               VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET last_active_at = excluded.last_active_at,
               ended = excluded.ended, erased = excluded.erased""",
            [_activity_row(r) for r in rows.values()],
        )

    def _write_fresh(self, tx: Executor, changes: ConversationChanges) -> None:
        """The same rows as `write`, into a model emptied in this transaction: a conversation started in the page has
        no row yet, so its rows are inserted in bulk (COPY on PostgreSQL); only the others are updated."""
        new = [r for i, r in changes.rows.items() if i in changes.started]
        old = [r for i, r in changes.rows.items() if i not in changes.started]
        tx.insert_many("conversation_list", LIST_COLUMNS, [_list_row(r) for r in new])
        tx.executemany("UPDATE conversation_list SET row_json = ? WHERE id = ?", [(_encode(r).decode(), r.id) for r in old])
        # Visitor lookup values come from starts only; one erased in the same page was dropped from `refs` already.
        tx.insert_many("conversation_visitors", VISITOR_COLUMNS,
                       [_visitor_row(changes.rows[i], ref) for i, ref in changes.refs.items() if i in changes.started])
        tx.executemany("DELETE FROM conversation_visitors WHERE id = ?", [(i,) for i in sorted(changes.unlinked)])
        tx.insert_many("conversation_activity", ACTIVITY_COLUMNS, [_activity_row(r) for r in new])
        tx.executemany("UPDATE conversation_activity SET last_active_at = ?, ended = ?, erased = ? WHERE id = ?",
                       [(*_activity_row(r)[3:], r.id) for r in old])

    def past_retention(self, widget_id: str, days: int, now: datetime) -> list[tuple[str, str]]:
        """(conversation id, organization id) of a widget's unerased conversations last active more than `days` ago;
        with 0 days, those that have ended."""
        cutoff = sortable(now - timedelta(days=days))
        ended = " AND ended = 1" if days == 0 else ""
        found = self.db.query(
            f"""SELECT id, organization_id FROM conversation_activity
                WHERE widget_id = ? AND erased = 0 AND last_active_at <= ?{ended} ORDER BY last_active_at, id""",
            [widget_id, cutoff])
        return [(i, o) for i, o in found]

    def of_visitor(self, organization_id: str, visitor_refs: Sequence[str], widget_id: str | None = None,
                   limit: int = 100) -> list[VisitorConversation]:
        """A verified visitor's conversations (on one widget, or the organization's), newest first."""
        return self.visitor_page(organization_id, visitor_refs, widget_id, limit, None)[0]

    def visitor_page(self, organization_id: str, visitor_refs: Sequence[str], widget_id: str | None, limit: int,
                     cursor: str | None) -> tuple[list[VisitorConversation], str | None]:
        """One page of a verified visitor's conversations, newest first by (started_at, id), after `cursor`; and the
        cursor of the next page, if there is one."""
        if not visitor_refs:
            return [], None
        where = f"v.organization_id = ? AND v.visitor_ref IN ({','.join('?' * len(visitor_refs))})"
        params: list[Any] = [organization_id, *visitor_refs]
        if widget_id is not None:
            where += " AND v.widget_id = ?"
            params.append(widget_id)
        if cursor:
            sort_time, item_id = decode_cursor(cursor)
            where += " AND (v.started_at < ? OR (v.started_at = ? AND v.id < ?))"
            params += [sort_time, sort_time, item_id]
        found = self.db.query(
            f"""SELECT c.row_json, v.started_at, v.id FROM conversation_visitors v JOIN conversation_list c ON c.id = v.id
                WHERE {where} ORDER BY v.started_at DESC, v.id DESC LIMIT ?""", [*params, limit + 1])
        next_cursor = encode_cursor(found[limit - 1][1], found[limit - 1][2]) if len(found) > limit else None
        rows = [_decode(j) for j, _, _ in found[:limit]]
        return [VisitorConversation(r.id, r.started_at, r.ended) for r in rows], next_cursor

    def page(self, organization_id: str, widget_id: str, limit: int, cursor: str | None) -> tuple[list[ConversationRow], str | None]:
        """A widget's conversations, newest first."""
        found, next_cursor = self.newest_first("conversation_list", "started_at", "organization_id = ? AND widget_id = ?",
                                               [organization_id, widget_id], limit, cursor)
        return [_decode(r) for r in found], next_cursor

"""Resume tokens, submission bounds and erasure over random visitor sessions, and the stats of re-submitted forms.

A session is a random sequence of calls a visitor (or an attacker holding an old
token) may make: resume with the current token, a retired one or one never
handed out, submit one of two forms, rate, end, LiveKit finishing the current
or an old room, and an erasure. A model says what each call must do; refused
calls write nothing, and the conversation read back from the store equals the
model. The stats projection, fed forms submitted again across days and in
pages of any size, counts each (conversation, form) once, on the day of its
latest submission.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from application.conversations import ConversationService, Grant, LiveWidget, RoomTicket
from application.store import EventStore
from domain.conversation import Conversation
from domain.errors import ConversationEndedError, ConversationErasedError, NotFoundError, SubmissionLimitError
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.widget_stats import WidgetStatsProjection, WidgetStatsView

FORMS = ("pre", "later")
CONFIG = {"v1": {"forms": [{"id": form, "title": form, "fields": [{"name": "note", "label": "Note", "type": "text"}]}
                           for form in FORMS],
                 "feedback": {"enabled": True, "type": "stars"}}}
WIDGET = LiveWidget(str(uuid.uuid4()), "org_a", str(uuid.uuid4()), str(uuid.uuid4()), CONFIG)


class Issuer:
    def grant(self, ticket: RoomTicket) -> Grant:
        return Grant("ws://livekit.test", ticket.room, "t", datetime.now(UTC))


class Rooms:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def end_room(self, room: str) -> bool:
        self.ended.append(room)
        return True


@dataclass
class Model:
    token: str
    room: str
    retired: list[str] = field(default_factory=list)
    old_rooms: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)
    rating: int | None = None
    ended_by: str | None = None
    erased: bool = False


ACTIONS = st.one_of(
    st.tuples(st.just("resume"), st.sampled_from(["current", "retired", "unknown"]), st.integers(0, 50)),
    st.tuples(st.just("form"), st.sampled_from(FORMS), st.integers(0, 50)),
    st.tuples(st.just("feedback"), st.integers(1, 5), st.integers(0, 0)),
    st.tuples(st.just("end"), st.just(""), st.integers(0, 0)),
    st.tuples(st.just("room_finished"), st.sampled_from(["current", "old"]), st.integers(0, 50)),
    st.tuples(st.just("erase"), st.just(""), st.integers(0, 0)),
)


@settings(max_examples=150)
@given(actions=st.lists(ACTIONS, max_size=25), limit=st.integers(1, 4))
def test_only_the_current_token_resumes_and_every_bound_holds_over_any_session(actions: list[tuple[str, Any, int]], limit: int) -> None:
    store = EventStore(env={})
    rooms = Rooms()
    service = ConversationService(store, Issuer(), rooms=rooms, form_submissions=limit)
    started = service.start(WIDGET, "https://example.com", {})
    cid = started.conversation_id
    model = Model(started.resume_token, started.grant.room)

    def written() -> int:
        return len(list(store.events.get(cid)))

    for kind, arg, pick in actions:
        before = written()
        if kind == "resume":
            token = {"current": model.token, "unknown": f"never-{pick}",
                     "retired": model.retired[pick % len(model.retired)] if model.retired else f"never-{pick}"}[arg]
            if token != model.token:
                expected: type[Exception] | None = NotFoundError
            else:
                expected = ConversationErasedError if model.erased else ConversationEndedError if model.ended_by == "visitor" else None
            try:
                new_token, grant = service.resume(WIDGET, cid, token)
            except Exception as refused:
                assert expected is not None and isinstance(refused, expected), (kind, arg, refused)
                assert written() == before
                continue
            assert expected is None, (kind, arg)
            ended_room = rooms.ended[-1:] == [model.room]
            assert ended_room == (model.ended_by != "room_finished")  # a finished room is not ended again
            model.retired.append(model.token)
            model.old_rooms.append(model.room)
            model.token, model.room, model.ended_by = new_token, grant.room, None
        elif kind == "form":
            if model.erased:
                expected = ConversationErasedError
            elif model.ended_by == "visitor":
                expected = ConversationEndedError
            else:
                expected = SubmissionLimitError if model.counts.get(arg, 0) >= limit else None
            try:
                service.submit_form(WIDGET, cid, model.token, arg, {"note": f"n{pick}"})
            except Exception as refused:
                assert expected is not None and isinstance(refused, expected), (kind, arg, refused)
                assert written() == before
                continue
            assert expected is None, (kind, arg)
            model.counts[arg] = model.counts.get(arg, 0) + 1
            model.latest[arg] = f"n{pick}"
        elif kind == "feedback":
            try:
                service.give_feedback(WIDGET, cid, model.token, arg, None)
            except ConversationErasedError:
                assert model.erased and written() == before
                continue
            assert not model.erased
            model.rating = arg
        elif kind == "end":
            try:
                service.end(WIDGET, cid, model.token)
            except ConversationErasedError:
                assert model.erased and written() == before
                continue
            assert not model.erased
            model.ended_by = "visitor"
        elif kind == "room_finished":
            room = model.room if arg == "current" or not model.old_rooms else model.old_rooms[pick % len(model.old_rooms)]
            service.room_finished(room)
            if room == model.room and model.ended_by is None and not model.erased:
                model.ended_by = "room_finished"
            elif model.ended_by != "room_finished" or room != model.room:
                assert written() == before, "an old room, or a closed conversation, ended something"
        else:
            conversation = store.repository.get(cid)
            if conversation.erase_personal_data("user_1", "request"):
                store.save(conversation)
            if not model.erased and model.ended_by is None:
                model.ended_by = "erasure"
            model.erased = True

    conversation = store.repository.get(cid)
    assert conversation.holds_token(model.token)
    assert not any(conversation.holds_token(old) for old in model.retired)
    assert conversation.room == model.room and conversation.ended_by == model.ended_by and conversation.erased == model.erased
    assert conversation.form_submissions == model.counts
    expected_values = {form: {} if model.erased else {"note": note} for form, note in model.latest.items()}
    assert {f["form_id"]: f["values"] for f in conversation.forms} == expected_values
    assert len(conversation.forms) == len(model.latest)
    assert (conversation.feedback or {}).get("rating") == model.rating
    store.close()


# --- the stats of forms submitted again ----------------------------------------------------------

DAY_ZERO = datetime(2026, 5, 1, 12, tzinfo=UTC)
SUBMISSIONS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(FORMS), st.integers(0, 3)), max_size=20)


def stats_events(submissions: list[tuple[int, str, int]]) -> tuple[str, list[Any]]:
    """Three conversations started on day zero, then the submissions (conversation, form, day), in time order."""
    widget_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(3)]
    found: list[Any] = []
    for cid in ids:
        found.append(Conversation.Created(
            originator_id=cid, originator_version=1, timestamp=DAY_ZERO, originator_topic="conversation",
            organization_id="org_a", widget_id=widget_id, agent_id=uuid.uuid4(), agent_version_id=uuid.uuid4(), channel="webrtc",
            room="r", participant_identity="p", resume_token_hash="0" * 64, visitor={}, origin="https://example.com",
            visitor_ref=None, context=None))
    versions = dict.fromkeys(ids, 1)
    for n, (which, form, day) in enumerate(sorted(submissions, key=lambda s: s[2])):
        cid = ids[which]
        versions[cid] += 1
        found.append(Conversation.FormSubmitted(originator_id=cid, originator_version=versions[cid],
                                                timestamp=DAY_ZERO + timedelta(days=day, seconds=n), form_id=form, values={}))
    return str(widget_id), found


@settings(max_examples=60)
@given(submissions=SUBMISSIONS, page=st.integers(1, 7))
def test_a_form_counts_once_per_conversation_on_the_day_of_its_latest_submission(
    submissions: list[tuple[int, str, int]], page: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Database(Settings(data_dir=str(Path(folder) / "var")))
        try:
            view = WidgetStatsView(db)
            widget_id, events = stats_events(submissions)
            for first in range(0, len(events), page):
                chunk = events[first:first + page]
                changes = WidgetStatsProjection().apply(chunk, view)
                view.commit(changes, first + 1, first + len(chunk))
            days = view.days(widget_id, "2026-04-30", "2026-05-10")
        finally:
            db.close()
    latest: dict[tuple[int, str], int] = {}
    for which, form, day in sorted(submissions, key=lambda s: s[2]):
        latest[(which, form)] = day
    expected = {(DAY_ZERO + timedelta(days=d)).date().isoformat(): 0 for d in range(4)}
    for day in latest.values():
        expected[(DAY_ZERO + timedelta(days=day)).date().isoformat()] += 1
    counted = {d: row.forms_submitted for d, row in days.items()}
    assert all(n >= 0 for n in counted.values())
    assert {d: n for d, n in counted.items() if n} == {d: n for d, n in expected.items() if n}
    assert sum(counted.values()) == len(latest)

"""A rebuild of the conversation list (rows inserted in bulk into the emptied model, a write per row a page) holds
exactly the rows that applying the events one by one gives, however the pages cut the conversations; the projection
reads its events from their stored state as the library's mapper decodes them; and a runner reading the next page
ahead drops it when the view moved, and still stops at an event it cannot decode."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.store import EventStore
from domain.conversation import Conversation
from infrastructure.eventstore import open_event_store, sqlite_env
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.conversation_list import ConversationListProjection, ConversationListView, fact_of
from projections.rebuild import rebuild_sql
from projections.runner import ProjectionFailedError, ProjectionRunner
from projections.verify import dump_sql

STEPS = st.lists(st.sampled_from(["resume", "form", "feedback", "end", "erase"]), max_size=6)
HISTORIES = st.lists(st.tuples(st.booleans(), STEPS), min_size=1, max_size=8)  # (verified visitor?, what follows)


def start(i: int, verified: bool) -> Conversation:
    return Conversation(id=uuid.uuid4(), organization_id="org_a", widget_id=uuid.uuid4(), agent_id=uuid.uuid4(),
                        agent_version_id=uuid.uuid4(), channel="webrtc", room=f"r{i}", participant_identity=f"p{i}",
                        resume_token_hash="0" * 64, visitor={"name": f"Visitor {i}", "locale": "en"},
                        origin="https://example.com", visitor_ref=f"ref{i}" if verified else None)


def save_interleaved(store: EventStore, histories: list[tuple[bool, list[str]]]) -> None:
    """Starts first, then one step of each conversation in turn, so that a conversation's events spread over pages."""
    made = [start(i, verified) for i, (verified, _) in enumerate(histories)]
    store.save(*made)
    for round_ in range(max(len(steps) for _, steps in histories)):
        for conversation, (_, steps) in zip(made, histories, strict=True):
            if round_ >= len(steps):
                continue
            step = steps[round_]
            if step == "resume" and not conversation.closed:
                conversation.resume(f"{conversation.id}-{round_}", "p", conversation.agent_id, uuid.uuid4(), "1" * 64)
            elif step == "form" and not conversation.closed:
                conversation.submit_form("pre", {"email": "v@mail.example"}, limit=len(steps))
            elif step == "feedback" and not conversation.erased:
                conversation.give_feedback(4, "thanks")
            elif step == "end" and not conversation.erased:
                conversation.end("visitor")
            elif step == "erase":
                conversation.erase_personal_data("user_1", "request")
            store.save(conversation)


@pytest.fixture
def stores(settings: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EventStore, Database, Database]]:
    """The event store, the model to rebuild, and a model kept event by event, on each wiring."""
    base = settings
    if base.embedded:
        other = replace(base, data_dir=str(tmp_path / "one_by_one"))
    else:
        other = replace(base, database_schema=request.getfixturevalue("other_pg_schema"))
    store, rebuilt, one_by_one = open_event_store(base), Database(base), Database(other)
    yield store, rebuilt, one_by_one
    one_by_one.close()
    rebuilt.close()
    store.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=HISTORIES, page_size=st.sampled_from([1, 2, 3, 7, 2000]))
def test_a_rebuild_holds_the_rows_that_applying_events_one_by_one_gives(
    stores: tuple[EventStore, Database, Database], histories: list[tuple[bool, list[str]]], page_size: int
) -> None:
    store, rebuilt, one_by_one = stores
    save_interleaved(store, histories)
    ProjectionRunner("one-by-one", store, ConversationListView(one_by_one), projection_factory=ConversationListProjection,
                     page_size=1).catch_up()
    rebuild_sql(store, rebuilt, "conversation_list", page_size=page_size)
    expected = dump_sql(one_by_one, "conversation_list")
    assert dump_sql(rebuilt, "conversation_list") == expected
    assert ConversationListView(rebuilt).position() == ConversationListView(one_by_one).position()


# ---- the projection reads its events from their stored state, as the library's mapper would ----------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# What the store's transcoder would revive, were a visitor to type it: the fast read must not take it for a dict.
TRANSCODED = st.builds(lambda u: {"_type_": "uuid_hex", "_data_": u.hex}, st.uuids())
VALUES = st.dictionaries(st.text(max_size=6), JSON | TRANSCODED, max_size=4) | TRANSCODED
STORED_HISTORIES = st.lists(st.tuples(st.booleans(), VALUES, VALUES, st.none() | st.text(max_size=8), STEPS),
                            min_size=1, max_size=3)
OLDER = {"conversation.started": ("visitor_ref", "context"), "conversation.resumed": ("resume_token_hash", "context", "class_version"),
         "conversation.ended": ("actor", "class_version"),
         "conversation.personal_data_erased": ("rewritten_events",)}


@pytest.fixture(params=["sealed", "plaintext"])
def decoding_store(request: pytest.FixtureRequest, embedded_settings: Settings) -> Iterator[EventStore]:
    """The embedded store sealing personal values, or one without the vault (values in the clear, as before it)."""
    if request.param == "sealed":
        store = open_event_store(embedded_settings)
    else:
        store = EventStore(env=sqlite_env(Path(embedded_settings.data_dir)))
    yield store
    store.close()


def save_stored_histories(store: EventStore, histories: list[Any]) -> None:
    for i, (verified, visitor, values, comment, steps) in enumerate(histories):
        conversation = Conversation(id=uuid.uuid4(), organization_id="org_a", widget_id=uuid.uuid4(), agent_id=uuid.uuid4(),
                                    agent_version_id=uuid.uuid4(), channel="webrtc", room=f"r{i}", participant_identity="p",
                                    resume_token_hash="0" * 64, visitor=visitor, origin="https://example.com",
                                    visitor_ref=f"ref{i}" if verified else None)
        for step in steps:
            if step == "resume" and not conversation.closed:
                conversation.resume(f"room-{step}", "p", conversation.agent_id, uuid.uuid4(), "1" * 64)
            elif step == "form" and not conversation.closed:
                conversation.submit_form("pre", values, limit=len(steps))
            elif step == "feedback" and not conversation.erased:  # an erased conversation takes nothing more
                conversation.give_feedback(3, comment)
            elif step == "end" and not conversation.erased:
                conversation.end("visitor")
            elif step == "erase":
                conversation.erase_personal_data("user_1", "request")
        store.save(conversation)


def older(notification: Any) -> Any:
    """The same notification as code before verified visitors, context and upcasting wrote it (optional keys absent)."""
    state = json.loads(notification.state)
    for key in OLDER.get(notification.topic, ()):
        state.pop(key, None)
    return replace(notification, state=json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode())


def shouting(notification: Any) -> Any:
    """The same notification with its UUIDs' hex in capitals (which `UUID()` reads, and prints in lower case)."""
    state = json.loads(notification.state)
    for value in state.values():
        if isinstance(value, dict) and value.get("_type_") == "uuid_hex":
            value["_data_"] = value["_data_"].upper()
    return replace(notification, state=json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=STORED_HISTORIES)
def test_the_projection_reads_each_stored_event_as_the_library_mapper_decodes_it(
    decoding_store: EventStore, histories: list[Any]
) -> None:
    store = decoding_store
    since = store.recorder.max_notification_id() or 0
    save_stored_histories(store, histories)
    mapper = store.projection_mapper
    notifications = store.recorder.select_notifications(start=since + 1, limit=1000,
                                                        topics=ConversationListProjection.topics)
    assert notifications
    for notification in [*notifications, *map(older, notifications), *map(shouting, notifications)]:
        read = ConversationListProjection.read_event(notification, mapper)
        assert read is not None
        assert read == fact_of(mapper.to_domain_event(notification))


def test_a_sealed_conversation_is_read_without_the_library_mapper(sqlite_store: EventStore) -> None:
    save_interleaved(sqlite_store, [(True, ["resume", "form", "feedback", "end", "erase"]), (False, ["form"])])

    class Refusing:
        def to_domain_event(self, notification: Any) -> Any:
            raise AssertionError(f"{notification.topic} went through the mapper")

    found = sqlite_store.recorder.select_notifications(start=1, limit=100, topics=ConversationListProjection.topics)
    assert [type(ConversationListProjection.read_event(n, Refusing())).__name__ for n in found] == [
        "Started", "Started", "Resumed", "FormSubmitted", "FormSubmitted", "FeedbackGiven", "Ended", "Erased"]


# ---- reading ahead ---------------------------------------------------------------------------------------------


def test_a_page_read_ahead_is_dropped_when_another_runner_moved_the_view_and_no_event_counts_twice(
    pg_store: EventStore, pg_db: Database, other_pg_db: Database
) -> None:
    save_interleaved(pg_store, [(i % 2 == 0, ["form", "resume", "feedback", "end"]) for i in range(6)])
    view = ConversationListView(pg_db)
    other = ProjectionRunner("other", pg_store, ConversationListView(pg_db), projection_factory=ConversationListProjection,
                             page_size=5)
    commit, jumped = view.commit, []

    def commit_after_another_runner(changes: Any, first: int, last: int) -> int:
        if not jumped:  # while this runner applied its first page, another applied the next ten events
            jumped.append(other.catch_up(stop_at=first + 9))
        return commit(changes, first, last)

    view.commit = commit_after_another_runner  # type: ignore[method-assign]
    runner = ProjectionRunner("read-ahead", pg_store, view, projection_factory=ConversationListProjection, page_size=3,
                              read_ahead=True)
    runner.catch_up()
    ProjectionRunner("one-by-one", pg_store, ConversationListView(other_pg_db), projection_factory=ConversationListProjection,
                     page_size=1).catch_up()
    assert jumped == [10]
    assert dump_sql(pg_db, "conversation_list") == dump_sql(other_pg_db, "conversation_list")
    assert runner.position == view.position() == ConversationListView(other_pg_db).position()


def test_a_runner_reading_ahead_stops_at_an_undecodable_event_naming_it(
    production_settings: Settings, pg_store: EventStore, pg_db: Database
) -> None:
    save_interleaved(pg_store, [(False, ["form"]), (False, [])])
    with psycopg.connect(production_settings.database_url, autocommit=True) as conn:
        found = conn.execute(
            f'INSERT INTO "{production_settings.database_schema}".widgets_events (originator_id, originator_version, '
            "topic, state) VALUES (gen_random_uuid(), 1, 'conversation.started', %s) RETURNING notification_id",
            [b"\x00 not json"]).fetchone()
    assert found is not None
    bad = int(found[0])
    save_interleaved(pg_store, [(False, ["feedback"])])
    view = ConversationListView(pg_db)
    runner = ProjectionRunner("read-ahead", pg_store, view, projection_factory=ConversationListProjection, page_size=1,
                              read_ahead=True)
    for _ in range(2):  # a retry meets it again: it is never skipped
        with pytest.raises(ProjectionFailedError, match=rf"stopped at notification {bad} \(notification {bad} cannot"):
            runner.catch_up()
        assert runner.position == view.position() == bad - 1
    assert sum(key.startswith("conversation ") for key in dump_sql(pg_db, "conversation_list")) == 2

"""A rebuild of the conversation list (rows inserted in bulk into the emptied model, a write per row a page) holds
exactly the rows that applying the events one by one gives, however the pages cut the conversations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.store import EventStore
from domain.conversation import Conversation
from infrastructure.eventstore import open_event_store
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.conversation_list import ConversationListProjection, ConversationListView
from projections.rebuild import rebuild_sql
from projections.runner import ProjectionRunner
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
                conversation.resume(f"{conversation.id}-{round_}", "p", conversation.agent_id, uuid.uuid4())
            elif step == "form" and not conversation.closed:
                conversation.submit_form("pre", {"email": "v@mail.example"})
            elif step == "feedback":
                conversation.give_feedback(4, "thanks")
            elif step == "end":
                conversation.end("visitor")
            elif step == "erase":
                conversation.erase_personal_data("user_1", "request")
            store.save(conversation)


@pytest.fixture(params=["embedded", "production"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EventStore, Database, Database]]:
    """The event store, the model to rebuild, and a model kept event by event."""
    base: Settings = request.getfixturevalue("embedded_settings" if request.param == "embedded" else "production_settings")
    if request.param == "embedded":
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

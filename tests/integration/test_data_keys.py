"""The key table on both stores: a start writes its data key with its event, in one transaction."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import IntegrityError

from application.store import EventStore
from domain.conversation import Conversation
from infrastructure.eventstore import open_event_store
from infrastructure.personal_data import KeyedStoredEvent
from infrastructure.settings import Settings


def new_conversation(conversation_id: uuid.UUID | None = None, name: str = "Key Table Person") -> Conversation:
    return Conversation(id=conversation_id or uuid.uuid4(), organization_id="org_1", widget_id=uuid.uuid4(),
                        agent_id=uuid.uuid4(), agent_version_id=uuid.uuid4(), channel="webrtc", room="conv_x",
                        participant_identity="visitor_x", resume_token_hash="0" * 64, visitor={"name": name},
                        origin="https://example.com")


@pytest.fixture
def store(settings: Settings) -> EventStore:
    opened = open_event_store(settings)
    yield opened
    opened.close()


def test_a_start_writes_its_wrapped_key_and_reads_back(store: EventStore) -> None:
    conversation = new_conversation()
    store.save(conversation)
    assert list(store.recorder.select_data_keys([conversation.id])) == [conversation.id]
    assert store.repository.get(conversation.id).visitor == {"name": "Key Table Person"}


def test_a_failed_start_writes_no_key_and_keeps_the_first_one(store: EventStore) -> None:
    first = new_conversation()
    store.save(first)
    key_before = store.recorder.select_data_keys([first.id])[first.id]
    with pytest.raises(IntegrityError):
        store.save(new_conversation(first.id, name="Impostor"))  # same id: the event insert fails, and so does the key's
    assert store.recorder.select_data_keys([first.id]) == {first.id: key_before}
    assert store.repository.get(first.id).visitor == {"name": "Key Table Person"}


def test_a_key_written_beside_several_events_in_one_save(store: EventStore) -> None:
    conversation = new_conversation()
    conversation.submit_form("contact", {"email": "batch@unique.example"})
    store.save(conversation)  # two events in one insert: the array path
    assert store.repository.get(conversation.id).forms[0]["values"] == {"email": "batch@unique.example"}
    assert conversation.id in store.recorder.select_data_keys([conversation.id])


def test_a_key_without_its_event_is_never_written(store: EventStore) -> None:
    # The recorder writes keys only beside events: an event that fails to insert takes its key with it.
    conversation = new_conversation()
    stored = store.mapper.to_stored_event(conversation.collect_events()[0])
    assert isinstance(stored, KeyedStoredEvent)
    broken = KeyedStoredEvent(stored.originator_id, stored.originator_version, stored.topic, stored.state, stored.data_key)
    store.recorder.insert_events([broken])
    with pytest.raises(IntegrityError):
        store.recorder.insert_events([broken])
    assert len(store.recorder.select_data_keys([conversation.id])) == 1

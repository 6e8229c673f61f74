"""The Conversation's bounds, through the conversation service on in-memory storage with fakes of its ports:
resume tokens rotate, a resume ends the room it leaves, forms and feedback are bounded, erasure closes the door."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest

from application.conversations import ConversationService, Grant, LiveWidget, RoomTicket
from application.store import EventStore
from domain.conversation import ENDED_BY_ERASURE, ENDED_BY_ROOM, Conversation, hash_resume_token
from domain.errors import ConversationEndedError, ConversationErasedError, NotFoundError, SubmissionLimitError
from domain.records import describe

FORM = {"id": "pre", "title": "About you", "fields": [{"name": "email", "label": "Email", "type": "email", "required": True}]}
OTHER_FORM = {"id": "later", "title": "Later", "fields": [{"name": "note", "label": "Note", "type": "text"}]}
CONFIG = {"v1": {"forms": [FORM, OTHER_FORM], "feedback": {"enabled": True, "type": "stars", "allow_comment": True}}}
WIDGET = LiveWidget(str(uuid.uuid4()), "org_a", str(uuid.uuid4()), str(uuid.uuid4()), CONFIG)
LIMIT = 3


class FakeIssuer:
    def grant(self, ticket: RoomTicket) -> Grant:
        return Grant("ws://livekit.test", ticket.room, f"token-for-{ticket.identity}", datetime.now(UTC))


class FakeRooms:
    """The `RoomEnder` port: records each room it is asked to end, and the conversation's room at that moment."""

    def __init__(self, store: EventStore, answer: bool = True) -> None:
        self.store, self.answer = store, answer
        self.ended: list[tuple[str, str]] = []

    def end_room(self, room: str) -> bool:
        conversation = self.store.repository.get(UUID(room.split("_")[1]))
        self.ended.append((room, conversation.room))
        return self.answer


@pytest.fixture
def store() -> Iterator[EventStore]:
    store = EventStore(env={})
    yield store
    store.close()


@pytest.fixture
def rooms(store: EventStore) -> FakeRooms:
    return FakeRooms(store)


@pytest.fixture
def service(store: EventStore, rooms: FakeRooms) -> ConversationService:
    return ConversationService(store, FakeIssuer(), rooms=rooms, form_submissions=LIMIT)


def events(store: EventStore, conversation_id: UUID) -> list[object]:
    return list(store.events.get(conversation_id))


# --- resume tokens -------------------------------------------------------------------------


def test_a_resume_hands_out_a_new_token_and_retires_the_one_presented(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    token, _ = service.resume(WIDGET, started.conversation_id, started.resume_token)
    assert token != started.resume_token and len(token) >= 32
    with pytest.raises(NotFoundError):
        service.resume(WIDGET, started.conversation_id, started.resume_token)
    with pytest.raises(NotFoundError):
        service.submit_form(WIDGET, started.conversation_id, started.resume_token, "pre", {"email": "a@example.com"})
    service.submit_form(WIDGET, started.conversation_id, token, "pre", {"email": "a@example.com"})
    newest, _ = service.resume(WIDGET, started.conversation_id, token)
    conversation = store.repository.get(started.conversation_id)
    assert conversation.holds_token(newest) and not conversation.holds_token(token)


def test_a_retired_token_is_refused_exactly_as_a_wrong_one(service: ConversationService) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    service.resume(WIDGET, started.conversation_id, started.resume_token)
    with pytest.raises(NotFoundError) as retired:
        service.resume(WIDGET, started.conversation_id, started.resume_token)
    with pytest.raises(NotFoundError) as wrong:
        service.resume(WIDGET, started.conversation_id, "never-handed-out")
    with pytest.raises(NotFoundError) as unknown:
        service.resume(WIDGET, uuid.uuid4(), started.resume_token)
    assert str(retired.value) == str(wrong.value)
    assert str(unknown.value).replace(str(unknown.value.ident), "ID") == str(wrong.value).replace(str(wrong.value.ident), "ID")


def test_the_token_hash_is_recorded_in_the_resume_and_hidden_from_auditors(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    token, _ = service.resume(WIDGET, started.conversation_id, started.resume_token)
    resumed = events(store, started.conversation_id)[-1]
    assert isinstance(resumed, Conversation.Resumed)
    assert resumed.resume_token_hash == hash_resume_token(token)
    assert resumed.added_token_hash is None
    assert "resume_token_hash" not in describe(resumed).data and "added_token_hash" not in describe(resumed).data


# --- one room at a time ----------------------------------------------------------------------


def test_a_resume_ends_the_room_it_leaves_once_the_conversation_is_in_its_new_one(
    service: ConversationService, rooms: FakeRooms
) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    _, grant = service.resume(WIDGET, started.conversation_id, started.resume_token)
    assert rooms.ended == [(started.grant.room, grant.room)]


def test_a_room_that_finished_is_not_ended_again(service: ConversationService, rooms: FakeRooms) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    assert service.room_finished(started.grant.room)
    service.resume(WIDGET, started.conversation_id, started.resume_token)
    assert rooms.ended == []


def test_a_resume_succeeds_when_livekit_cannot_end_the_old_room(store: EventStore) -> None:
    rooms = FakeRooms(store, answer=False)
    service = ConversationService(store, FakeIssuer(), rooms=rooms)
    started = service.start(WIDGET, "https://example.com", {})
    token, grant = service.resume(WIDGET, started.conversation_id, started.resume_token)
    assert token and grant.room != started.grant.room and len(rooms.ended) == 1


def test_the_old_room_finishing_after_a_resume_ends_nothing(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    _, grant = service.resume(WIDGET, started.conversation_id, started.resume_token)
    assert not service.room_finished(started.grant.room)
    assert store.repository.get(started.conversation_id).ended_by is None
    assert service.room_finished(grant.room)
    assert store.repository.get(started.conversation_id).ended_by == ENDED_BY_ROOM


# --- forms and feedback --------------------------------------------------------------------


def test_a_form_is_taken_as_many_times_as_the_bound_and_the_latest_counts(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    cid, token = started.conversation_id, started.resume_token
    for i in range(LIMIT):
        service.submit_form(WIDGET, cid, token, "pre", {"email": f"v{i}@example.com"})
    before = len(events(store, cid))
    with pytest.raises(SubmissionLimitError) as refused:
        service.submit_form(WIDGET, cid, token, "pre", {"email": "late@example.com"})
    assert refused.value.code == "submission_limit" and refused.value.status == 429
    assert f"{LIMIT}" in refused.value.detail and "'pre'" in refused.value.detail
    assert len(events(store, cid)) == before
    service.submit_form(WIDGET, cid, token, "later", {"note": "another form has its own count"})
    conversation = store.repository.get(cid)
    assert conversation.forms == [{"form_id": "pre", "values": {"email": f"v{LIMIT - 1}@example.com"}},
                                  {"form_id": "later", "values": {"note": "another form has its own count"}}]
    assert conversation.form_submissions == {"pre": LIMIT, "later": 1}


def test_feedback_given_again_replaces_it(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    for rating, comment in ((2, "meh"), (5, "great after all")):
        service.give_feedback(WIDGET, started.conversation_id, started.resume_token, rating, comment)
    assert store.repository.get(started.conversation_id).feedback == {"rating": 5, "comment": "great after all"}


# --- erasure closes the door ------------------------------------------------------------------


def erased(service: ConversationService, store: EventStore) -> tuple[Conversation, str]:
    started = service.start(WIDGET, "https://example.com", {"name": "Ada"})
    conversation = store.repository.get(started.conversation_id)
    assert conversation.erase_personal_data("alice", "request")
    store.save(conversation)
    return store.repository.get(started.conversation_id), started.resume_token


def test_erasing_ends_the_conversation_naming_who_erased_it(service: ConversationService, store: EventStore) -> None:
    conversation, _ = erased(service, store)
    assert conversation.erased and conversation.closed and conversation.ended_by == ENDED_BY_ERASURE
    ended, erasure = events(store, conversation.id)[-2:]
    assert isinstance(ended, Conversation.Ended) and isinstance(erasure, Conversation.PersonalDataErased)
    assert (ended.by, describe(ended).actor, describe(ended).data) == (ENDED_BY_ERASURE, "alice", {"by": ENDED_BY_ERASURE})


def test_erasing_a_conversation_that_had_ended_records_no_second_end(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    service.end(WIDGET, started.conversation_id, started.resume_token)
    conversation = store.repository.get(started.conversation_id)
    assert conversation.erase_personal_data("alice", "request")
    assert [type(e).__name__ for e in conversation.collect_events()] == ["PersonalDataErased"]


def test_an_erased_conversation_refuses_its_resume_and_every_write_with_410(
    service: ConversationService, store: EventStore
) -> None:
    conversation, token = erased(service, store)
    cid = conversation.id
    before = len(events(store, cid))
    calls = [
        lambda: service.resume(WIDGET, cid, token),
        lambda: service.submit_form(WIDGET, cid, token, "pre", {"email": "late@example.com"}),
        lambda: service.give_feedback(WIDGET, cid, token, 4, "late"),
        lambda: service.end(WIDGET, cid, token),
    ]
    for call in calls:
        with pytest.raises(ConversationErasedError) as refused:
            call()
        assert (refused.value.code, refused.value.status) == ("conversation_erased", 410)
    service.room_finished(conversation.room)  # LiveKit's word that its room finished: nothing more to end
    assert len(events(store, cid)) == before
    with pytest.raises(NotFoundError):  # without its token, it is still not found: the 410 is for its holder only
        service.resume(WIDGET, cid, "wrong")


def test_a_conversation_the_visitor_ended_is_409_and_erased_it_is_410(service: ConversationService, store: EventStore) -> None:
    started = service.start(WIDGET, "https://example.com", {})
    service.end(WIDGET, started.conversation_id, started.resume_token)
    with pytest.raises(ConversationEndedError):
        service.resume(WIDGET, started.conversation_id, started.resume_token)
    conversation = store.repository.get(started.conversation_id)
    conversation.erase_personal_data("alice", "request")
    store.save(conversation)
    with pytest.raises(ConversationErasedError):
        service.resume(WIDGET, started.conversation_id, started.resume_token)

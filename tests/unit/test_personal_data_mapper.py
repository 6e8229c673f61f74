"""The personal-data mapper: conversation fields sealed under their own data key, bound to conversation and field."""

from __future__ import annotations

import base64
import dataclasses
import os
import uuid
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from hypothesis import assume, given
from hypothesis import strategies as st

from application.store import EventStore
from domain.conversation import Conversation
from infrastructure.personal_data import (
    SEALED,
    DataKeyError,
    DeploymentKeys,
    KeyedStoredEvent,
    PersonalDataVault,
    is_sealed,
)


class MemoryKeyTable:
    """The recorder's key table, in memory (the same port the SQLite and PostgreSQL recorders implement)."""

    def __init__(self) -> None:
        self.rows: dict[UUID, bytes] = {}
        self.erased: set[UUID] = set()

    def select_data_keys(self, conversation_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        return {cid: self.rows[cid] for cid in conversation_ids if cid in self.rows}

    def delete_data_keys(self, conversation_ids: Sequence[UUID]) -> int:
        self.erased.update(conversation_ids)
        return sum(self.rows.pop(cid, None) is not None for cid in conversation_ids)

    def erased_data_keys(self, conversation_ids: Sequence[UUID]) -> set[UUID]:
        return self.erased.intersection(conversation_ids)

    def insert_data_keys(self, rows: Sequence[tuple[UUID, bytes]]) -> None:
        for cid, wrapped in rows:
            self.rows.setdefault(cid, wrapped)


def transcoder() -> JSONTranscoder:
    coder = JSONTranscoder()
    EventStore.register_transcodings(None, coder)  # type: ignore[arg-type]
    return coder


def vault(keys: DeploymentKeys | None = None) -> tuple[PersonalDataVault, MemoryKeyTable]:
    table = MemoryKeyTable()
    v = PersonalDataVault(keys or DeploymentKeys(os.urandom(32)))
    v.bind(table)
    return v, table


def started(visitor: dict[str, Any]) -> Conversation:
    return Conversation(id=uuid.uuid4(), organization_id="org_1", widget_id=uuid.uuid4(), agent_id=uuid.uuid4(),
                        agent_version_id=uuid.uuid4(), channel="webrtc", room="conv_x", participant_identity="visitor_x",
                        resume_token_hash="0" * 64, visitor=visitor, origin="https://example.com")


def record(v: PersonalDataVault, table: MemoryKeyTable, event: Any) -> StoredEvent:
    """What the recorder does: store the event and, for a start, its wrapped key in the same write."""
    stored = v.mapper(transcoder()).to_stored_event(event)
    if isinstance(stored, KeyedStoredEvent):
        table.rows[stored.originator_id] = stored.data_key  # type: ignore[index]
    return stored


def test_a_visitor_round_trips_and_is_not_stored_in_plaintext() -> None:
    v, table = vault()
    conversation = started({"name": "Grace Hopper-Unique", "locale": "en-US"})
    stored = record(v, table, conversation.collect_events()[0])
    assert isinstance(stored, KeyedStoredEvent) and len(stored.data_key) == 69
    assert b"Grace Hopper-Unique" not in stored.state and b"en-US" not in stored.state
    assert v.mapper(transcoder()).to_domain_event(stored).visitor == {"name": "Grace Hopper-Unique", "locale": "en-US"}


def test_form_values_and_comments_are_sealed_under_the_conversations_key() -> None:
    v, table = vault()
    conversation = started({})
    record(v, table, conversation.collect_events()[0])
    conversation.submit_form("contact", {"email": "ada@unique.example", "consent": True})
    conversation.give_feedback(5, "a comment only this test writes")
    form, feedback = (record(v, table, e) for e in conversation.collect_events())
    assert b"ada@unique.example" not in form.state and b"only this test" not in feedback.state
    mapper = v.mapper(transcoder())
    assert mapper.to_domain_event(form).values == {"email": "ada@unique.example", "consent": True}
    assert mapper.to_domain_event(feedback).comment == "a comment only this test writes"
    assert mapper.to_domain_event(feedback).rating == 5  # not personal: stored as it is
    assert b'"rating":5' in feedback.state


def test_a_destroyed_key_reads_as_null_and_later_values_are_dropped() -> None:
    v, table = vault()
    conversation = started({"name": "Forgotten"})
    first = record(v, table, conversation.collect_events()[0])
    v.destroy([conversation.id])
    assert table.rows == {}
    mapper = v.mapper(transcoder())
    assert mapper.to_domain_event(first).visitor is None
    conversation.submit_form("contact", {"email": "after@erasure.example"})
    form = record(v, table, conversation.collect_events()[0])
    assert b"after@erasure" not in form.state
    assert mapper.to_domain_event(form).values is None


def test_a_sealed_value_moved_to_another_conversation_or_field_does_not_open() -> None:
    v, table = vault()
    a, b = started({"name": "Alice Unique"}), started({"name": "Bob"})
    stored_a = record(v, table, a.collect_events()[0])
    stored_b = record(v, table, b.collect_events()[0])
    coder = transcoder()
    sealed_a = coder.decode(stored_a.state)["visitor"]
    assert is_sealed(sealed_a)
    # Alice's sealed visitor pasted into Bob's event, and into Alice's own feedback comment.
    swapped = coder.decode(stored_b.state) | {"visitor": sealed_a}
    moved = dataclasses.replace(stored_b, state=coder.encode(swapped))
    assert v.mapper(coder).to_domain_event(moved).visitor is None
    keys = v.load([a.id, b.id])
    with pytest.raises(DataKeyError):
        keys[b.id].open("visitor", sealed_a)
    with pytest.raises(DataKeyError):
        keys[a.id].open("comment", sealed_a)
    assert keys[a.id].open("visitor", sealed_a) == {"name": "Alice Unique"}


def test_the_projection_mapper_leaves_values_sealed_and_an_opener_reveals_them_once() -> None:
    v, table = vault()
    conversation = started({"name": "Sealed Until The Edge"})
    stored = record(v, table, conversation.collect_events()[0])
    event = v.mapper(transcoder(), reveal=False).to_domain_event(stored)
    assert is_sealed(event.visitor)
    opener = v.opener([conversation.id])
    assert opener.reveal("conversation.started", conversation.id, {"visitor": event.visitor, "room": "r"}) == {
        "visitor": {"name": "Sealed Until The Edge"}, "room": "r"}
    v.destroy([conversation.id])
    assert v.opener([conversation.id]).open(conversation.id, "visitor", event.visitor) is None


def test_values_stored_before_encryption_read_as_they_are() -> None:
    v, _ = vault()
    conversation = started({"name": "Legacy"})
    plain = transcoder()
    event = conversation.collect_events()[0]
    state = dict(vars(event))
    state.pop("originator_id"), state.pop("originator_version")
    legacy = StoredEvent(conversation.id, 1, "conversation.started", plain.encode(state))
    assert v.mapper(transcoder()).to_domain_event(legacy).visitor == {"name": "Legacy"}


def test_a_conversation_stored_before_keys_gets_one_when_new_values_arrive() -> None:
    v, table = vault()
    conversation = started({"name": "Legacy"})
    conversation.collect_events()  # stored by the code before this change: no key row
    conversation.submit_form("contact", {"email": "late@unique.example"})
    form = record(v, table, conversation.collect_events()[0])
    assert conversation.id in table.rows and b"late@unique" not in form.state
    assert v.mapper(transcoder()).to_domain_event(form).values == {"email": "late@unique.example"}


def test_a_conversation_snapshot_seals_its_personal_state() -> None:
    v, table = vault()
    conversation = started({"name": "Snapshot Person"})
    record(v, table, conversation.collect_events()[0])
    conversation.submit_form("contact", {"email": "snap@unique.example"})
    conversation.collect_events()
    snapshot = Snapshot.take(conversation)
    stored = record(v, table, snapshot)
    assert b"Snapshot Person" not in stored.state and b"snap@unique" not in stored.state
    restored = v.mapper(transcoder()).to_domain_event(stored).mutate(None)
    assert restored.visitor == {"name": "Snapshot Person"}
    assert restored.forms[0]["values"] == {"email": "snap@unique.example"}


def test_other_aggregates_events_are_stored_as_the_library_stores_them() -> None:
    from domain.agent import Agent

    v, table = vault()
    agent = Agent(id=uuid.uuid4(), organization_id="org_1", name="Support agent", actor="user_1")
    event = agent.collect_events()[0]
    stored = record(v, table, event)
    assert b"Support agent" in stored.state and table.rows == {}
    assert v.mapper(transcoder()).to_domain_event(stored).name == "Support agent"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@given(visitor=st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=5),
       values=st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=5),
       comment=st.none() | st.text(max_size=200))
def test_every_personal_value_round_trips(visitor: dict[str, Any], values: dict[str, Any], comment: str | None) -> None:
    v, table = vault()
    conversation = started(visitor)
    conversation.submit_form("f", values)
    conversation.give_feedback(1, comment)
    mapper = v.mapper(transcoder())
    decoded = [mapper.to_domain_event(record(v, table, e)) for e in conversation.collect_events()]
    assert decoded[0].visitor == visitor and decoded[1].values == values and decoded[2].comment == comment


@given(secret=st.text(min_size=12, max_size=60).filter(lambda s: s.strip() == s and len(set(s)) > 4))
def test_no_personal_string_appears_in_a_stored_event(secret: str) -> None:
    v, table = vault()
    # A string the stored events hold whatever the visitor wrote (a field name such as "resume_token") proves nothing.
    assume(not any(secret.encode() in state or secret.encode("unicode_escape") in state for state in stored_states(v, table, "x" * 12)))
    for state in stored_states(v, table, secret):
        assert secret.encode() not in state and secret.encode("unicode_escape") not in state


def stored_states(v: PersonalDataVault, table: MemoryKeyTable, personal: str) -> list[bytes]:
    conversation = started({"name": personal})
    conversation.submit_form("f", {"note": personal})
    conversation.give_feedback(1, personal)
    return [record(v, table, event).state for event in conversation.collect_events()]


def test_deployment_keys_wrap_under_the_current_key_and_read_with_the_previous_one() -> None:
    old, new = os.urandom(32), os.urandom(32)
    cid, data_key = uuid.uuid4(), os.urandom(32)
    wrapped_old = DeploymentKeys(old).wrap(cid, data_key)
    rotating = DeploymentKeys(new, previous=old)
    assert rotating.unwrap(cid, wrapped_old) == data_key
    rewrapped = rotating.rewrap(cid, wrapped_old)
    assert rewrapped is not None and rotating.rewrap(cid, rewrapped) is None
    assert DeploymentKeys(new).unwrap(cid, rewrapped) == data_key
    with pytest.raises(DataKeyError, match="WIDGETS_DATA_KEY_PREVIOUS"):
        DeploymentKeys(new).unwrap(cid, wrapped_old)
    with pytest.raises(DataKeyError):
        rotating.unwrap(uuid.uuid4(), rewrapped)  # bound to its conversation


def test_secrets_seal_under_the_deployment_key_for_one_purpose() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = DeploymentKeys(old).seal_secret("webhook-endpoint-secret", b"whsec-raw-bytes")
    assert b"whsec-raw-bytes" not in base64.urlsafe_b64decode(sealed)
    keys = DeploymentKeys(new, previous=old)
    assert keys.open_secret("webhook-endpoint-secret", sealed) == b"whsec-raw-bytes"
    with pytest.raises(DataKeyError):
        keys.open_secret("another-purpose", sealed)
    resealed = keys.reseal_secret("webhook-endpoint-secret", sealed)
    assert resealed is not None and keys.reseal_secret("webhook-endpoint-secret", resealed) is None
    assert DeploymentKeys(new).open_secret("webhook-endpoint-secret", resealed) == b"whsec-raw-bytes"


@pytest.mark.parametrize("value", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_deployment_key_must_be_32_bytes_of_base64(value: str) -> None:
    from infrastructure.personal_data import decode_deployment_key

    with pytest.raises(SystemExit, match="WIDGETS_DATA_KEY"):
        decode_deployment_key("WIDGETS_DATA_KEY", value)


def test_sealed_values_carry_the_format_prefix() -> None:
    v, table = vault()
    stored = record(v, table, started({"name": "x"}).collect_events()[0])
    assert f'"visitor":"{SEALED}'.encode() in stored.state

"""Erasing a conversation's personal data (crypto-shredding): the data key first, then the recorded fact.

The key is destroyed before `conversation.personal_data_erased` is appended, so a
crash in between leaves the values unreadable already; `widgets verify` reports
such a conversation and the same call again records the fact. Conversations
stored before encryption existed have no key: their stored events are rewritten
in place with the personal values gone (the one exception to an append-only log,
recorded in the erasure event as `rewritten_events`).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from application.commands import Caller, change
from application.conversations import get_conversation
from application.store import EventStore
from domain.conversation import ERASURE_REASONS, Conversation
from domain.errors import NotFoundError

SCOPE = "widgets:write"


class PersonalDataService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def load(self, caller: Caller, widget_id: UUID | None, conversation_id: UUID) -> Conversation:
        """The conversation, of the caller's organization (and of this widget); anything else is not found."""
        found = get_conversation(self.store, conversation_id)
        if found is None or found.organization_id != caller.organization_id or (
                widget_id is not None and found.widget_id != widget_id):
            raise NotFoundError("Conversation", conversation_id)
        return found

    def erase(self, caller: Caller, widget_id: UUID | None, conversation_id: UUID, reason: str = "request") -> bool:
        """Erase one conversation's personal data; False if it was erased already (idempotent)."""
        assert reason in ERASURE_REASONS
        conversation = self.load(caller, widget_id, conversation_id)
        if conversation.erased:
            return False
        rewritten = 0
        vault = self.store.personal_data
        if vault is not None:
            vault.destroy([conversation_id])
            rewritten = vault.shred_plaintext(conversation_id, self.store.mapper.transcoder)
        change(self.store, lambda: self.load(caller, widget_id, conversation_id),
               lambda c: c.erase_personal_data(caller.actor, reason, rewritten), None)
        return True

    def erase_all(self, caller: Caller, conversation_ids: Iterable[UUID], reason: str) -> int:
        return sum(self.erase(caller, None, cid, reason) for cid in conversation_ids)

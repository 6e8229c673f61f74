"""The Conversation aggregate: one visitor's session with a widget's agent on `webrtc`.

A visitor holds a resume token; only its hash is recorded. A verified visitor's
conversations also record a keyed hash of their external id (never the id itself). Every resume gets a
fresh room. A room that finishes ends the conversation for now (the visitor may
resume it later); ending it themselves closes it for good.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import event_types as t
from domain.errors import ConversationEndedError

CHANNEL = "webrtc"
ENDED_BY_VISITOR = "visitor"
ENDED_BY_ROOM = "room_finished"
# Why a conversation's personal data was erased.
ERASURE_REASONS = ("request", "retention", "visitor_request")


def hash_resume_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Conversation(Aggregate):
    TOPIC = t.CONVERSATION

    @event("Created", topic=t.CONVERSATION_STARTED)  # every aggregate has a Created class; its public name is conversation.started
    def __init__(
        self,
        id: UUID,  # noqa: A002
        organization_id: str,
        widget_id: UUID,
        agent_id: UUID,
        agent_version_id: UUID,
        channel: str,
        room: str,
        participant_identity: str,
        resume_token_hash: str,
        visitor: dict[str, Any],
        origin: str,
        visitor_ref: str | None = None,
        context: dict[str, Any] | None = None,  # personal: what the page and the token told the agent
    ) -> None:
        self.organization_id = organization_id
        self.widget_id = widget_id
        self.agent_id = agent_id
        self.agent_version_id = agent_version_id
        self.channel = channel
        self.room = room
        self.participant_identity = participant_identity
        self.resume_token_hash = resume_token_hash
        self.other_token_hashes: list[str] = []  # tokens handed out when the verified visitor resumed elsewhere
        self.visitor = visitor if visitor is not None else {}  # None: erased (its data key destroyed)
        self.visitor_ref = visitor_ref  # a keyed hash of a verified visitor's external id, to find their conversations
        self.rooms = [room]
        self.forms: list[dict[str, Any]] = []
        self.feedback: dict[str, Any] | None = None
        self.ended_by: str | None = None
        self.erased = False  # its personal data erased (the data key destroyed, then the fact recorded)

    def holds_token(self, token: str) -> bool:
        digest = hash_resume_token(token)
        return any(hmac.compare_digest(known, digest) for known in (self.resume_token_hash, *self.other_token_hashes))

    def belongs_to(self, visitor_refs: tuple[str, ...]) -> bool:
        """Whether a verified visitor with one of these lookup values started this conversation."""
        mine = self.visitor_ref
        return mine is not None and any(hmac.compare_digest(mine, ref) for ref in visitor_refs)

    @property
    def closed(self) -> bool:
        return self.ended_by == ENDED_BY_VISITOR

    def resume(self, room: str, participant_identity: str, agent_id: UUID, agent_version_id: UUID,
               resume_token_hash: str | None = None, context: dict[str, Any] | None = None) -> None:
        """Continue in a fresh room, with the agent version the widget serves at this moment; a verified visitor
        resuming without the resume token (on another device) gets a token of their own, `resume_token_hash`'s.
        `context`: what the page and the token told the agent this time (personal, sealed at rest), None if nothing."""
        self.check_open()
        self._resumed(room=room, participant_identity=participant_identity, agent_id=agent_id, agent_version_id=agent_version_id,
                      resume_token_hash=resume_token_hash, context=context)

    def submit_form(self, form_id: str, values: dict[str, Any]) -> None:
        self.check_open()
        self._form_submitted(form_id=form_id, values=values)

    def give_feedback(self, rating: int, comment: str | None) -> None:
        # Feedback is asked as the visitor ends the conversation, so it is welcome after the end too.
        self._feedback_given(rating=rating, comment=comment)

    def end(self, by: str) -> bool:
        if self.ended_by == ENDED_BY_VISITOR or (self.ended_by == by):
            return False
        self._ended(by=by)
        return True

    def erase_personal_data(self, actor: str, reason: str, rewritten_events: int = 0) -> bool:
        """Record that the personal data is gone (its data key destroyed first; `rewritten_events`: how many stored
        events, written before encryption existed, were rewritten in place without it); once is enough."""
        if self.erased:
            return False
        self._personal_data_erased(actor=actor, reason=reason, rewritten_events=rewritten_events)
        return True

    def check_open(self) -> None:
        if self.closed:
            raise ConversationEndedError(f"Conversation {self.id} has been ended by the visitor.")

    class Resumed(Aggregate.Event):
        """Version 2 added `context` (what the page and the token told the agent at this resume, sealed at rest);
        version 1 events lack it, and the oldest lack `resume_token_hash` too."""

        TOPIC = t.CONVERSATION_RESUMED
        class_version = 2

        room: str
        participant_identity: str
        agent_id: UUID
        agent_version_id: UUID
        resume_token_hash: str | None
        context: dict[str, Any] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("resume_token_hash", None)
            state.setdefault("context", None)

    @event(Resumed)
    def _resumed(self, room: str, participant_identity: str, agent_id: UUID, agent_version_id: UUID,
                 resume_token_hash: str | None = None, context: dict[str, Any] | None = None) -> None:
        if resume_token_hash is not None:
            self.other_token_hashes = [*self.other_token_hashes, resume_token_hash]
        self.room = room
        self.agent_id = agent_id
        self.agent_version_id = agent_version_id
        self.participant_identity = participant_identity
        self.rooms.append(room)
        self.ended_by = None

    @event("FormSubmitted", topic=t.CONVERSATION_FORM_SUBMITTED)
    def _form_submitted(self, form_id: str, values: dict[str, Any]) -> None:
        self.forms.append({"form_id": form_id, "values": values if values is not None else {}})

    @event("FeedbackGiven", topic=t.CONVERSATION_FEEDBACK_GIVEN)
    def _feedback_given(self, rating: int, comment: str | None) -> None:
        self.feedback = {"rating": rating, "comment": comment}

    @event("Ended", topic=t.CONVERSATION_ENDED)
    def _ended(self, by: str) -> None:
        self.ended_by = by

    @event("PersonalDataErased", topic=t.CONVERSATION_PERSONAL_DATA_ERASED)
    def _personal_data_erased(self, actor: str, reason: str, rewritten_events: int = 0) -> None:
        self.erased = True
        self.visitor = {}
        self.forms = [{**form, "values": {}} for form in self.forms]
        if self.feedback is not None:
            self.feedback = {**self.feedback, "comment": None}

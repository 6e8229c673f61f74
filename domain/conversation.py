"""The Conversation aggregate: one visitor's session with a widget's agent on `webrtc`.

A visitor holds a resume token; only its hash is recorded, and each resume records
the hash of a new one, retiring the token presented. A verified visitor's
conversations also record a keyed hash of their external id (never the id itself). Every resume gets a
fresh room. A room that finishes ends the conversation for now (the visitor may
resume it later); ending it themselves closes it for good, and so does erasing its
personal data. A form counts a bounded number of times per conversation, the
latest submission replacing the earlier ones; feedback given again replaces it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import event_types as t
from domain.errors import ConversationEndedError, ConversationErasedError, SubmissionLimitError

CHANNEL = "webrtc"
ENDED_BY_VISITOR = "visitor"
ENDED_BY_ROOM = "room_finished"
ENDED_BY_ERASURE = "erasure"
FORM_SUBMISSIONS = 5  # how many times one form may be submitted in one conversation, unless configured otherwise
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
        self.forms: list[dict[str, Any]] = []  # the latest submission of each form
        self.form_submissions: dict[str, int] = {}  # form id -> how many times it was submitted
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
        """Closed for good: ended by the visitor, or its personal data erased."""
        return self.ended_by == ENDED_BY_VISITOR or self.erased

    def resume(self, room: str, participant_identity: str, agent_id: UUID, agent_version_id: UUID,
               resume_token_hash: str, context: dict[str, Any] | None = None) -> None:
        """Continue in a fresh room, with the agent version the widget serves at this moment and a new resume
        token (`resume_token_hash`'s); every token handed out before is retired.
        `context`: what the page and the token told the agent this time (personal, sealed at rest), None if nothing."""
        self.check_not_erased()
        self.check_open()
        self._resumed(room=room, participant_identity=participant_identity, agent_id=agent_id, agent_version_id=agent_version_id,
                      resume_token_hash=resume_token_hash, context=context)

    def submit_form(self, form_id: str, values: dict[str, Any], limit: int = FORM_SUBMISSIONS) -> None:
        """Record a form's values; at most `limit` submissions of one form per conversation, the latest counting."""
        self.check_not_erased()
        self.check_open()
        self.check_form_submissions(form_id, limit)
        self._form_submitted(form_id=form_id, values=values)

    def give_feedback(self, rating: int, comment: str | None) -> None:
        """Record the visitor's feedback, replacing any given before."""
        # Feedback is asked as the visitor ends the conversation, so it is welcome after the end too.
        self.check_not_erased()
        self._feedback_given(rating=rating, comment=comment)

    def end(self, by: str) -> bool:
        if by == ENDED_BY_VISITOR:
            self.check_not_erased()
        if self.closed or self.ended_by == by:
            return False
        self._ended(by=by, actor=None)
        return True

    def erase_personal_data(self, actor: str, reason: str, rewritten_events: int = 0) -> bool:
        """Record that the personal data is gone (its data key destroyed first; `rewritten_events`: how many stored
        events, written before encryption existed, were rewritten in place without it), and end the conversation if
        it had not ended: it takes nothing more. Once is enough."""
        if self.erased:
            return False
        if self.ended_by is None:
            self._ended(by=ENDED_BY_ERASURE, actor=actor)
        self._personal_data_erased(actor=actor, reason=reason, rewritten_events=rewritten_events)
        return True

    def check_open(self) -> None:
        if self.ended_by == ENDED_BY_VISITOR:
            raise ConversationEndedError(f"Conversation {self.id} has been ended by the visitor.")

    def check_not_erased(self) -> None:
        if self.erased:
            raise ConversationErasedError(f"Conversation {self.id} has had its personal data erased.")

    def check_form_submissions(self, form_id: str, limit: int) -> None:
        if self.form_submissions.get(form_id, 0) >= limit:
            raise SubmissionLimitError(f"At most {limit} submissions of form {form_id!r} per conversation; the latest counts.")

    class Resumed(Aggregate.Event):
        """Version 3: `resume_token_hash` is the hash of the conversation's resume token from this resume on (every
        earlier token is retired). Version 2 recorded there only a token a verified visitor got beside the others,
        resuming on another device (or None); its upcaster moves that to `added_token_hash`, so old resumes replay
        as they happened. Version 2 added `context` (what the page and the token told the agent at this resume,
        sealed at rest); version 1 events lack it, and the oldest lack the token's hash too."""

        TOPIC = t.CONVERSATION_RESUMED
        class_version = 3

        room: str
        participant_identity: str
        agent_id: UUID
        agent_version_id: UUID
        resume_token_hash: str | None
        context: dict[str, Any] | None
        added_token_hash: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("resume_token_hash", None)
            state.setdefault("context", None)

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            if "added_token_hash" not in state:
                state["added_token_hash"] = state.get("resume_token_hash")
                state["resume_token_hash"] = None

    @event(Resumed)
    def _resumed(self, room: str, participant_identity: str, agent_id: UUID, agent_version_id: UUID,
                 resume_token_hash: str | None = None, context: dict[str, Any] | None = None,
                 added_token_hash: str | None = None) -> None:
        if resume_token_hash is not None:  # the new token; the one presented, and any other, retired
            self.resume_token_hash, self.other_token_hashes = resume_token_hash, []
        if added_token_hash is not None:
            self.other_token_hashes = [*self.other_token_hashes, added_token_hash]
        self.room = room
        self.agent_id = agent_id
        self.agent_version_id = agent_version_id
        self.participant_identity = participant_identity
        self.rooms.append(room)
        self.ended_by = None

    @event("FormSubmitted", topic=t.CONVERSATION_FORM_SUBMITTED)
    def _form_submitted(self, form_id: str, values: dict[str, Any]) -> None:
        latest = {"form_id": form_id, "values": values if values is not None else {}}
        self.forms = [*(f for f in self.forms if f["form_id"] != form_id), latest]
        self.form_submissions = {**self.form_submissions, form_id: self.form_submissions.get(form_id, 0) + 1}

    @event("FeedbackGiven", topic=t.CONVERSATION_FEEDBACK_GIVEN)
    def _feedback_given(self, rating: int, comment: str | None) -> None:
        self.feedback = {"rating": rating, "comment": comment}

    class Ended(Aggregate.Event):
        """Version 2 added `actor`: who erased the conversation's personal data, when that ended it (`by`
        `erasure`); None when the visitor or LiveKit ended it, as in every version 1 event."""

        TOPIC = t.CONVERSATION_ENDED
        class_version = 2

        by: str
        actor: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("actor", None)

    @event(Ended)
    def _ended(self, by: str, actor: str | None = None) -> None:
        self.ended_by = by

    @event("PersonalDataErased", topic=t.CONVERSATION_PERSONAL_DATA_ERASED)
    def _personal_data_erased(self, actor: str, reason: str, rewritten_events: int = 0) -> None:
        self.erased = True
        self.visitor = {}
        self.forms = [{**form, "values": {}} for form in self.forms]
        if self.feedback is not None:
            self.feedback = {**self.feedback, "comment": None}

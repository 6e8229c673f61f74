"""Visitors' conversations with a live widget's agent: start, resume, forms, feedback, end.

The public API checks the widget is live and the origin allowed (from the read
model) and hands the facts in as a `LiveWidget`; this service records the
conversation and asks the grant issuer for a token to a fresh room. A resume ends
the room the conversation leaves (through a `RoomEnder`), so a conversation has
one room at a time.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from application.commands import change
from application.store import EventStore
from application.visitors import ANONYMOUS, NO_TOKENS, Identified, VisitorTokens, identify
from domain.config import find_form, parse_config
from domain.conversation import (
    CHANNEL,
    ENDED_BY_ROOM,
    ENDED_BY_VISITOR,
    FORM_SUBMISSIONS,
    Conversation,
    hash_resume_token,
)
from domain.errors import NotFoundError
from domain.forms import validate_feedback, validate_form_values
from domain.identity import IdentityKey

ROOM_PREFIX = "conv_"


@dataclass(frozen=True)
class LiveWidget:
    """What the read model says of a widget that serves right now."""

    widget_id: str
    organization_id: str
    agent_id: str
    agent_version_id: str
    config: dict[str, Any]
    identity_keys: tuple[IdentityKey, ...] = ()


@dataclass(frozen=True)
class RoomTicket:
    conversation_id: str
    organization_id: str
    widget_id: str
    agent_id: str
    agent_version_id: str
    room: str
    identity: str
    visitor_name: str | None
    # The dispatch metadata's `visitor` and `context` (API.md, "Visitor identity and context").
    visitor: dict[str, Any] = field(default_factory=lambda: {"verified": False})
    context: dict[str, Any] = field(default_factory=lambda: {"verified": {}, "page": {}})
    # False in the conversation's first room; true in the fresh room of a resume (docs/agents.md).
    resumed: bool = False


@dataclass(frozen=True)
class Grant:
    url: str
    room: str
    token: str
    expires_at: datetime


class GrantIssuer(Protocol):
    """Signs a participant token for one fresh room that dispatches the agent."""

    def grant(self, ticket: RoomTicket) -> Grant: ...


class RoomEnder(Protocol):
    """Ends a LiveKit room that a conversation has left (LiveKit's DeleteRoom), disconnecting whoever is still in it."""

    def end_room(self, room: str) -> bool:
        """Best effort and bounded in time (about a second): False when the room could not be ended, which the
        adapter logs and counts; never raises. A room that is already gone counts as ended."""
        ...


class _NoRooms:
    """Where no LiveKit server API is wired (tests of other things): rooms are left to empty on their own."""

    def end_room(self, room: str) -> bool:
        return True


NO_ROOMS: RoomEnder = _NoRooms()


@dataclass(frozen=True)
class Started:
    conversation_id: UUID
    resume_token: str
    grant: Grant


def new_room(conversation_id: UUID) -> str:
    return f"{ROOM_PREFIX}{conversation_id.hex}_{secrets.token_hex(4)}"


def conversation_of_room(room: str) -> UUID | None:
    if not room.startswith(ROOM_PREFIX):
        return None
    try:
        return UUID(hex=room[len(ROOM_PREFIX):].split("_", 1)[0])
    except ValueError:
        return None


def new_identity() -> str:
    return f"visitor_{secrets.token_urlsafe(12)}"


class ConversationService:
    """Commands on the Conversation aggregate, for visitors (by resume token) and LiveKit (by room)."""

    def __init__(self, store: EventStore, issuer: GrantIssuer, tokens: VisitorTokens | None = None,
                 rooms: RoomEnder | None = None, form_submissions: int = FORM_SUBMISSIONS) -> None:
        """`form_submissions`: how many times one form may be submitted in one conversation."""
        self.store = store
        self.issuer = issuer
        self.tokens = tokens or NO_TOKENS
        self.rooms = rooms or NO_ROOMS
        self.form_submissions = form_submissions

    def identify(self, widget: LiveWidget, visitor_token: str | None, context: Any) -> Identified:
        """Check a call's visitor token and page context against the widget (the 401s, or a 400 naming the key)."""
        return identify(self.tokens, widget.widget_id, widget.organization_id, widget.config, widget.identity_keys,
                        visitor_token, context)

    def start(self, widget: LiveWidget, origin: str, visitor: dict[str, Any], visitor_token: str | None = None,
              context: Any = None) -> Started:
        who = self.identify(widget, visitor_token, context)
        conversation_id = uuid.uuid4()
        resume_token = secrets.token_urlsafe(32)
        room, identity = new_room(conversation_id), new_identity()
        conversation = Conversation(
            id=conversation_id,
            organization_id=widget.organization_id,
            widget_id=UUID(widget.widget_id),
            agent_id=UUID(widget.agent_id),
            agent_version_id=UUID(widget.agent_version_id),
            channel=CHANNEL,
            room=room,
            participant_identity=identity,
            resume_token_hash=hash_resume_token(resume_token),
            visitor=who.recorded(visitor),
            origin=origin,
            visitor_ref=who.ref,
            context=who.stored_context,
        )
        ticket = self._ticket(conversation, who, visitor.get("name"))
        grants: list[Grant] = []
        # The token is signed while the event is on its way to the database (a store on PostgreSQL overlaps the two).
        self.store.save(conversation, meanwhile=lambda: grants.append(self.issuer.grant(ticket)))
        return Started(conversation_id, resume_token, grants[0])

    def resume(self, widget: LiveWidget, conversation_id: UUID, resume_token: str | None, visitor_token: str | None = None,
               context: Any = None) -> tuple[str, Grant]:
        """Continue in a fresh room: with the current resume token, or with the visitor token of the verified visitor
        who started it. Either way a new resume token comes back and every earlier one is retired (a retired token
        is then as unknown as a wrong one). The room the conversation leaves is ended before the grant is signed,
        best effort. (resume token, grant)"""
        who = self.identify(widget, visitor_token, context)
        new_token = secrets.token_urlsafe(32)
        tickets: list[RoomTicket] = []
        left: list[str] = []

        def command(conversation: Conversation) -> bool:
            # A room that finished is gone already; any other may still hold the visitor's old tab, or the agent.
            left[:] = [] if conversation.ended_by == ENDED_BY_ROOM else [conversation.room]
            conversation.resume(new_room(conversation.id), new_identity(), UUID(widget.agent_id), UUID(widget.agent_version_id),
                                hash_resume_token(new_token), who.stored_context)
            tickets[:] = [self._ticket(conversation, who, conversation.visitor.get("name"), resumed=True)]
            return True

        change(self.store, lambda: self._load(widget, conversation_id, resume_token, who), command, None)
        # After the save: the old room's `room_finished` then finds the conversation in its new room, and ends nothing.
        for room in left:
            self.rooms.end_room(room)
        return new_token, self.issuer.grant(tickets[-1])

    def submit_form(self, widget: LiveWidget, conversation_id: UUID, resume_token: str, form_id: str, values: Any) -> None:
        form = find_form(parse_config(widget.config), form_id)
        if form is None:
            raise NotFoundError("Form", form_id)
        cleaned = validate_form_values(form, values)
        change(self.store, lambda: self._load(widget, conversation_id, resume_token),
               lambda c: _did(c.submit_form(form_id, cleaned, self.form_submissions)), None)

    def give_feedback(self, widget: LiveWidget, conversation_id: UUID, resume_token: str, rating: Any, comment: Any) -> None:
        rating_value, comment_value = validate_feedback(parse_config(widget.config).v1.feedback, rating, comment)
        change(self.store, lambda: self._load(widget, conversation_id, resume_token),
               lambda c: _did(c.give_feedback(rating_value, comment_value)), None)

    def end(self, widget: LiveWidget, conversation_id: UUID, resume_token: str) -> None:
        change(self.store, lambda: self._load(widget, conversation_id, resume_token), lambda c: c.end(ENDED_BY_VISITOR), None)

    def room_finished(self, room: str) -> bool:
        """LiveKit says a room finished: the conversation in it ends (the visitor may resume it later), if the room is
        still the conversation's current one; a room it left at a resume is history."""
        conversation_id = conversation_of_room(room)
        if conversation_id is None:
            return False

        def load() -> Conversation:
            found = self._get(conversation_id)
            if found is None:
                raise NotFoundError("Conversation", conversation_id)
            return found

        try:
            conversation = load()
        except NotFoundError:
            return False
        if conversation.room != room:
            return False  # an older room of a conversation that has moved on
        change(self.store, load, lambda c: c.end(ENDED_BY_ROOM), None)
        return True

    def _get(self, conversation_id: UUID) -> Conversation | None:
        return get_conversation(self.store, conversation_id)

    def _load(self, widget: LiveWidget, conversation_id: UUID, resume_token: str | None, who: Identified = ANONYMOUS) -> Conversation:
        """The conversation, only for its own widget and with its resume token (or, from `resume`, the verified
        visitor who started it); anything else is not found. A verified visitor never gets another's conversation."""
        conversation = self._get(conversation_id)
        if (
            conversation is None
            or str(conversation.widget_id) != widget.widget_id
            or conversation.organization_id != widget.organization_id
        ):
            raise NotFoundError("Conversation", conversation_id)
        if who.verified is not None and conversation.visitor_ref is not None:
            if not conversation.belongs_to(who.refs):
                raise NotFoundError("Conversation", conversation_id)
            return conversation
        if resume_token is None or not conversation.holds_token(resume_token):
            raise NotFoundError("Conversation", conversation_id)
        return conversation

    @staticmethod
    def _ticket(conversation: Conversation, who: Identified, stored_name: str | None, resumed: bool = False) -> RoomTicket:
        return RoomTicket(
            conversation_id=str(conversation.id),
            organization_id=conversation.organization_id,
            widget_id=str(conversation.widget_id),
            agent_id=str(conversation.agent_id),
            agent_version_id=str(conversation.agent_version_id),
            room=conversation.room,
            identity=conversation.participant_identity,
            visitor_name=(who.verified.name if who.verified is not None else None) or stored_name,
            visitor=who.metadata,
            context=who.context,
            resumed=resumed,
        )


def get_conversation(store: EventStore, conversation_id: UUID) -> Conversation | None:
    """The conversation with this id; None if there is none (or the id is another aggregate's)."""
    try:
        found = store.repository.get(conversation_id)
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, Conversation) else None


def _did(_: object) -> bool:
    return True

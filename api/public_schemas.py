"""Bodies of the public embed API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from msgspec import Meta, Struct

Token = Annotated[str, Meta(min_length=1, max_length=200)]
VisitorToken = Annotated[str, Meta(min_length=1, max_length=4096, description="A JWT the site's backend signed (ES256 or EdDSA)")]
PageContext = Annotated[dict[str, Any], Meta(description="The page's own context (unverified), keys as the widget declares")]


class Visitor(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f-\x9f]*\Z")] | None = None
    locale: Annotated[str, Meta(max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")] | None = None


class ConversationStart(Struct, forbid_unknown_fields=True):
    visitor: Visitor | None = None
    visitor_token: VisitorToken | None = None
    context: PageContext | None = None


class Resume(Struct, forbid_unknown_fields=True):
    resume_token: Token


class ResumeRequest(Struct, forbid_unknown_fields=True):
    """The resume token, or the visitor token of the verified visitor who started the conversation, or both."""

    resume_token: Token | None = None
    visitor_token: VisitorToken | None = None
    context: PageContext | None = None


class FormSubmission(Struct, forbid_unknown_fields=True):
    resume_token: Token
    values: dict[str, Any]


class FeedbackSubmission(Struct, forbid_unknown_fields=True):
    resume_token: Token
    # Litestar converts bodies in msgspec's lax mode, which would turn "5" into 5; the domain checks the raw value.
    rating: Annotated[Any, Meta(description="An integer on the widget's feedback scale (thumbs 0-1, stars and scale_5 1-5)")]
    comment: Annotated[str, Meta(max_length=2000)] | None = None


class LiveKitGrant(Struct):
    url: str
    room: str
    token: str
    expires_at: datetime


class GrantOut(Struct):
    conversation_id: str
    resume_token: str
    channel: str
    livekit: LiveKitGrant


class VisitorConversationOut(Struct):
    conversation_id: str
    started_at: datetime
    ended: bool


class VisitorConversations(Struct):
    items: list[VisitorConversationOut]
    next_cursor: str | None


class Accepted(Struct):
    status: str = "accepted"

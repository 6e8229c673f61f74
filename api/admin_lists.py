"""Admin lists served from read models: widgets, and a widget's conversations."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Request
from litestar.params import QueryParameter
from msgspec import Struct

from api.deps import caller_from, services_from
from api.errors import ApiError, ProblemField
from api.openapi import CURSOR_PATTERN
from api.schemas import IdentityKeyOut, WidgetOut, WidgetPage, domains_out, reasons_out
from api.services import Services
from domain.errors import NotFoundError
from infrastructure.personal_data import Opener
from projections.conversation_list import ConversationRow
from projections.cursor import decode_cursor
from projections.widget_rows import WidgetRow


def row_out(row: WidgetRow, version_published: bool) -> WidgetOut:
    return WidgetOut(
        id=row.id, organization_id=row.organization_id, agent_id=row.agent_id, agent_version_id=row.agent_version_id,
        domains=row.domains, published=row.published, live=row.live, deleted=row.deleted, config=row.config,
        identity_keys=[IdentityKeyOut(k.kid, k.alg, k.added_at) for k in row.identity_keys],
        created_at=row.created_at, updated_at=row.updated_at, version=row.version, retention_days=row.retention_days,
        not_live_reasons=reasons_out(published=row.published, deleted=row.deleted, version_published=version_published),
        domains_explained=domains_out(row.domains),
    )


Cursor = Annotated[str | None, QueryParameter(
    name="cursor", required=False, max_length=200, schema_extra={"pattern": CURSOR_PATTERN},
    description="The `next_cursor` of the previous page, as it was answered (opaque)",
)]
CURSOR = re.compile(CURSOR_PATTERN)
Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=100)]


def check_cursor(cursor: str | None) -> None:
    if cursor is not None:
        try:
            if not CURSOR.match(cursor):
                raise ValueError(cursor)
            decode_cursor(cursor)
        except ValueError:
            raise ApiError(400, "invalid_request", "The request is not valid",
                           errors=[ProblemField("cursor", "is not a cursor this API returned")]) from None


def list_widgets(request: Request[Any, Any, Any], cursor: str | None, limit: int) -> WidgetPage:
    caller = caller_from(request)
    caller.require("widgets:read")
    check_cursor(cursor)
    view = services_from(request).read_models.list_view
    rows, next_cursor = view.page(caller.organization_id, limit, cursor)
    _, versions = view.load(set(), {r.agent_version_id for r in rows})  # the second gate, for the reasons
    return WidgetPage(items=[row_out(r, versions.get(r.agent_version_id, False)) for r in rows], next_cursor=next_cursor)


class SubmittedFormOut(Struct):
    form_id: str
    values: dict[str, Any]
    submitted_at: datetime


class FeedbackOut(Struct):
    rating: int
    comment: str | None
    given_at: datetime


class ConversationOut(Struct, kw_only=True):
    id: str
    widget_id: str
    agent_id: str
    agent_version_id: str
    channel: str
    started_at: datetime
    updated_at: datetime
    rooms: int
    ended: bool
    ended_by: str | None
    visitor: dict[str, Any]
    forms: list[SubmittedFormOut]
    feedback: FeedbackOut | None
    erased_at: datetime | None = None


class ConversationPage(Struct):
    items: list[ConversationOut]
    next_cursor: str | None


def list_conversations(request: Request[Any, Any, Any], widget_id: UUID, cursor: str | None, limit: int) -> ConversationPage:
    services, caller = services_from(request), caller_from(request)
    caller.require("widgets:read")
    if services.widgets.load(caller, widget_id).deleted:  # another organization's widget, or a deleted one: not found
        raise NotFoundError("Widget", widget_id)
    check_cursor(cursor)
    rows, next_cursor = services.read_models.conversation_view.page(caller.organization_id, str(widget_id), limit, cursor)
    return ConversationPage(items=conversations_out(services, rows), next_cursor=next_cursor)


def opener_for(services: Services, conversation_ids: list[str]) -> Opener:
    """Opens these conversations' sealed personal values, their keys read in one query (the admin edge)."""
    vault = services.store.personal_data
    return vault.opener([UUID(i) for i in conversation_ids]) if vault is not None else Opener({})


def conversations_out(services: Services, rows: list[ConversationRow]) -> list[ConversationOut]:
    opener = opener_for(services, [r.id for r in rows])
    # A verified visitor's row written before encryption existed kept no claim: those are read from the log.
    legacy_verified = verified_claims(services, [r.id for r in rows if r.verified and isinstance(r.visitor, dict)])
    items = []
    for r in rows:
        cid = UUID(r.id)
        visitor = legacy_verified.get(r.id) or {**(opener.open(cid, "visitor", r.visitor) or {}), "verified": r.verified}
        forms = [SubmittedFormOut(f.form_id, opener.open(cid, "values", f.values) or {}, f.submitted_at) for f in r.forms]
        feedback = (FeedbackOut(r.feedback.rating, opener.open(cid, "comment", r.feedback.comment), r.feedback.given_at)
                    if r.feedback else None)
        if r.erased_at is not None:
            visitor = {}  # the row's values are emptied already; an erased visitor is not even "verified: false"
        items.append(ConversationOut(
            id=r.id, widget_id=r.widget_id, agent_id=r.agent_id, agent_version_id=r.agent_version_id, channel=r.channel,
            started_at=r.started_at, updated_at=r.updated_at, rooms=r.rooms, ended=r.ended, ended_by=r.ended_by,
            visitor=visitor, forms=forms, feedback=feedback, erased_at=r.erased_at,
        ))
    return items


def verified_claims(services: Services, conversation_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Verified visitors as their conversations recorded them (claims included), read from the event store:
    the read model keeps no claim."""
    found: dict[str, dict[str, Any]] = {}
    for conversation_id in conversation_ids:
        conversation = services.store.repository.get(UUID(conversation_id))
        found[conversation_id] = {**(getattr(conversation, "visitor", None) or {}), "verified": True}
    return found


def verified_visitor_conversations(services: Services, organization_id: str, external_id: str, limit: int = 100_000) -> list[UUID]:
    """Every conversation of the organization that the verified visitor with this external id started (for erasure by
    visitor), newest first: found by the keyed hash of the id, so the read model holds no external id."""
    refs = services.conversations.tokens.refs(organization_id, external_id)
    found = services.read_models.conversation_view.of_visitor(organization_id, refs, None, limit)
    return [UUID(c.id) for c in found]

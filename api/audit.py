"""Auditors' API: a widget's history, and the organization's event feed."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from msgspec import Struct

from api.admin_lists import opener_for
from api.deps import caller_from, services_from
from api.errors import problem_responses
from api.openapi import BEARER
from application.agents import AUDIT
from domain.event_types import CONVERSATION
from domain.records import EventRecord
from projections.audit_feed import FeedEvent

MAX_POSITION = 2**63 - 1  # the stores' 64-bit integers: a larger number is bad input (400), not a server error
After = Annotated[int, QueryParameter(name="after", ge=0, le=MAX_POSITION, description="Return events after this version / position")]
Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=1000)]
# Every error is a problem document (api/errors.py).
READ_ERRORS = problem_responses(400, 401, 403, 503)


class HistoryEvent(Struct):
    widget_id: UUID
    version: int
    type: str
    occurred_at: datetime
    actor: str
    data: dict[str, Any]


class History(Struct):
    items: list[HistoryEvent]
    next_after: int | None


class Feed(Struct):
    items: list[FeedEvent]
    next_after: int


def history_item(record: EventRecord) -> HistoryEvent:
    return HistoryEvent(record.aggregate_id, record.version, record.type, record.occurred_at, record.actor, record.data)


def widget_history(request: Request[Any, Any, Any], widget_id: UUID, after: int, limit: int) -> History:
    records = services_from(request).history.widget_history(caller_from(request), widget_id, after, limit)
    items = [history_item(r) for r in records]
    return History(items=items, next_after=items[-1].version if len(items) == limit else None)


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    security = BEARER

    @get("/events", sync_to_thread=True, operation_id="list_audit_events", summary="The organization's event feed",
         description="Events of every widget, agent and conversation of the organization, in commit order, after the position "
                     "`after`; pass `next_after` back to continue (`audit:read`).",
         responses=READ_ERRORS)
    def events(self, request: Request[Any, Any, Any], after: After = 0, limit: Limit = 100) -> Feed:
        caller = caller_from(request)
        caller.require(AUDIT)
        services = services_from(request)
        items = services.read_models.audit_view.page(caller.organization_id, after, limit)
        opener = opener_for(services, sorted({i.aggregate_id for i in items if i.aggregate_type == CONVERSATION}))
        for item in items:
            if item.aggregate_type == CONVERSATION:
                item.data = opener.reveal(item.type, UUID(item.aggregate_id), item.data)
        return Feed(items=items, next_after=items[-1].position if items else after)

"""`GET /v1/widgets`: this organization's widgets, from the admin list read model."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.params import Parameter

from api.errors import ApiError, ProblemField
from api.schemas import WidgetOut, WidgetPage
from projections.widget_list import decode_cursor
from projections.widget_rows import WidgetRow


def row_out(row: WidgetRow) -> WidgetOut:
    return WidgetOut(
        id=row.id, organization_id=row.organization_id, agent_id=row.agent_id, agent_version_id=row.agent_version_id,
        domains=row.domains, published=row.published, live=row.live, deleted=row.deleted, config=row.config,
        created_at=row.created_at, updated_at=row.updated_at, version=row.version,
    )


Cursor = Annotated[str | None, Parameter(query="cursor", required=False, max_length=200)]
Limit = Annotated[int, Parameter(query="limit", ge=1, le=100)]


def list_widgets(request: Request[Any, Any, Any], cursor: str | None, limit: int) -> WidgetPage:
    caller = request.app.state.services.tokens.verify(request.headers.get("authorization"))
    caller.require("widgets:read")
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError:
            raise ApiError(400, "invalid_request", "The request is not valid",
                           errors=[ProblemField("cursor", "is not a cursor this API returned")]) from None
    rows, next_cursor = request.app.state.services.read_models.list_view.page(caller.organization_id, limit, cursor)
    return WidgetPage(items=[row_out(r) for r in rows], next_cursor=next_cursor)

"""Installations and per-day stats of a widget: the admin API, and the figures the CLI prints."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.params import FromPath, QueryParameter
from msgspec import Struct

from api.deps import caller_from, services_from
from api.errors import ApiError, ProblemField, problem_responses
from api.openapi import BEARER
from domain.forms import rating_scale
from infrastructure.installations import InstallationStore, day_of, days_between
from projections.widget_stats import WidgetStatsView

MAX_DAYS = 366
DEFAULT_DAYS = 30
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
READ_ERRORS = problem_responses(400, 401, 403, 404, 503)


class InstallationOut(Struct):
    origin: str
    allowed: bool
    loads: int
    first_seen_at: datetime
    last_seen_at: datetime


class InstallationList(Struct):
    items: list[InstallationOut]
    truncated: bool


class FeedbackStats(Struct):
    count: int
    average: float | None
    ratings: dict[str, int]


class StatsTotals(Struct):
    loads: int
    refused_loads: int
    conversations: int
    resumes: int
    forms_submitted: int
    feedback: FeedbackStats


class DayStats(StatsTotals, kw_only=True):
    date: str


class WidgetStats(Struct):
    days: list[DayStats]
    totals: StatsTotals


def moment(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def installations_of(store: InstallationStore, widget_id: str) -> InstallationList:
    items, truncated = store.installations(widget_id)
    return InstallationList(
        items=[InstallationOut(i.origin, i.allowed, i.loads, moment(i.first_seen), moment(i.last_seen)) for i in items],
        truncated=truncated,
    )


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request", "The request is not valid", f"`{field}` {message}.", errors=[ProblemField(field, message)])


def parse_day(field: str, raw: str) -> date:
    if not ISO_DAY.fullmatch(raw):
        raise _invalid(field, "must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise _invalid(field, "must be a date written YYYY-MM-DD") from None


def stats_range(first: str | None, last: str | None, today: date) -> tuple[date, date]:
    """The UTC days asked for, both included: by default the 30 days up to today (or up to `to`)."""
    end = parse_day("to", last) if last is not None else today
    start = parse_day("from", first) if first is not None else end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise _invalid("from", "must not be after `to`")
    if (end - start).days + 1 > MAX_DAYS:
        raise _invalid("to", f"must be at most {MAX_DAYS} days from `from`, both included")
    return start, end


def _feedback(ratings: dict[str, int], scale: range) -> FeedbackStats:
    shown = {str(r): 0 for r in scale}
    for key, count in ratings.items():
        shown[key] = shown.get(key, 0) + count
    count = sum(ratings.values())
    total = sum(int(key) * n for key, n in ratings.items())
    return FeedbackStats(count=count, average=round(total / count, 3) if count else None,
                         ratings=dict(sorted(shown.items(), key=lambda kv: int(kv[0]))))


def widget_stats(view: WidgetStatsView, store: InstallationStore, widget_id: str, start: date, end: date,
                 feedback_type: str) -> WidgetStats:
    scale = rating_scale(feedback_type)
    conversations = view.days(widget_id, start.isoformat(), end.isoformat())
    loads = store.daily_loads(widget_id, start, end)
    days, all_ratings = [], {}
    for day in days_between(start, end):
        row = conversations.get(day.isoformat())
        read, refused = loads.get(day, (0, 0))
        ratings = row.ratings if row else {}
        for key, n in ratings.items():
            all_ratings[key] = all_ratings.get(key, 0) + n
        days.append(DayStats(
            date=day.isoformat(), loads=read, refused_loads=refused, conversations=row.conversations if row else 0,
            resumes=row.resumes if row else 0, forms_submitted=row.forms_submitted if row else 0,
            feedback=_feedback(ratings, scale),
        ))
    totals = StatsTotals(
        loads=sum(d.loads for d in days), refused_loads=sum(d.refused_loads for d in days),
        conversations=sum(d.conversations for d in days), resumes=sum(d.resumes for d in days),
        forms_submitted=sum(d.forms_submitted for d in days), feedback=_feedback(all_ratings, scale),
    )
    return WidgetStats(days=days, totals=totals)


def feedback_type_of(config: dict[str, Any]) -> str:
    return str(config.get("v1", {}).get("feedback", {}).get("type", "thumbs"))


From = Annotated[str | None, QueryParameter(name="from", required=False, max_length=40,
                                           description="First UTC day, YYYY-MM-DD (default: 29 days before `to`)")]
To = Annotated[str | None, QueryParameter(name="to", required=False, max_length=40,
                                         description="Last UTC day, YYYY-MM-DD, included (default: today)")]


class WidgetStatsController(Controller):
    path = "/v1/widgets"
    tags = ["widgets"]
    security = BEARER

    @get("/{widget_id:uuid}/installations", sync_to_thread=True, operation_id="list_widget_installations",
         summary="The origins that asked for the widget, allowed or refused",
         description="Every origin whose pages asked for the widget's public config or started a conversation, most "
                     "recently seen first, with its config reads and first and last sight. At most 100 allowed and 100 "
                     "refused origins are kept, each bound on its own; `truncated` says some were left out. Counts lag "
                     "by at most 10 s. Needs `widgets:read`.",
         responses=READ_ERRORS)
    def list_installations(self, request: Request[Any, Any, Any], widget_id: FromPath[UUID]) -> InstallationList:
        services, caller = services_from(request), caller_from(request)
        caller.require("widgets:read")
        services.widgets.load(caller, widget_id)  # another organization's widget is not found
        return installations_of(services.installation_store, str(widget_id))

    @get("/{widget_id:uuid}/stats", sync_to_thread=True, operation_id="get_widget_stats",
         summary="The widget's figures per UTC day",
         description="Config reads (allowed and refused), conversations, resumes, submitted forms and feedback per UTC "
                     "day, every day of the range present, and their totals. `from` and `to` are both included, at "
                     "most 366 days apart. Conversation figures are exact (from the events); loads lag by at most "
                     "10 s. Needs `widgets:read`.",
         responses=READ_ERRORS)
    def get_stats(self, request: Request[Any, Any, Any], widget_id: FromPath[UUID], first: From = None,
                  last: To = None) -> WidgetStats:
        services, caller = services_from(request), caller_from(request)
        caller.require("widgets:read")
        widget = services.widgets.load(caller, widget_id)  # another organization's widget is not found
        start, end = stats_range(first, last, day_of(services.installations.clock()))
        return widget_stats(services.read_models.stats_view, services.installation_store, str(widget_id), start, end,
                            feedback_type_of(widget.config))

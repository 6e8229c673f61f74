"""Public embed API: what the loader on a customer's site talks to.

Every call reads the widget from the public read model (never the event
store), checks the request's Origin against its allowed domains, and answers
CORS for that one origin. The config read is the hot path: one cached lookup,
one set lookup per label of the origin's host, and pre-encoded bytes.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio
from litestar import Controller, Request, Response, get, post, route
from litestar.params import Body

from api.errors import ApiError, Problem
from api.public_schemas import (
    Accepted,
    ConversationStart,
    FeedbackSubmission,
    FormSubmission,
    GrantOut,
    LiveKitGrant,
    Resume,
)
from api.services import Services
from application.conversations import Grant, LiveWidget
from domain.origin import Origin, origin_from_referer, parse_origin
from infrastructure.metrics import CONVERSATIONS_STARTED, ORIGIN_REFUSALS
from projections.public_entry import CHANNEL, PublicEntry

PUBLIC_BODY_LIMIT = 8 * 1024
ALLOW_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"


def not_found() -> ApiError:
    return ApiError(404, "not_found", "Not found", "No live widget has this id.")


def cors_headers(origin: Origin | str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": str(origin), "Vary": "Origin"}


def request_origin(request: Request[Any, Any, Any], allow_referer: bool = False) -> Origin:
    header = request.headers.get("origin")
    if header is None and allow_referer:
        origin = origin_from_referer(request.headers.get("referer"))
    else:
        origin = parse_origin(header)
    if origin is None:
        raise ApiError(403, "origin_required", "Origin required",
                       "Public calls must come from a browser page whose Origin the widget allows.")
    return origin


def client_address(request: Request[Any, Any, Any]) -> str:
    client = request.scope.get("client")
    return client[0] if client else "unknown"


async def live_entry(services: Services, widget_id: str) -> PublicEntry:
    try:
        key = str(UUID(widget_id))
    except ValueError:
        raise not_found() from None
    entry = await services.reader.get(key)
    if entry is None or not entry.row.live:
        raise not_found()
    return entry


def conversation_id(cid: str) -> UUID:
    try:
        return UUID(cid)
    except ValueError:
        raise ApiError(404, "not_found", "Not found", "No such conversation.") from None


def check_origin(entry: PublicEntry, origin: Origin) -> None:
    if not entry.matcher.allows(origin):
        ORIGIN_REFUSALS.labels(entry.row.id, "origin_not_allowed").inc()
        raise ApiError(403, "origin_not_allowed", "Origin not allowed", f"This widget may not be used on {origin}.")


def live_widget(entry: PublicEntry) -> LiveWidget:
    row = entry.row
    return LiveWidget(row.id, row.organization_id, row.agent_id, row.agent_version_id, row.config)


def grant_out(conversation_id: str, resume_token: str, grant: Grant) -> GrantOut:
    livekit = LiveKitGrant(url=grant.url, room=grant.room, token=grant.token, expires_at=grant.expires_at)
    return GrantOut(conversation_id=conversation_id, resume_token=resume_token, channel=CHANNEL, livekit=livekit)


ERRORS = {403: Problem, 404: Problem, 413: Problem, 429: Problem, 503: Problem}


class PublicWidgetController(Controller):
    path = "/public/v1/widgets"
    tags = ["public"]
    request_max_body_size = PUBLIC_BODY_LIMIT

    @get("/{widget_id:str}", summary="A live widget's public config, for an allowed origin")
    async def get_widget(self, request: Request[Any, Any, Any], widget_id: str) -> Response[bytes]:
        services: Services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = request_origin(request, allow_referer=True)
        check_origin(entry, origin)
        await services.rate_limits.check_config_read(client_address(request))
        headers = {
            **cors_headers(origin),
            "ETag": entry.etag,
            "Cache-Control": f"public, max-age={services.settings.public_max_age}",
        }
        if request.headers.get("if-none-match") == entry.etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(entry.body, media_type="application/json", headers=headers)

    @route(
        ["/{widget_id:str}", "/{widget_id:str}/conversations", "/{widget_id:str}/conversations/{cid:str}/resume",
         "/{widget_id:str}/conversations/{cid:str}/feedback", "/{widget_id:str}/conversations/{cid:str}/end",
         "/{widget_id:str}/conversations/{cid:str}/forms/{form_id:str}"],
        http_method="OPTIONS",
        summary="CORS preflight, answered for the widget's allowed origins only",
        include_in_schema=False,
    )
    async def preflight(self, request: Request[Any, Any, Any], widget_id: str) -> Response[None]:
        services: Services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = request_origin(request)
        check_origin(entry, origin)
        headers = {
            **cors_headers(origin),
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
        return Response(None, status_code=204, headers=headers)

    @post("/{widget_id:str}/conversations", status_code=201, summary="Start a conversation: a grant for a fresh LiveKit room")
    async def start_conversation(
        self, request: Request[Any, Any, Any], widget_id: str,
        data: Annotated[ConversationStart | None, Body(title="ConversationStart")] = None,
    ) -> Response[GrantOut]:
        services: Services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = request_origin(request)
        check_origin(entry, origin)
        await services.rate_limits.check_conversation_start(client_address(request), entry.row.id)
        visitor = {}
        if data is not None and data.visitor is not None:
            visitor = {k: v for k, v in (("name", data.visitor.name), ("locale", data.visitor.locale)) if v is not None}
        started = await anyio.to_thread.run_sync(services.conversations.start, live_widget(entry), str(origin), visitor)
        CONVERSATIONS_STARTED.inc()
        body = grant_out(str(started.conversation_id), started.resume_token, started.grant)
        return Response(body, status_code=201, headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/resume", status_code=200, summary="Resume a conversation in a fresh room")
    async def resume(self, request: Request[Any, Any, Any], widget_id: str, cid: str, data: Resume) -> Response[GrantOut]:
        entry, origin, services = await self._checked(request, widget_id)
        conversation = conversation_id(cid)
        grant = await anyio.to_thread.run_sync(services.conversations.resume, live_widget(entry), conversation, data.resume_token)
        return Response(grant_out(str(conversation), data.resume_token, grant), headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/forms/{form_id:str}", status_code=202, summary="Submit a form's values")
    async def submit_form(
        self, request: Request[Any, Any, Any], widget_id: str, cid: str, form_id: str, data: FormSubmission
    ) -> Response[Accepted]:
        entry, origin, services = await self._checked(request, widget_id)
        await anyio.to_thread.run_sync(
            services.conversations.submit_form, live_widget(entry), conversation_id(cid), data.resume_token, form_id, data.values
        )
        return Response(Accepted(), status_code=202, headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/feedback", status_code=202, summary="Give feedback on a conversation")
    async def feedback(
        self, request: Request[Any, Any, Any], widget_id: str, cid: str, data: FeedbackSubmission
    ) -> Response[Accepted]:
        entry, origin, services = await self._checked(request, widget_id)
        await anyio.to_thread.run_sync(
            services.conversations.give_feedback, live_widget(entry), conversation_id(cid), data.resume_token, data.rating, data.comment
        )
        return Response(Accepted(), status_code=202, headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/end", status_code=202, summary="End a conversation")
    async def end(self, request: Request[Any, Any, Any], widget_id: str, cid: str, data: Resume) -> Response[Accepted]:
        entry, origin, services = await self._checked(request, widget_id)
        await anyio.to_thread.run_sync(services.conversations.end, live_widget(entry), conversation_id(cid), data.resume_token)
        return Response(Accepted(), status_code=202, headers=cors_headers(origin))

    async def _checked(self, request: Request[Any, Any, Any], widget_id: str) -> tuple[PublicEntry, Origin, Services]:
        services: Services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = request_origin(request)
        check_origin(entry, origin)
        return entry, origin, services


@post("/webhooks/livekit", status_code=200, tags=["webhooks"], summary="LiveKit's signed webhook; room_finished ends the conversation",
      request_max_body_size=PUBLIC_BODY_LIMIT * 8)
async def livekit_webhook(request: Request[Any, Any, Any]) -> dict[str, str]:
    services: Services = request.app.state.services
    body = await request.body()
    event, room = services.webhooks.verify(body, request.headers.get("authorization"))
    if event == "room_finished":
        await anyio.to_thread.run_sync(services.conversations.room_finished, room)
    return {"status": "ok"}

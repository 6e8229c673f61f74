"""Public embed API: what the loader on a customer's site talks to.

Every call reads the widget from the public read model (never the event
store), checks the request's Origin against its allowed domains, and answers
CORS for that one origin. The config read is the hot path: one cached lookup,
one set lookup per label of the origin's host, and pre-encoded bytes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import UUID

import anyio
from litestar import Controller, Request, Response, get, post, route
from litestar.datastructures import ResponseHeader
from litestar.handlers import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath, JSONBody
from litestar.response.base import ASGIResponse

from api.admin_lists import Cursor, Limit, check_cursor
from api.errors import ApiError, problem_responses
from api.public_schemas import (
    Accepted,
    ConversationStart,
    FeedbackSubmission,
    FormSubmission,
    GrantOut,
    LiveKitGrant,
    Resume,
    ResumeRequest,
    VisitorConversationOut,
    VisitorConversations,
)
from api.services import Services
from application.conversations import Grant, LiveWidget
from application.visitors import VisitorTokenRequiredError
from domain.identity import IdentityKey
from domain.origin import Origin, origin_from_referer, parse_origin
from infrastructure.metrics import CONVERSATIONS_STARTED, ORIGIN_REFUSALS
from infrastructure.proxies import TrustedProxies
from projections.public_entry import CHANNEL, PublicConfig, PublicEntry

PUBLIC_BODY_LIMIT = 8 * 1024
PUBLIC_CONFIG_HEADERS = [
    ResponseHeader(name="ETag", value='"1"', documentation_only=True, required=True, description="The config's version"),
    ResponseHeader(name="Cache-Control", value="public, max-age=60", documentation_only=True, required=True,
                   description="How long a browser may reuse the answer"),
]
CORS_ORIGIN = "cors_origin"  # scope state: the origin this request was allowed for
# Scope state: the config read's refusals (403, 404, 429, 503) are readable by any page (`Access-Control-Allow-Origin:
# *`, no credentials): the loader tells the site owner why the widget does not show. They hold no config.
READABLE_REFUSALS = "readable_refusals"
ALLOW_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"


def not_found() -> ApiError:
    return ApiError(404, "not_found", "Not found", "No live widget has this id.")


def not_live() -> ApiError:
    return ApiError(404, "widget_not_live", "Widget not live",
                    "This widget is not live: it, or the agent version it pins, is not published.")


def cors_headers(origin: Origin | str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": str(origin), "Vary": "Origin"}


def request_origin(request: Request[Any, Any, Any], allow_referer: bool = False) -> Origin:
    header = request.headers.get("origin")
    if header is None and allow_referer:
        origin = origin_from_referer(request.headers.get("referer"))
    else:
        origin = parse_origin(header)
    if origin is None:
        raise origin_required()
    return origin


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*` or a list of tags, compared weakly (a `W/` prefix is ignored)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


class BytesResponse(ASGIResponse):
    """A response whose headers are already bytes: the hot path skips Litestar's header handling."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:  # no super(): nothing to encode
        self._status, self._headers, self._body = status, headers, body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [*self._headers, (b"content-length", str(len(self._body)).encode())]
        if self._body:
            headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": self._status, "headers": headers})
        await send({"type": "http.response.body", "body": self._body, "more_body": False})


ORIGIN_CACHE_SIZE = 4096
_parsed_origins: dict[bytes, Origin | None] = {}


def raw_header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def hot_origin(headers: list[tuple[bytes, bytes]]) -> Origin:
    """The request's origin (Referer's origin only when no Origin was sent), parsed once per distinct value."""
    raw = next((v for k, v in headers if k == b"origin"), None)
    if raw is None:
        referer = raw_header(headers, b"referer")
        origin = origin_from_referer(referer)
    else:
        try:
            origin = _parsed_origins[raw]
        except KeyError:
            origin = parse_origin(raw.decode("latin-1"))
            if len(_parsed_origins) >= ORIGIN_CACHE_SIZE:
                _parsed_origins.clear()
            _parsed_origins[raw] = origin
    if origin is None:
        raise origin_required()
    return origin


def origin_required() -> ApiError:
    return ApiError(403, "origin_required", "Origin required",
                    "Public calls must come from a browser page whose Origin the widget allows.")


def client_address(request: Request[Any, Any, Any]) -> str:
    """The visitor's address, for rate limits: behind a trusted load balancer, the one it forwarded."""
    return client_address_of(request.scope, request.app.state.services.trusted_proxies)


def client_address_of(scope: Any, proxies: TrustedProxies) -> str:
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not proxies or not proxies.trusts(peer):
        return peer
    forwarded = raw_header(scope["headers"], b"x-forwarded-for")
    for hop in reversed([h.strip() for h in (forwarded or "").split(",") if h.strip()]):
        if not proxies.trusts(hop):
            return hop
    return peer


CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def live_entry(services: Services, widget_id: str) -> PublicEntry:
    key = widget_id
    if not CANONICAL_ID.fullmatch(widget_id):  # the loader always sends the canonical form
        try:
            key = str(UUID(widget_id))
        except ValueError:
            raise not_found() from None
    entry = await services.reader.get(key)
    if entry is None:
        raise not_found()
    if not entry.row.live:
        raise not_live()
    return entry


def conversation_id(cid: str) -> UUID:
    try:
        return UUID(cid)
    except ValueError:
        raise ApiError(404, "not_found", "Not found", "No such conversation.") from None


def check_origin(entry: PublicEntry, origin: Origin, request: Request[Any, Any, Any] | None = None) -> None:
    """Refuse an origin the widget does not allow; once allowed, even error answers carry CORS for it."""
    if not entry.matcher.allows(origin):
        ORIGIN_REFUSALS.labels(entry.row.id, "origin_not_allowed").inc()
        raise ApiError(403, "origin_not_allowed", "Origin not allowed", f"This widget may not be used on {origin}.")
    if request is not None:
        request.scope.setdefault("state", {})[CORS_ORIGIN] = str(origin)


def counted_check(services: Services, entry: PublicEntry, origin: Origin, request: Request[Any, Any, Any], load: bool) -> None:
    """`check_origin`, and a refused origin counted among the widget's installations."""
    try:
        check_origin(entry, origin, request)
    except ApiError:
        services.installations.record(entry.row.id, str(origin), False, load)
        raise


def live_widget(entry: PublicEntry) -> LiveWidget:
    row = entry.row
    keys = tuple(IdentityKey(k.kid, k.alg, k.jwk) for k in row.identity_keys)
    return LiveWidget(row.id, row.organization_id, row.agent_id, row.agent_version_id, row.config, keys)


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def grant_out(conversation_id: str, resume_token: str, grant: Grant) -> GrantOut:
    livekit = LiveKitGrant(url=grant.url, room=grant.room, token=grant.token, expires_at=grant.expires_at)
    return GrantOut(conversation_id=conversation_id, resume_token=resume_token, channel=CHANNEL, livekit=livekit)


# What the OpenAPI document declares besides the success: every error is a problem document (api/errors.py).
ERRORS = problem_responses(400, 401, 403, 404, 409, 410, 413, 429, 503)
VISITOR_ERRORS = {status: ERRORS[status] for status in (400, 403, 404, 409, 410, 413, 429, 503)}
IDENTIFIED_ERRORS = {status: ERRORS[status] for status in (400, 401, 403, 404, 413, 429, 503)}
RESUME_ERRORS = {status: ERRORS[status] for status in (400, 401, 403, 404, 409, 410, 413, 429, 503)}
WEBHOOK_ERRORS = {status: ERRORS[status] for status in (400, 401, 413, 503)}


class PublicWidgetController(Controller):
    path = "/public/v1/widgets"
    tags = ["public"]
    request_max_body_size = PUBLIC_BODY_LIMIT

    def get_route_handlers(self) -> list[BaseRouteHandler]:
        # Litestar registers a controller's handlers in name order and gives a path whose first handler
        # has no OPTIONS an automatic one, which then shadows `preflight` (it answered 204 with no CORS
        # check on `/{id}`, `/feedback` and `/end`). Registering `preflight` first keeps it in charge.
        handlers = super().get_route_handlers()
        handlers.sort(key=lambda handler: handler.handler_name != "preflight")
        return handlers

    @get(
        "/{widget_id:str}",
        operation_id="get_public_widget_config",
        summary="A live widget's public config",
        description="What the embed loader needs to render the widget, for a page whose `Origin` (or, with no `Origin`, "
                    "`Referer`) the widget allows: 403 otherwise, 404 for a widget that is not live. Cacheable: "
                    "`If-None-Match` with the `ETag` answers 304.",
        response_headers=PUBLIC_CONFIG_HEADERS,
        responses={
            200: ResponseSpec(PublicConfig, description="The widget's public config"),
            304: ResponseSpec(None, description="Not modified (If-None-Match names the current ETag)"),
            **{status: ERRORS[status] for status in (400, 403, 404, 429, 503)},
        },
    )
    async def get_widget(self, request: Request[Any, Any, Any], widget_id: FromPath[str]) -> ASGIResponse:
        # The hot path: every page view of every site. One cached lookup, one set lookup per label.
        request.scope.setdefault("state", {})[READABLE_REFUSALS] = True
        services: Services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = hot_origin(request.scope["headers"])
        counted_check(services, entry, origin, request, load=True)
        await services.rate_limits.check_config_read(client_address(request))
        services.installations.record(entry.row.id, str(origin), True)
        headers = [
            (b"access-control-allow-origin", str(origin).encode()),
            (b"vary", b"Origin"),
            (b"etag", entry.etag.encode()),
            (b"cache-control", services.public_cache_control),
        ]
        if etag_matches(raw_header(request.scope["headers"], b"if-none-match"), entry.etag):
            return BytesResponse(304, headers)
        return BytesResponse(200, headers, entry.body)

    @route(
        ["/{widget_id:str}", "/{widget_id:str}/conversations", "/{widget_id:str}/conversations/{cid:str}/resume",
         "/{widget_id:str}/conversations/{cid:str}/feedback", "/{widget_id:str}/conversations/{cid:str}/end",
         "/{widget_id:str}/conversations/{cid:str}/forms/{form_id:str}", "/{widget_id:str}/visitor/conversations"],
        http_method="OPTIONS",
        summary="CORS preflight, answered for the widget's allowed origins only",
        include_in_schema=False,
    )
    async def preflight(self, request: Request[Any, Any, Any], widget_id: FromPath[str]) -> Response[None]:
        _, origin, _ = await self._checked(request, widget_id)
        headers = {
            **cors_headers(origin),
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
        return Response(None, status_code=204, headers=headers)

    @post("/{widget_id:str}/conversations", status_code=201, operation_id="start_conversation", summary="Start a conversation",
          description="A grant for a fresh LiveKit room with the widget's agent dispatched into it, and the `resume_token` "
                      "the page keeps to resume, submit forms, give feedback and end. The body is optional. With "
                      "`config.v1.identity.mode` optional or required, a `visitor_token` the site signed makes the visitor "
                      "verified (401 `visitor_token_invalid` if it fails any check; required without one: 401 "
                      "`visitor_token_required`); `context` is checked against `config.v1.context` (400 naming the key).",
          responses=IDENTIFIED_ERRORS)
    async def start_conversation(
        self, request: Request[Any, Any, Any], widget_id: FromPath[str],
        data: Annotated[ConversationStart | None, Body(title="ConversationStart")] = None,
    ) -> Response[GrantOut]:
        services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = request_origin(request)
        counted_check(services, entry, origin, request, load=False)
        await services.rate_limits.check_conversation_start(client_address(request), entry.row.id)
        visitor = {}
        if data is not None and data.visitor is not None:
            visitor = {k: v for k, v in (("name", data.visitor.name), ("locale", data.visitor.locale)) if v is not None}
        token, context = (data.visitor_token, data.context) if data is not None else (None, None)
        started = await anyio.to_thread.run_sync(services.conversations.start, live_widget(entry), str(origin), visitor, token, context)
        CONVERSATIONS_STARTED.inc()
        services.installations.record(entry.row.id, str(origin), True, load=False)
        body = grant_out(str(started.conversation_id), started.resume_token, started.grant)
        return Response(body, status_code=201, headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/resume", status_code=200, operation_id="resume_conversation",
          summary="Resume a conversation",
          description="A grant for a fresh room in the same conversation, with its current `resume_token`, or with the visitor "
                      "token of the verified visitor who started it; 404 otherwise (a retired or unknown token, another "
                      "visitor's token). The answer carries a **new** `resume_token`: the one presented is retired. The room "
                      "the conversation leaves is ended. 409 `conversation_ended` once the visitor ended it, 410 "
                      "`conversation_erased` once its personal data is erased; 429 beyond `WIDGETS_RATE_RESUMES` resumes of one "
                      "conversation from one address.",
          responses=RESUME_ERRORS)
    async def resume(self, request: Request[Any, Any, Any], widget_id: FromPath[str], cid: FromPath[str],
                     data: JSONBody[ResumeRequest]) -> Response[GrantOut]:
        entry, origin, services = await self._checked(request, widget_id)
        conversation = conversation_id(cid)
        await services.rate_limits.check_resume(client_address(request), str(conversation))
        resume_token, grant = await anyio.to_thread.run_sync(
            services.conversations.resume, live_widget(entry), conversation, data.resume_token, data.visitor_token, data.context)
        return Response(grant_out(str(conversation), resume_token, grant), headers=cors_headers(origin))

    @get("/{widget_id:str}/visitor/conversations", operation_id="list_visitor_conversations",
         summary="A verified visitor's conversations on this widget, newest first",
         description="`Authorization: Bearer <visitor token>`, a token the site signed. Without one, or when the widget's "
                     "identity mode is off: 401 visitor_token_required; a token that fails any check: 401 visitor_token_invalid. "
                     "A page of `limit` (default 20, at most 100); `next_cursor` asks for the next one (null on the last).",
         responses=IDENTIFIED_ERRORS)
    async def visitor_conversations(self, request: Request[Any, Any, Any], widget_id: FromPath[str], cursor: Cursor = None,
                                    limit: Limit = 20) -> Response[VisitorConversations]:
        entry, origin, services = await self._checked(request, widget_id)
        await services.rate_limits.check_config_read(client_address(request))
        widget = live_widget(entry)
        token = bearer_token(request)
        if token is None:
            raise VisitorTokenRequiredError()
        who = await anyio.to_thread.run_sync(services.conversations.identify, widget, token, None)
        if who.verified is None:  # identity is off for this widget: tokens are ignored
            raise VisitorTokenRequiredError()
        check_cursor(cursor)
        found, next_cursor = await anyio.to_thread.run_sync(
            services.read_models.conversation_view.visitor_page, widget.organization_id, who.refs, widget.widget_id, limit, cursor)
        items = [VisitorConversationOut(c.id, c.started_at, c.ended) for c in found]
        return Response(VisitorConversations(items, next_cursor), headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/forms/{form_id:str}", status_code=202, operation_id="submit_conversation_form",
          summary="Submit a form",
          description="The values of one of the widget's forms (`config.v1.forms`), checked against its fields. One form may "
                      "be submitted `WIDGETS_FORM_SUBMISSIONS` times in one conversation, the latest submission counting; then, "
                      "and beyond `WIDGETS_RATE_SUBMISSIONS` from one address: 429 `submission_limit`. 410 "
                      "`conversation_erased` once the conversation's personal data is erased.",
          responses=VISITOR_ERRORS)
    async def submit_form(
        self, request: Request[Any, Any, Any], widget_id: FromPath[str], cid: FromPath[str], form_id: FromPath[str], data: JSONBody[FormSubmission]
    ) -> Response[Accepted]:
        entry, origin, services = await self._checked(request, widget_id)
        await services.rate_limits.check_submission(client_address(request), entry.row.id)
        await anyio.to_thread.run_sync(
            services.conversations.submit_form, live_widget(entry), conversation_id(cid), data.resume_token, form_id, data.values
        )
        return Response(Accepted(), status_code=202, headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/feedback", status_code=202, operation_id="give_conversation_feedback",
          summary="Give feedback",
          description="A rating on the widget's feedback scale, and an optional comment; feedback given again replaces it. "
                      "429 `submission_limit` beyond `WIDGETS_RATE_SUBMISSIONS` from one address; 410 `conversation_erased` "
                      "once the conversation's personal data is erased.",
          responses=VISITOR_ERRORS)
    async def feedback(
        self, request: Request[Any, Any, Any], widget_id: FromPath[str], cid: FromPath[str], data: JSONBody[FeedbackSubmission]
    ) -> Response[Accepted]:
        entry, origin, services = await self._checked(request, widget_id)
        await services.rate_limits.check_submission(client_address(request), entry.row.id)
        await anyio.to_thread.run_sync(
            services.conversations.give_feedback, live_widget(entry), conversation_id(cid), data.resume_token, data.rating, data.comment
        )
        return Response(Accepted(), status_code=202, headers=cors_headers(origin))

    @post("/{widget_id:str}/conversations/{cid:str}/end", status_code=202, operation_id="end_conversation", summary="End a conversation",
          description="The visitor ended it; later resumes are refused (409). 410 `conversation_erased` once its personal "
                      "data is erased.", responses=VISITOR_ERRORS)
    async def end(self, request: Request[Any, Any, Any], widget_id: FromPath[str], cid: FromPath[str], data: JSONBody[Resume]) -> Response[Accepted]:
        entry, origin, services = await self._checked(request, widget_id)
        await anyio.to_thread.run_sync(services.conversations.end, live_widget(entry), conversation_id(cid), data.resume_token)
        return Response(Accepted(), status_code=202, headers=cors_headers(origin))

    async def _checked(self, request: Request[Any, Any, Any], widget_id: str) -> tuple[PublicEntry, Origin, Services]:
        services: Services = request.app.state.services
        entry = await live_entry(services, widget_id)
        origin = request_origin(request)
        check_origin(entry, origin, request)
        return entry, origin, services


@post("/webhooks/livekit", status_code=200, tags=["webhooks"], operation_id="receive_livekit_webhook", summary="LiveKit's webhook",
      description="Signed by LiveKit with the API secret (401 otherwise); `room_finished` ends the room's conversation.",
      request_max_body_size=PUBLIC_BODY_LIMIT * 8, responses=WEBHOOK_ERRORS)
async def livekit_webhook(request: Request[Any, Any, Any]) -> dict[str, str]:
    services: Services = request.app.state.services
    body = await request.body()
    event, room = services.webhooks.verify(body, request.headers.get("authorization"))
    if event == "room_finished":
        await anyio.to_thread.run_sync(services.conversations.room_finished, room)
    return {"status": "ok"}

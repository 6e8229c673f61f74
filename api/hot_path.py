"""The public config read answered in front of Litestar: `GET`, `HEAD` and `OPTIONS /public/v1/widgets/{id}`.

Every page view of every site that embeds a widget asks for its public config,
so this one route is answered here, as plain ASGI, before Litestar's routing,
middleware and response machinery (which cost more than the answer itself).
It answers only when everything it needs is already in this process, with no
I/O and no await before the response:

- the widget's entry in the reader's in-process cache (`peek`), live;
- an `Origin` header (parsed once per distinct value) that the widget allows;
- for `GET` and `HEAD`, a rate-limit decision this process can take alone
  (`config_read_decided_here`: far from the limit, in the current window).

Anything else (a cache miss, a widget that is not live, no `Origin`, a refused
origin, a rate limit near or over its bound, Redis down, a non-canonical id,
any other path or method) goes to Litestar unchanged, where
`PublicWidgetController` answers as it always has; the front has then counted
nothing, so nothing is counted twice. What it answers is what that controller,
`MethodsFront` and `RequestContextMiddleware` answer for the same request, byte
for byte: status, headers in the same order, body, `X-Request-Id`, the
installation count, the rate-limit hit, the request metrics and the request
log line (`tests/api/test_hot_path.py` compares the two over a matrix of
requests).

The headers of each (widget entry, origin) are built once and kept in a
bounded table, checked against the entry they were built from, so a change of
the widget (a new entry object in the cache) rebuilds them.
"""

from __future__ import annotations

import random
import time
from typing import Any

import structlog

from api.middleware import HOT_ROUTE, INCOMING_ID, observe
from api.public import ALLOW_METHODS, PREFLIGHT_MAX_AGE, client_address_of, etag_matches
from domain.origin import Origin, parse_origin
from infrastructure.logging import request_id as request_id_var
from projections.public_entry import PublicEntry

ASGIApp = Any
PREFIX = "/public/v1/widgets/"
ID_LENGTH = 36  # the canonical form the loader sends; any other form goes to Litestar, which normalises it
TABLE_SIZE = 10_000  # (widget, origin) answers kept; a flood of forged origins clears it, nothing more
ORIGIN_CACHE_SIZE = 4096
JSON = b"application/json"
log = structlog.get_logger("access")  # the same logger, name and fields as RequestContextMiddleware's


class Answer:
    """What the front sends for one widget entry and one allowed origin: headers built once."""

    __slots__ = ("entry", "origin", "etag", "etag_bytes", "ok", "not_modified", "preflight", "allow")

    def __init__(self, entry: PublicEntry, origin: str, cache_control: bytes, allow: bytes) -> None:
        cors = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
        cached = [*cors, (b"etag", entry.etag.encode()), (b"cache-control", cache_control)]
        self.entry, self.origin, self.etag, self.etag_bytes = entry, origin, entry.etag, entry.etag.encode()
        # The order of api/public.py's BytesResponse: its headers, content-length, content-type (with a body).
        self.ok = [*cached, (b"content-length", str(len(entry.body)).encode()), (b"content-type", JSON)]
        self.not_modified = [*cached, (b"content-length", b"0")]
        # The order of Litestar's Response for `preflight` (X-Request-Id goes after it, then MethodsFront's Allow).
        self.preflight = [
            *cors,
            (b"access-control-allow-methods", ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", b"Content-Type, Authorization"),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
        ]
        self.allow = (b"allow", allow)


class PublicConfigFront:
    """Answers the public config read when it can (see the module); hands everything else to `handler`."""

    def __init__(self, app: Any, handler: ASGIApp) -> None:
        self.app, self.handler = app, handler
        self.enabled = True  # off: every request goes to Litestar (the tests compare both)
        self.answered = 0  # requests this front answered itself
        self._services: Any = None
        self._allow = b""
        self._answers: dict[tuple[str, bytes], Answer] = {}
        self._origins: dict[bytes, Origin | None] = {}

    def services(self) -> Any:
        if self._services is None:
            self._services = self.app.state.services
            allow = self.handler.allow_for(HOT_ROUTE) if hasattr(self.handler, "allow_for") else None
            self._allow = allow or b"GET, HEAD, OPTIONS"
        return self._services

    def origin(self, raw: bytes) -> Origin | None:
        try:
            return self._origins[raw]
        except KeyError:
            parsed = parse_origin(raw.decode("latin-1"))
            if len(self._origins) >= ORIGIN_CACHE_SIZE:
                self._origins.clear()
            self._origins[raw] = parsed
            return parsed

    def answer_for(self, services: Any, widget_id: str, entry: PublicEntry, raw_origin: bytes) -> Answer | None:
        """The prepared answer for an allowed origin; None for one that is refused or not an origin."""
        key = (widget_id, raw_origin)
        found = self._answers.get(key)
        if found is not None and found.entry is entry:
            return found
        origin = self.origin(raw_origin)
        if origin is None or not entry.matcher.allows(origin):
            return None  # Litestar refuses it (and counts the refusal)
        if len(self._answers) >= TABLE_SIZE:
            self._answers.clear()
        found = self._answers[key] = Answer(entry, str(origin), services.public_cache_control, self._allow)
        return found

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.enabled or scope["type"] != "http":
            await self.handler(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if len(path) != len(PREFIX) + ID_LENGTH or not path.startswith(PREFIX) or method not in ("GET", "HEAD", "OPTIONS"):
            await self.handler(scope, receive, send)
            return
        started = time.perf_counter()
        services = self._services or self.services()
        widget_id = path[len(PREFIX):]
        _, entry = services.reader.peek(widget_id)
        if entry is None or not entry.row.live:  # not cached here, or a 404 that Litestar words
            await self.handler(scope, receive, send)
            return
        raw_origin = if_none_match = incoming = None
        for name, value in scope["headers"]:
            if name == b"origin":
                if raw_origin is None:
                    raw_origin = value
            elif name == b"if-none-match":
                if if_none_match is None:
                    if_none_match = value
            elif name == b"x-request-id" and incoming is None:
                incoming = value
        answer = self.answer_for(services, widget_id, entry, raw_origin) if raw_origin is not None else None
        if answer is None:  # no Origin (a Referer may stand for it), or one that is refused: Litestar answers
            await self.handler(scope, receive, send)
            return
        preflight = method == "OPTIONS"
        if not preflight and not services.rate_limits.config_read_decided_here(client_address_of(scope, services.trusted_proxies)):
            await self.handler(scope, receive, send)  # near or over the limit: decided there, on the shared count
            return
        request_id = incoming.decode("latin-1") if incoming is not None else ""
        if not request_id or not INCOMING_ID.match(request_id):
            request_id = f"req_{random.getrandbits(64):016x}"
        if preflight:
            status, prepared, body = 204, answer.preflight, b""
        else:
            services.installations.record(widget_id, answer.origin, True)
            if if_none_match is not None and (if_none_match == answer.etag_bytes or
                                              etag_matches(if_none_match.decode("latin-1"), answer.etag)):
                status, prepared, body = 304, answer.not_modified, b""
            else:
                status, prepared, body = 200, answer.ok, (b"" if method == "HEAD" else entry.body)
        self.answered += 1
        headers = [*prepared, (b"x-request-id", request_id.encode())]
        if preflight:
            headers.append(answer.allow)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        elapsed = time.perf_counter() - started
        # As on Litestar's side, where MethodsFront has turned a HEAD into the GET it stands for.
        observe(HOT_ROUTE, "OPTIONS" if preflight else "GET", status, elapsed)
        if preflight:  # a served config read is counted, not logged (api/middleware.py); a preflight is logged
            token = request_id_var.set(request_id)
            try:
                log.info("request", method=method, path=path, status=status, duration_ms=round(elapsed * 1000, 2))
            finally:
                request_id_var.reset(token)

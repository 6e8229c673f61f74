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

Anything else (a request near or over the limits of api/request_limits.py, a
cache miss, a widget that is not live, no `Origin`, a refused origin, a rate
limit near or over its bound, Redis down, a non-canonical id, any other path
or method) goes to Litestar unchanged, where
`PublicWidgetController` answers as it always has; the front has then counted
nothing, so nothing is counted twice. What it answers is what that controller,
`MethodsFront` and `RequestContextMiddleware` answer for the same request, byte
for byte: status, headers in the same order, body, `X-Request-Id`, the
installation count, the rate-limit hit, the request metrics and the request
log line (`tests/api/test_hot_path.py` compares the two over a matrix of
requests). The request metrics of what it answers are kept in plain numbers
and added to Prometheus every second and before `/metrics` answers
(`flush_metrics`); a served read or preflight logs no line, on either side.

The headers of each (widget entry, origin) are built once and kept in a
bounded table, checked against the entry they were built from, so a change of
the widget (a new entry object in the cache) rebuilds them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from litestar import Litestar

from api.middleware import HOT_ROUTE, INCOMING_ID, request_metrics
from api.public import ALLOW_METHODS, PREFLIGHT_MAX_AGE, client_address_of, etag_matches
from api.request_limits import HEADERS_LIMIT, URI_LIMIT
from domain.origin import Origin, parse_origin
from infrastructure.metrics import RequestTally
from projections.public_entry import PublicEntry

ASGIApp = Any
PREFIX = "/public/v1/widgets/"
ID_LENGTH = 36  # the canonical form the loader sends; any other form goes to Litestar, which normalises it
TABLE_SIZE = 10_000  # (widget, origin) answers kept; a flood of forged origins clears it, nothing more
ORIGIN_CACHE_SIZE = 4096
JSON = b"application/json"


class Answer:
    """What the front sends for one widget entry and one allowed origin: headers and messages built once."""

    __slots__ = ("entry", "origin", "etag", "etag_bytes", "ok", "not_modified", "preflight", "allow", "body")

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
        self.body = {"type": "http.response.body", "body": entry.body, "more_body": False}


NO_BODY = {"type": "http.response.body", "body": b"", "more_body": False}
HOT_PATH_LENGTH = len(PREFIX) + ID_LENGTH
HOT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
QUERY_ROOM = URI_LIMIT - 3 * HOT_PATH_LENGTH  # a query this long is within the limit even beside a fully percent-encoded path


class PublicConfigFront:
    """Answers the public config read when it can (see the module); hands everything else to `fallback`.

    `fallback` is Litestar's own entry point for the app (routing, middleware, MethodsFront); `allow` gives
    the `Allow` value MethodsFront writes for a route template."""

    def __init__(self, app: Any, fallback: ASGIApp, allow: Callable[[str], bytes | None]) -> None:
        self.app, self.fallback, self._allow_for = app, fallback, allow
        self.enabled = True  # off: every request goes to Litestar (the tests compare both)
        self.answered = 0  # requests this front answered itself
        self._services: Any = None
        self._allow = b""
        self._answers: dict[tuple[str, bytes], Answer] = {}
        self._origins: dict[bytes, Origin | None] = {}
        self._tallies: dict[tuple[str, int], RequestTally] = {}  # flushed every second and before /metrics answers

    def services(self) -> Any:
        if self._services is None:
            self._services = self.app.state.services
            self._allow = self._allow_for(HOT_ROUTE) or b"GET, HEAD, OPTIONS"
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

    def tally(self, method: str, status: int) -> RequestTally:
        found = self._tallies.get((method, status))
        if found is None:
            found = self._tallies[(method, status)] = RequestTally(*request_metrics(HOT_ROUTE, method, status))
        return found

    def flush_metrics(self) -> None:
        """Add the requests answered here since the last call to the Prometheus metrics (on the event loop)."""
        for tally in self._tallies.values():
            tally.flush()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        method: str = scope.get("method", "")
        if (len(path) != HOT_PATH_LENGTH or method not in HOT_METHODS or not path.startswith(PREFIX) or not self.enabled
                or len(scope["query_string"]) > QUERY_ROOM):  # near the URI limit: decided exactly behind (api/request_limits.py)
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        services = self._services or self.services()
        widget_id = path[len(PREFIX):]
        entry = services.reader.peek(widget_id)[1]
        if entry is None or not entry.row.live:  # not cached here, or a 404 that Litestar words
            await self.fallback(scope, receive, send)
            return
        raw_origin = if_none_match = incoming = None
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"origin":
                if raw_origin is None:
                    raw_origin = value
            elif name == b"if-none-match":
                if if_none_match is None:
                    if_none_match = value
            elif name == b"x-request-id" and incoming is None:
                incoming = value
        if size > HEADERS_LIMIT:  # refused behind, by RequestLimits
            await self.fallback(scope, receive, send)
            return
        answer = self.answer_for(services, widget_id, entry, raw_origin) if raw_origin is not None else None
        if answer is None:  # no Origin (a Referer may stand for it), or one that is refused: Litestar answers
            await self.fallback(scope, receive, send)
            return
        preflight = method == "OPTIONS"
        if not preflight:
            proxies = services.trusted_proxies
            if proxies.networks:
                client = client_address_of(scope, proxies)
            else:
                peer = scope.get("client")
                client = peer[0] if peer else "unknown"
            if not services.rate_limits.config_read_decided_here(client):
                await self.fallback(scope, receive, send)  # near or over the limit: decided there, on the shared count
                return
        if incoming is not None and INCOMING_ID.match(incoming.decode("latin-1")):
            request_id = incoming
        else:
            request_id = b"req_%016x" % random.getrandbits(64)
        if preflight:
            status, headers, body = 204, [*answer.preflight, (b"x-request-id", request_id), answer.allow], NO_BODY
        else:
            services.installations.record_load(widget_id, answer.origin)
            if if_none_match is not None and (if_none_match == answer.etag_bytes or
                                              etag_matches(if_none_match.decode("latin-1"), answer.etag)):
                status, headers, body = 304, [*answer.not_modified, (b"x-request-id", request_id)], NO_BODY
            else:
                status, headers, body = 200, [*answer.ok, (b"x-request-id", request_id)], (NO_BODY if method == "HEAD" else answer.body)
        self.answered += 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(body)
        # As on Litestar's side, where MethodsFront has turned a HEAD into the GET it stands for. A served config
        # read and its preflight are counted, not logged (api/middleware.py).
        self.tally("OPTIONS" if preflight else "GET", status).observe(time.perf_counter() - started)


class WidgetsApp(Litestar):
    """The Litestar app with the public config read's front before its entry point (see the module)."""

    front: PublicConfigFront

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.front(scope, receive, send)

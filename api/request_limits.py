"""The request's own size limits, answered as problem documents before Litestar sees the request.

Granian (api/server.py) refuses only what is far too large, and with an empty
body: on HTTP/1.1 a request target of 65,535 bytes or more (414), more than
100 header fields or a request head over its 408 KiB read buffer (431), and
anything that is not HTTP (400), each closing the connection (docs/reliability.md
has the figures, tests/api/test_request_limits.py measures them). Everything
below those bounds reaches the app, where this layer applies the limits the
service promises, with a problem answer like every other refusal:

- 414 `uri_too_long`: the path and query (as sent, before percent-decoding)
  over `URI_LIMIT` bytes;
- 431 `request_header_fields_too_large`: the header names and values over
  `HEADERS_LIMIT` bytes in total.

Both carry `X-Request-Id` (the caller's own when well-formed, as every answer
does), are counted in the request metrics under the route `unmatched`, and are
logged without the path (it is what is too large, and may carry personal data).

On the public config read the front (api/hot_path.py) applies the same limits
inside the work it already does (the query's length beside the path's, the
header sizes summed in the loop that reads them) and leaves a request over them
to Litestar's side, where `RequestLimits` refuses it; no other request pays more
than one length check and one pass over its headers.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog

from api.errors import PROBLEM_JSON, Problem
from api.middleware import observe, request_id_of
from infrastructure.logging import request_id as request_id_var

ASGIApp = Any
URI_LIMIT = 8 * 1024  # bytes of path and query string
HEADERS_LIMIT = 32 * 1024  # bytes of header names and values, summed over every header
log = structlog.get_logger("access")


def _answer(status: int, code: str, title: str, detail: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = msgspec.json.encode(Problem(type=f"https://docs.anyreach.dev/errors/{code.replace('_', '-')}",
                                       title=title, status=status, code=code, detail=detail))
    return status, [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())], body


URI_TOO_LONG = _answer(414, "uri_too_long", "URI too long",
                       f"The request's path and query are over {URI_LIMIT} bytes.")
HEADERS_TOO_LARGE = _answer(431, "request_header_fields_too_large", "Request header fields too large",
                            f"The request's header names and values are over {HEADERS_LIMIT} bytes in total.")


def uri_length(scope: dict[str, Any]) -> int:
    """The request target's length as sent: the raw path (the decoded one where a server gives no raw one) and query."""
    raw = scope.get("raw_path")
    if not raw:
        raw = scope["path"].encode()
    elif b"?" in raw:  # a path never holds a `?`: this server (httpx's test transport) gave the query with it
        return len(raw)
    query = scope.get("query_string", b"")
    return len(raw) + len(query) + 1 if query else len(raw)


def headers_size(headers: list[tuple[bytes, bytes]]) -> int:
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
    return size


async def refuse(scope: dict[str, Any], send: Any, answer: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    started = time.perf_counter()
    status, headers, body = answer
    request_id = request_id_of(scope)
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"x-request-id", request_id.encode())]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body, "more_body": False})
    elapsed = time.perf_counter() - started
    observe("unmatched", scope["method"], status, elapsed)
    token = request_id_var.set(request_id)
    try:
        log.info("request", method=scope["method"], status=status, duration_ms=round(elapsed * 1000, 2),
                 uri_bytes=uri_length(scope), header_bytes=headers_size(scope["headers"]))
    finally:
        request_id_var.reset(token)


class RequestLimits:
    """Refuses a request over the URI or header limit (see the module); hands every other one to `app` unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if uri_length(scope) > URI_LIMIT:
                await refuse(scope, send, URI_TOO_LONG)
                return
            if headers_size(scope["headers"]) > HEADERS_LIMIT:
                await refuse(scope, send, HEADERS_TOO_LARGE)
                return
        await self.app(scope, receive, send)

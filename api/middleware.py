"""Request ids, access logs and request metrics, as plain ASGI so that the public hot path pays little."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import structlog

from application.store import saved_positions
from infrastructure.metrics import LATENCY, REQUESTS

log = structlog.get_logger("access")
INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContextMiddleware:
    """Gives each request an id (`X-Request-Id`, taken from the caller if well-formed) and logs one line."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = incoming if INCOMING_ID.match(incoming) else "req_" + secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        positions: list[int] = []
        saved_positions.set(positions)

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if positions:  # read-your-writes: GET /v1/read-models/wait?position=<this>
                    extra.append((b"x-event-position", str(max(positions)).encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route, scope["method"]).observe(elapsed)
            path = scope["path"]
            if path not in QUIET_PATHS:
                log.info(
                    "request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")

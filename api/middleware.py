"""Request ids, access logs and request metrics, as plain ASGI so that the public hot path pays little."""

from __future__ import annotations

import random  # request ids need to be unique, not secret (reseeded in every forked worker)
import re
import time
from typing import Any

import structlog

from application.store import saved_positions
from infrastructure.logging import request_id as request_id_var
from infrastructure.metrics import LATENCY, REQUESTS

log = structlog.get_logger("access")
INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Public config reads happen on every page view of every customer site: their successes (and their
# preflights') are counted in metrics and not logged; refusals and errors are logged as usual.
HOT_ROUTE = "/public/v1/widgets/{widget_id}"  # as Litestar writes scope["path_template"]
# Path parameters that are personal data (a verified visitor's external id): where a route has one, the log line
# names the route's template instead of the path.
PERSONAL_PATH_PARAMETERS = ("{external_id}",)
_requests: dict[tuple[str, str, int], Any] = {}
_latency: dict[tuple[str, str], Any] = {}


def request_metrics(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of one (route, method, status), labelled once."""
    counter = _requests.get((route, method, status))
    if counter is None:
        counter = _requests[(route, method, status)] = REQUESTS.labels(route, method, str(status))
    histogram = _latency.get((route, method))
    if histogram is None:
        histogram = _latency[(route, method)] = LATENCY.labels(route, method)
    return counter, histogram


def observe(route: str, method: str, status: int, elapsed: float) -> None:
    counter, histogram = request_metrics(route, method, status)
    counter.inc()
    histogram.observe(elapsed)


def request_id_of(scope: dict[str, Any]) -> str:
    """The request's id: the caller's `X-Request-Id` when well-formed, else a new one."""
    incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
    return incoming if incoming and INCOMING_ID.match(incoming) else f"req_{random.getrandbits(64):016x}"


def loggable_path(scope: dict[str, Any]) -> str:
    """The request's path, or its route template where the path carries personal data."""
    route = scope.get("path_template")
    if route and any(parameter in route for parameter in PERSONAL_PATH_PARAMETERS):
        return str(route)
    return str(scope["path"])


class RequestContextMiddleware:
    """Gives each request an id (`X-Request-Id`, taken from the caller if well-formed) and logs one line."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
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

        request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            observe(route, scope["method"], status, elapsed)
            path = scope["path"]
            # A served config read (or its CORS preflight) is counted in the metrics above; a log line per page
            # view would cost more than the answer. Refusals, misses and errors are logged as every request is.
            served_config = route == HOT_ROUTE and (status in (200, 304) and scope["method"] == "GET"
                                                    or status == 204 and scope["method"] == "OPTIONS")
            if not served_config and path not in QUIET_PATHS:
                log.info(
                    "request",
                    method=scope["method"],
                    path=loggable_path(scope),
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            request_id_var.set(None)

"""Health, readiness with projection lag, and read-your-writes waiting."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from api.deps import caller_from, services_from
from api.errors import ApiError, ProblemField, problem_responses
from api.openapi import BEARER
from api.services import Services
from infrastructure.metrics import CONTENT_TYPE_LATEST, PROJECTION_LAG, PROJECTION_POSITION, render
from projections.positions import reached


class ProjectionStatus(msgspec.Struct):
    position: int
    lag: int


class Readiness(msgspec.Struct):
    status: str
    event_store: bool
    read_model: bool
    projections: dict[str, ProjectionStatus]
    event_store_position: int | None = None


# Every error is a problem document (api/errors.py); a wait that times out is the documented 504.
WAIT_ERRORS = problem_responses(400, 401, 503, 504)


@get("/healthz", tags=["operations"], operation_id="get_health", summary="The process is up",
     description="200 while the process serves requests; says nothing about the stores (see `get_readiness`).")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _readiness(services: Services) -> Readiness:
    try:
        head = services.store.recorder.max_notification_id() or 0
        store_ok = True
    except Exception:
        head, store_ok = None, False
    try:
        found = services.read_models.positions()
        model_ok = True
    except Exception:
        found, model_ok = {}, False
    projections = {n: ProjectionStatus(position=p, lag=max(0, (head or p) - p)) for n, p in found.items()}
    ok = store_ok and model_ok
    return Readiness(status="ready" if ok else "unavailable", event_store=store_ok, read_model=model_ok,
                     projections=projections, event_store_position=head)


@get("/readyz", tags=["operations"], operation_id="get_readiness", summary="Readiness",
     description="Whether the event store and the read models are reachable, and each projection's position and lag; 503 when not.",
     responses={503: ResponseSpec(Readiness, description="A store is unreachable", generate_examples=False)})
async def readyz(request: Request[Any, Any, Any]) -> Response[Readiness]:
    services: Services = request.app.state.services
    with anyio.move_on_after(5):
        readiness = await anyio.to_thread.run_sync(_readiness, services)
        if services.reader is not None and not await services.reader.ping():
            readiness.read_model, readiness.status = False, "unavailable"
        return Response(readiness, status_code=200 if readiness.status == "ready" else 503)
    return Response(Readiness("unavailable", False, False, {}), status_code=503)


@get("/metrics", tags=["operations"], operation_id="get_metrics", summary="Prometheus metrics",
     description="Request counts and latencies, projection positions and lag, in the Prometheus text format. When "
                 "WIDGETS_METRICS_TOKEN is set, only with `Authorization: Bearer <that token>` (401 otherwise).",
     responses={200: ResponseSpec(str, media_type=CONTENT_TYPE_LATEST, description="Prometheus text format", generate_examples=False),
                **problem_responses(401)})
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    expected = request.app.state.services.settings.metrics_token
    if expected and not _bearer_matches(request.headers.get("authorization"), expected):
        raise ApiError(401, "invalid_token", "Not authenticated", "GET /metrics needs Authorization: Bearer "
                       "<WIDGETS_METRICS_TOKEN>.", headers={"WWW-Authenticate": "Bearer"})
    front = getattr(request.app, "front", None)
    if front is not None:  # the hot path's latest requests, on the loop that counts them (api/hot_path.py)
        front.flush_metrics()
    return await anyio.to_thread.run_sync(_metrics, request.app.state.services)


def _bearer_matches(authorization: str | None, token: str) -> bool:
    kind, _, given = (authorization or "").partition(" ")
    return kind.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _metrics(services: Services) -> Response[bytes]:
    try:
        head = services.store.recorder.max_notification_id() or 0
        for name, position in services.read_models.positions().items():
            PROJECTION_POSITION.labels(name).set(position)
            PROJECTION_LAG.labels(name).set(max(0, head - position))
    except Exception:  # a store is down: the request counters still report
        pass
    body, content_type = render()
    return Response(body, media_type=content_type)


class ReadModelController(Controller):
    path = "/v1/read-models"
    tags = ["operations"]

    @get("/wait", sync_to_thread=True, operation_id="wait_for_read_models", summary="Wait for the read models",
         description="Read-your-writes: answers 200 once every read model has reached `position` (a command's "
                     "`X-Event-Position`), 504 `read_model_behind` if they have not within `timeout` seconds, and 400 "
                     "`position_ahead` at once for a position beyond the event store's head.",
         responses=WAIT_ERRORS, security=BEARER)
    def wait(
        self,
        request: Request[Any, Any, Any],
        position: Annotated[int, QueryParameter(name="position", ge=0, description="From a command's X-Event-Position header")],
        timeout: Annotated[float, QueryParameter(name="timeout", gt=0, le=30)] = 5.0,
    ) -> dict[str, int]:
        caller_from(request)
        services = services_from(request)
        head = services.store.recorder.max_notification_id() or 0
        if position > head:  # nothing will ever reach it: the client's mistake, said at once rather than after the timeout
            raise ApiError(400, "position_ahead", "Position beyond the event store's head",
                           f"Position {position} is beyond the event store's head ({head}).",
                           errors=[ProblemField("position", f"must be at most the event store's head ({head})")])
        if not wait_for_position(services, position, timeout):
            raise ApiError(504, "read_model_behind", "Read models did not reach the position in time",
                           f"Waited {timeout}s for position {position}.")
        return {"position": position}


def wait_for_position(services: Services, position: int, timeout: float) -> bool:
    if services.read_models.runners:
        return services.read_models.wait(position, timeout)  # woken by the runners here, rather than looking
    return reached(services.read_models, position, timeout) >= position

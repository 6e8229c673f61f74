"""The one place where errors become RFC 9457 problem responses."""

from __future__ import annotations

import re
import sqlite3
from http import HTTPStatus
from typing import Any

import eventsourcing.persistence
import msgspec
import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.exceptions.http_exceptions import (
    MethodNotAllowedException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from psycopg_pool import PoolTimeout

from api.middleware import loggable_path
from application.errors import (
    ConflictError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    PreconditionFailedError,
)
from application.visitors import VisitorTokenInvalidError, VisitorTokenRequiredError
from domain.errors import DomainError, NotFoundError, ValidationError
from infrastructure.auth import InvalidTokenError
from infrastructure.livekit import WebhookRejectedError
from infrastructure.ratelimit import RateLimited

PROBLEM_JSON = "application/problem+json"
STORE_DOWN = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    sqlite3.OperationalError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)
RETRY_AFTER_SECONDS = "5"
log = structlog.get_logger("api")


class ProblemField(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem document with a stable machine `code`."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    errors: list[ProblemField] | None = None


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI description of a route's error answers: each a problem document."""
    return {
        status: ResponseSpec(Problem, media_type=PROBLEM_JSON, description=HTTPStatus(status).phrase, generate_examples=False)
        for status in statuses
    }


class ApiError(Exception):
    """An error raised at the HTTP edge with its status and code already decided."""

    def __init__(self, status: int, code: str, title: str, detail: str | None = None, headers: dict[str, str] | None = None,
                 errors: list[ProblemField] | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail, self.headers, self.errors = status, code, title, detail, headers, errors


def problem(status: int, code: str, title: str, detail: str | None = None, errors: list[ProblemField] | None = None,
            headers: dict[str, str] | None = None) -> Response[Problem]:
    body = Problem(
        type=f"https://docs.anyreach.dev/errors/{code.replace('_', '-')}",
        title=title, status=status, code=code, detail=detail, errors=errors or None,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# msgspec's messages about a body name the field: "Object missing required field `url`", "... - at `$.events[0]`".
_AT_PATH = re.compile(r" - at `\$((?:\.[^.`\[]+|\[\d+\])*)`$")
_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")


def _field_from_litestar(item: Any) -> ProblemField:
    if isinstance(item, dict):
        key = str(item.get("key") or item.get("source") or "body")
        message = str(item.get("message", "is not valid"))
        if key == "data":  # the request body: name the field in it, as every other 400 does
            key = _body_field(message) or key
        return ProblemField(field=key, message=message)
    return ProblemField(field="body", message=str(item))


def _body_field(message: str) -> str | None:
    at, named = _AT_PATH.search(message), _NAMED_FIELD.match(message)
    path = at.group(1).removeprefix(".") if at else ""
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path or None


def to_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    response = _to_problem(request, exc)
    state = request.scope.get("state", {})
    allowed_origin = state.get("cors_origin")
    if allowed_origin:  # a public call whose origin the widget allows: the page may read why it failed
        response.headers["Access-Control-Allow-Origin"] = allowed_origin
        response.headers["Vary"] = "Origin"
    elif state.get("readable_refusals"):  # the config read refused: any page may read why (api/public.py)
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _to_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    match exc:
        case ApiError():
            return problem(exc.status, exc.code, exc.title, exc.detail, exc.errors, exc.headers)
        case ValidationError():
            fields = [ProblemField(e.field, e.message) for e in exc.errors]
            return problem(400, "invalid_request", "The request is not valid", exc.detail, fields)
        case NotFoundError():
            return problem(404, "not_found", "Not found", str(exc))
        case DomainError():  # 409, or its own status: 410 `conversation_erased`, 429 `submission_limit`
            return problem(exc.status, exc.code, exc.title, exc.detail)
        case PreconditionFailedError():
            return problem(412, exc.code, "Precondition failed", str(exc))
        case ConflictError():
            return problem(409, exc.code, "A concurrent write won", str(exc) or None)
        case IdempotencyKeyReusedError():
            return problem(422, exc.code, "Idempotency-Key reused", str(exc))
        case InvalidTokenError():
            return problem(401, exc.code, "Not authenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})
        case VisitorTokenInvalidError() | VisitorTokenRequiredError():
            title = "Visitor token not valid" if isinstance(exc, VisitorTokenInvalidError) else "Visitor token required"
            return problem(401, exc.code, title, str(exc), headers={"WWW-Authenticate": "Bearer"})
        case ForbiddenError():
            return problem(403, exc.code, "Insufficient scope", str(exc))
        case RateLimited():
            title = "Submission limit reached" if exc.code == "submission_limit" else "Too many requests"
            return problem(429, exc.code, title, str(exc), headers={"Retry-After": str(exc.retry_after)})
        case WebhookRejectedError():
            return problem(401, exc.code, "Webhook signature not valid", str(exc))
        case _ if isinstance(exc, STORE_DOWN):
            log.warning("store_unavailable", error_type=type(exc).__name__, path=loggable_path(request.scope))
            return problem(503, "store_unavailable", "Service unavailable", "A store this request needs is unavailable; retry shortly.",
                           headers={"Retry-After": RETRY_AFTER_SECONDS})
        case UnicodeDecodeError():  # the JSON decoder met a body that is not UTF-8: bad input, not a server error
            return problem(400, "invalid_request", "The request is not valid", "The body is not valid UTF-8.")
        case RecursionError():  # the JSON decoder's depth limit: a body nested deeper than any real request
            return problem(400, "invalid_request", "The request is not valid", "The body is nested too deeply.")
        case ValidationException():
            extra = exc.extra if isinstance(exc.extra, list) else []
            fields = [_field_from_litestar(item) for item in extra] or None
            return problem(400, "invalid_request", "The request is not valid", _clean_detail(exc.detail), fields)
        case NotAuthorizedException():
            return problem(401, "invalid_token", "Not authenticated", exc.detail)
        case PermissionDeniedException():
            return problem(403, "forbidden", "Forbidden", exc.detail)
        case NotFoundException():
            return problem(404, "not_found", "Not found")
        case MethodNotAllowedException():
            return problem(405, "method_not_allowed", "Method not allowed", headers=exc.headers)
        case HTTPException() if exc.status_code == 413:
            return problem(413, "body_too_large", "Request body too large", exc.detail)
        case HTTPException() if exc.status_code == 400:  # e.g. malformed JSON: a stable title, the specifics in detail
            return problem(400, "invalid_request", "The request is not valid", _clean_detail(exc.detail), headers=exc.headers)
        case HTTPException() if exc.status_code < 500:
            code = {400: "invalid_request", 429: "rate_limited"}.get(exc.status_code, "client_error")
            return problem(exc.status_code, code, exc.detail or "Client error", headers=exc.headers)
    log.error("unhandled_error", error_type=type(exc).__name__, path=loggable_path(request.scope), exc_info=exc)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "Internal server error")


def _clean_detail(detail: str) -> str:
    # Litestar's own detail can echo a decoder message; keep it short and free of internals.
    return detail.split("\n")[0][:300] if detail else "The request is not valid."


exception_handlers: dict[type[Exception], Any] = {Exception: to_problem}

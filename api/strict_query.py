"""Query parameters read strictly: one given twice, or not of the type the OpenAPI document declares, is refused
(400 naming it), on every route at once.

Litestar keeps the last of two equal parameters and converts a value leniently
(msgspec's lax mode reads `null` as no value for an optional integer, `1.0` as
1 and `1e3` as 1000), so `GET /v1/widgets/{id}?version=null&version=null`
answered the current widget. A proxy, a cache or an audit log in front of us may read the first of
two, or read `null` otherwise; refusing the ambiguity means everyone reads the
same request (as api/strict_json.py does for a key given twice in a body).

The contract is the document `/schema/openapi.json` serves (api/openapi.py):
each operation's query parameters and their types, checked here after routing
and before the handler's own parsing. The constraints beyond the type (bounds,
patterns, lengths) stay Litestar's, which names the parameter as well. A
request without a query pays one test of `query_string`; the contract is read
once, at startup.

The public config read answered in front of Litestar (api/hot_path.py) declares
no query parameter, so the front has nothing to check there
(tests/api/test_query_parameters.py keeps it so).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

import msgspec
from litestar import Litestar, Request
from litestar.routes import HTTPRoute

from api.errors import ApiError, ProblemField, to_problem
from api.openapi import served_document

INTEGER = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # JSON's numbers (no NaN, no infinity)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class Expected:
    """What a value must be, said as the message names it (`must be <what>`), and the test of it."""

    what: str
    accepts: Callable[[str], bool]


@dataclass(frozen=True)
class Declared:
    """One query parameter an operation declares: its type (None: any text is one) and whether it may repeat."""

    name: str
    expected: Expected | None
    repeatable: bool


def _is_day(value: str) -> bool:
    if not DAY.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_date_time(value: str) -> bool:
    if not DATE_TIME.fullmatch(value):
        return False
    try:
        msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        return False
    return True


FORMATS = {
    "date": Expected("a date (YYYY-MM-DD)", _is_day),
    "date-time": Expected("an RFC 3339 date-time with an offset", _is_date_time),
    "uuid": Expected("a UUID", lambda value: UUID.fullmatch(value) is not None),
}
TYPES = {
    "integer": Expected("an integer", lambda value: INTEGER.fullmatch(value) is not None),
    "number": Expected("a number", lambda value: NUMBER.fullmatch(value) is not None),
    "boolean": Expected("true or false", lambda value: value in ("true", "false")),
}


def expected_of(schema: dict[str, Any], components: dict[str, Any]) -> Expected | None:
    """The type a query value must have to match `schema`; None when any text does (a plain string)."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return expected_of(components.get(ref.rsplit("/", 1)[-1], {}), components)
    for key in ("enum", "const"):
        if key in schema:
            members = schema[key] if key == "enum" else [schema[key]]
            texts = tuple(_text(member) for member in members if member is not None)
            return Expected("one of " + ", ".join(texts), texts.__contains__)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options is None and isinstance(schema.get("type"), list):
        options = [{**schema, "type": kind} for kind in schema["type"]]
    if options is not None:
        return _either([o for o in options if o.get("type") != "null"], components)  # a query value is never JSON null
    kind = schema.get("type")
    if kind == "string":
        return FORMATS.get(str(schema.get("format")))
    return TYPES.get(str(kind))


def _either(options: list[dict[str, Any]], components: dict[str, Any]) -> Expected | None:
    expected = [expected_of(option, components) for option in options]
    if not expected or any(e is None for e in expected):
        return None
    found = [e for e in expected if e is not None]
    if len(found) == 1:
        return found[0]
    return Expected(" or ".join(e.what for e in found), lambda value: any(e.accepts(value) for e in found))


def _text(member: Any) -> str:
    """An enum member as it is written in a query."""
    if isinstance(member, bool):
        return "true" if member else "false"
    return str(member)


def declared_of(parameter: dict[str, Any], components: dict[str, Any]) -> Declared:
    schema = parameter.get("schema", {})
    if schema.get("type") == "array":
        return Declared(parameter["name"], expected_of(schema.get("items", {}), components), repeatable=True)
    return Declared(parameter["name"], expected_of(schema, components), repeatable=False)


def query_contract(document: dict[str, Any]) -> dict[tuple[str, str], tuple[Declared, ...]]:
    """(path template, method) -> the query parameters the operation declares, for every operation that has one."""
    components = document.get("components", {}).get("schemas", {})
    contract: dict[tuple[str, str], tuple[Declared, ...]] = {}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            declared = tuple(declared_of(p, components) for p in parameters if p.get("in") == "query")
            if declared:
                contract[(path, method.upper())] = declared
    return contract


def problems(declared: tuple[Declared, ...], query: Any) -> list[ProblemField]:
    """What is wrong with the declared parameters of a query (a multi-dict), one entry per parameter."""
    found = []
    for parameter in declared:
        values = query.getall(parameter.name, [])
        if len(values) > 1 and not parameter.repeatable:
            found.append(ProblemField(parameter.name, "is given more than once"))
        elif parameter.expected is not None and not all(parameter.expected.accepts(v) for v in values):
            found.append(ProblemField(parameter.name, f"must be {parameter.expected.what}"))
    return found


class QueryContract:
    """One app's declared query parameters per operation, read from its document.

    Building the document takes a good part of a second, so it is built once per process for the same routes
    (every app of this code has the same document), by `load` at startup, off the event loop."""

    _built: ClassVar[dict[tuple[Any, ...], dict[tuple[str, str], tuple[Declared, ...]]]] = {}
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._operations: dict[tuple[str, str], tuple[Declared, ...]] | None = None

    def load(self, app: Litestar) -> None:
        key = tuple(sorted((route.path_format, tuple(sorted(route.methods)), tuple(h.handler_name for h in route.route_handlers))
                           for route in app.routes if isinstance(route, HTTPRoute)))
        with self._lock:
            operations = self._built.get(key)
            if operations is None:
                operations = self._built[key] = query_contract(served_document(app))
        self._operations = operations

    def declared(self, scope: dict[str, Any]) -> tuple[Declared, ...] | None:
        if self._operations is None:  # an app that was not started (startup loads it)
            self.load(scope["litestar_app"])
        assert self._operations is not None
        return self._operations.get((scope.get("path_template", ""), scope["method"]))


class StrictQueryMiddleware:
    """Refuses a request whose query breaks its operation's declared parameters (see the module).

    Litestar builds one per route; they share the app's `contract` (`DefineMiddleware(StrictQueryMiddleware,
    contract=QueryContract())`)."""

    def __init__(self, app: Any, contract: QueryContract) -> None:
        self.app, self.contract = app, contract

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["query_string"]:
            declared = self.contract.declared(scope)
            if declared:
                # Parsed as Litestar parses it, and kept in the scope for it: the handler reads what was checked.
                request: Request[Any, Any, Any] = Request(scope, receive)
                found = problems(declared, request.query_params)
                if found:
                    # Answered here, through the one error mapping and inside RequestContextMiddleware (its id, log
                    # line and metrics): raised, it would reach only the exception handler outside every middleware.
                    error = ApiError(400, "invalid_request", "The request is not valid",
                                     "A query parameter is given more than once, or is not of its declared type.", errors=found)
                    response = to_problem(request, error).to_asgi_response(None, request)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

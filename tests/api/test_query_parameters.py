"""Every query parameter the OpenAPI document declares is refused with a 400 naming it when it is given twice or
is not of its declared type, on every operation, including operations added later.

The cases are generated from `/schema/openapi.json`, not listed by hand: for each operation with query
parameters, each parameter is sent twice (with a value of its type, so that only the repetition is wrong), and
each typed parameter is sent with values that are not of its type (`null`, `1.0` for an integer, a 30th of
February for a date, ...). Ids in paths name nothing: the refusal comes before any lookup.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import ALLOWED, live_widget, widget_path

# The check runs after routing and before any store is read; it runs on the three wirings all the same.

METHODS = ("get", "put", "post", "delete", "patch")
UUID_TEXT = re.compile(r"^\^?\[0-9a-fA-F\]\{8\}-")  # a pattern that is the canonical UUID's
# Values not of each kind of type; `null` for every one (what schemathesis sent: ST201).
MISTYPED = {
    "integer": ["null", "1.0", "1e3", "x", "", "true"],
    "number": ["null", "NaN", "Infinity", "1,5", "x", ""],
    "boolean": ["null", "yes", "1", "TRUE", ""],
    "date": ["null", "2026-02-30", "2026-1-5", "2026-03-01T00:00:00Z", "yesterday", ""],
    "date-time": ["null", "2026-03-01", "2026-03-01T00:00:00", "2026-03-01T25:00:00Z", "yesterday", ""],
    "uuid": ["null", "x", uuid.UUID(int=1).hex, ""],
}


@pytest.fixture
def document(client: TestClient[Litestar]) -> dict[str, Any]:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf"):  # `X | None`: a query value is never JSON null
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if len(options) == 1:
            return resolved(document, {**{k: v for k, v in schema.items() if k != key}, **options[0]})
    return schema


def kind_of(document: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """The parameter's type as MISTYPED names it ("enum" for a closed set), or None for free text."""
    schema = resolved(document, schema)
    if "enum" in schema:
        return "enum"
    if schema.get("type") == "string":
        return schema.get("format") if schema.get("format") in MISTYPED else None
    return schema.get("type") if schema.get("type") in MISTYPED else None


def valid_value(document: dict[str, Any], schema: dict[str, Any]) -> str:
    """A value of the declared type, within its bounds."""
    schema = resolved(document, schema)
    if "enum" in schema:
        return str(schema["enum"][0]).lower() if isinstance(schema["enum"][0], bool) else str(schema["enum"][0])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else 1)
        value = min(max(int(low), 1), int(schema.get("maximum", 1)))
        return str(value)
    if kind == "boolean":
        return "true"
    fmt = schema.get("format")
    if fmt == "uuid" or UUID_TEXT.match(schema.get("pattern", "")):
        return str(uuid.uuid4())
    if fmt in ("date", "date-time"):
        return "2026-03-01" if fmt == "date" else "2026-03-01T00:00:00Z"
    pattern = schema.get("pattern")
    candidate = next((c for c in ("abc", "1", "a-b_c") if pattern is None or re.search(pattern, c)), None)
    assert candidate is not None, f"no value of {schema}: teach valid_value this schema"
    return candidate


def mistyped_values(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    kind = kind_of(document, schema)
    if kind == "enum":
        members = {str(m) for m in resolved(document, schema)["enum"]}
        return [v for v in ("null", "not-a-member", "") if v not in members]
    return MISTYPED[kind] if kind else []


def query_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation and any(p["in"] == "query" for p in operation.get("parameters", [])):
                yield method.upper(), path, operation


def concrete_path(document: dict[str, Any], path: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", valid_value(document, parameter["schema"]))
    return path


def cases(document: dict[str, Any]) -> Iterator[tuple[str, str, str, list[tuple[str, str]], str]]:
    """(method, path, parameter, query, what is wrong) for every query parameter of every operation."""
    for method, template, operation in query_operations(document):
        path = concrete_path(document, template, operation)
        query = [p for p in operation["parameters"] if p["in"] == "query"]
        for parameter in query:
            name = parameter["name"]
            # The operation's other required parameters, valid, so that this one is the only thing wrong.
            others = [(p["name"], valid_value(document, p["schema"])) for p in query if p.get("required") and p["name"] != name]
            value = valid_value(document, parameter["schema"])
            yield method, path, name, [*others, (name, value), (name, value)], "given twice"
            for wrong in mistyped_values(document, parameter["schema"]):
                yield method, path, name, [*others, (name, wrong)], f"{wrong!r}, not of type {kind_of(document, parameter['schema'])}"


def test_each_query_parameter_given_twice_or_not_of_its_type_is_a_400_naming_it(
    client: TestClient[Litestar], settings: Settings, document: dict[str, Any], org_a: Admin
) -> None:
    headers = {**org_a.headers, "Origin": ALLOWED}
    wrong = []
    tried = 0
    for method, path, name, query, what in cases(document):
        tried += 1
        response = client.request(method, path, params=query, headers=headers)
        try:
            body = assert_problem(response, 400, "invalid_request")
            assert [e["field"] for e in body["errors"]] == [name]
            assert isinstance(body["errors"][0]["message"], str) and body["errors"][0]["message"]
            assert response.headers["x-request-id"]
        except AssertionError:
            wrong.append(f"{method} {path} {name} ({what}): {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    # Not vacuous: the document has typed query parameters of these kinds, and each was tried.
    kinds = {kind_of(document, p["schema"]) for _, _, op in query_operations(document) for p in op["parameters"] if p["in"] == "query"}
    assert {"integer", "number", "date-time"} <= kinds, kinds
    assert tried > 50, tried


def test_a_version_given_twice_as_null_is_refused_not_read_as_the_current_widget(org_a: Admin, app: Litestar) -> None:
    widget = org_a.widget()
    for query in ("version=null&version=null", "version=1&version=1", "version=null", "version=1.0"):
        body = assert_problem(org_a.call("GET", f"/v1/widgets/{widget['id']}?{query}"), 400, "invalid_request")
        assert [e["field"] for e in body["errors"]] == ["version"], query
    assert org_a.call("GET", f"/v1/widgets/{widget['id']}?version=1").status_code == 200


def test_the_public_config_read_answered_in_front_of_litestar_declares_no_query_parameter(
    document: dict[str, Any], org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    """api/hot_path.py answers it without reading the query: were a parameter declared there, the front would
    have to refuse it the same way."""
    operation = document["paths"]["/public/v1/widgets/{widget_id}"]["get"]
    assert [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"] == []
    widget = live_widget(org_a, app)
    plain = client.get(widget_path(widget["id"]), headers={"Origin": ALLOWED})
    with_query = client.get(widget_path(widget["id"]) + "?v=1&v=2", headers={"Origin": ALLOWED})
    assert (plain.status_code, plain.content) == (with_query.status_code, with_query.content) == (200, plain.content)

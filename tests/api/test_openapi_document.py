"""The OpenAPI document says what the server does, for every route, including routes added later.

Each test walks ALL operations of `/schema/openapi.json` (and all of the app's
route handlers), so a new route fails here until it has a hand-given snake_case
operation id, tags, a summary and a description, closed request bodies, and
its error answers declared as problem documents (see HELPERS.md's conventions
and api/admin.py for the helpers).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from api.app import create_app
from api.openapi import UUID_PATTERN
from api.openapi_examples import SCHEMA_EXAMPLES
from infrastructure.settings import Settings

OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")  # verb_noun: create_widget, erase_conversation_personal_data
PROBLEM_REF = "#/components/schemas/Problem"
BEFORE_ROUTING = {"414": "uri_too_long", "431": "request_header_fields_too_large"}  # status -> code, on every operation
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# The main bodies a client reads or writes: each must come with an example.
SKIPPED_WIRINGS = {
    "embedded": "the document is the routes' declarations, the same on every wiring: read once, from an embedded app",
    "production": "the document is the routes' declarations, the same on every wiring; the answers that must match it "
                  "are fuzzed on each wiring (test_schemathesis.py, tests/reliability/test_contract_fuzz.py)",
    "managed": "the document is the routes' declarations, the same on every wiring; the answers that must match it "
               "are fuzzed on each wiring (test_schemathesis.py, tests/reliability/test_contract_fuzz.py)",
}
MAIN_BODIES = ("AgentCreate", "AgentOut", "VersionOut", "WidgetCreate", "WidgetOut", "WidgetPage", "PublicConfig",
               "ConversationStart", "GrantOut", "Problem")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    return create_app(Settings(data_dir=str(tmp_path_factory.mktemp("openapi") / "var"), log_level="warning"))


@pytest.fixture(scope="module")
def document(app: Litestar) -> dict[str, Any]:
    with TestClient(app) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def objects_in(document: dict[str, Any], schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema reachable from `schema` (through refs, unions, items and properties), with where it is."""
    seen: set[int] = set()
    stack = [(where, schema)]
    while stack:
        where, node = stack.pop()
        ref = node.get("$ref")
        node = resolve(document, node)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if ref:
            where = f"{where} ({ref.rsplit('/', 1)[-1]})"
        if node.get("type") == "object" or "properties" in node:
            yield where, node
        for key in ("oneOf", "anyOf", "allOf"):
            stack.extend((f"{where}.{key}[{i}]", option) for i, option in enumerate(node.get(key, [])))
        if isinstance(node.get("items"), dict):
            stack.append((f"{where}[]", node["items"]))
        for name, child in node.get("properties", {}).items():
            stack.append((f"{where}.{name}", child))
        if isinstance(node.get("additionalProperties"), dict):
            stack.append((f"{where}.*", node["additionalProperties"]))


def test_the_document_covers_every_route(app: Litestar, document: dict[str, Any]) -> None:
    documented = {(path, method.upper()) for path, method, _ in operations(document)}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method in ("OPTIONS", "HEAD") or not handler.resolve_include_in_schema():
                continue
            assert (route.path_format, method) in documented, f"{method} {route.path_format} is not in the document"


def test_every_operation_id_is_hand_given_snake_case_and_unique(app: Litestar, document: dict[str, Any]) -> None:
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method in ("OPTIONS", "HEAD") or not handler.resolve_include_in_schema():
                continue
            # Litestar derives one from the path (`V1WidgetsWidgetIdPublishPublish`) unless the decorator names it.
            assert isinstance(handler.operation_id, str), (
                f"{method} {route.path_format}: give the route decorator operation_id='verb_noun'")
    ids = [operation.get("operationId", "") for _, _, operation in operations(document)]
    for (path, method, _), operation_id in zip(operations(document), ids, strict=True):
        assert OPERATION_ID.fullmatch(operation_id), f"{method.upper()} {path}: operation id {operation_id!r} is not snake_case verb_noun"
    duplicated = [i for i, count in Counter(ids).items() if count > 1]
    assert not duplicated, f"operation ids used twice: {duplicated}"


def test_every_operation_has_tags_a_summary_and_a_description(document: dict[str, Any]) -> None:
    declared_tags = {tag["name"] for tag in document.get("tags", [])}
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert operation.get("tags"), f"{where} has no tags"
        assert set(operation["tags"]) <= declared_tags, f"{where}: tags {operation['tags']} are not described in the document"
        assert operation.get("summary", "").strip(), f"{where} has no summary"
        assert len(operation.get("description", "").strip()) >= 20, f"{where} has no description"


def test_request_bodies_are_closed_objects(document: dict[str, Any]) -> None:
    """The server refuses unknown fields (forbid_unknown_fields), so every object with properties says additionalProperties: false."""
    for path, method, operation in operations(document):
        body = operation.get("requestBody")
        if body is None:
            continue
        for media_type, content in body["content"].items():
            assert media_type == "application/json", f"{method.upper()} {path} takes {media_type}"
            for where, node in objects_in(document, content["schema"], f"{method.upper()} {path} body"):
                if "properties" in node:
                    assert node.get("additionalProperties") is False, f"{where} is an open object: add forbid_unknown_fields=True"


def _has_id_in_body(document: dict[str, Any], operation: dict[str, Any]) -> bool:
    body = operation.get("requestBody")
    if body is None:
        return False
    schema = resolve(document, body["content"]["application/json"]["schema"])
    options = [resolve(document, o) for o in schema.get("oneOf", schema.get("anyOf", [schema]))]
    return any(name.endswith("_id") for option in options for name in option.get("properties", {}))


def test_admin_commands_declare_their_400_401_403_and_404(document: dict[str, Any]) -> None:
    """Every admin command can be refused as bad input, unauthenticated or out of scope; one that names a resource,
    in its path or its body, can also find it missing (another organization's ids are 404 too)."""
    for path, method, operation in operations(document):
        if not path.startswith("/v1/"):
            continue
        where = f"{method.upper()} {path}"
        statuses = set(operation["responses"])
        assert operation.get("security") == [{"bearer": []}], f"{where} does not declare the bearer token"
        assert {"400", "401"} <= statuses, f"{where} does not declare 400 and 401"
        if method == "get":
            continue
        assert {"400", "401", "403"} <= statuses, f"{where} does not declare 400, 401 and 403"
        if "{" in path or _has_id_in_body(document, operation):
            assert "404" in statuses, f"{where} names a resource but does not declare 404"


def test_every_operation_with_a_path_parameter_declares_404(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        if "{" in path:
            assert "404" in operation["responses"], f"{method.upper()} {path} does not declare 404"


def test_every_error_answer_is_a_problem_document(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path == "/readyz" and status == "503"):  # readiness says what is down in its own body
                continue
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], f"{method.upper()} {path} {status}: {list(content)}"
            assert content["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}, f"{method.upper()} {path} {status}"
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"] is True, f"{method.upper()} {path} {status}: Retry-After"


def test_every_operation_declares_the_request_limits(document: dict[str, Any]) -> None:
    """Any request can be too long or carry too many header bytes (api/request_limits.py): every operation says so."""
    for path, method, operation in operations(document):
        for status, code in BEFORE_ROUTING.items():
            response = operation["responses"].get(status)
            assert response is not None, f"{method.upper()} {path} does not declare {status}"
            assert response["content"]["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}, f"{method.upper()} {path} {status}"
            assert f"`{code}`" in response["description"], f"{method.upper()} {path} {status}: {response['description']}"
            assert list(response["headers"]) == ["X-Request-Id"], f"{method.upper()} {path} {status}"


def test_headers_ids_and_cursors_have_patterns(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            name, schema = parameter["name"], parameter["schema"]
            where = f"{method.upper()} {path} {parameter['in']} {name}"
            if name in ("If-Match", "Idempotency-Key", "cursor"):
                assert schema.get("pattern") and schema.get("maxLength"), f"{where} has no pattern and length"
                re.compile(schema["pattern"])
            if parameter["in"] == "path" and name == "external_id":  # the site's own id for its visitor, not one of ours
                assert schema.get("maxLength") and schema.get("minLength"), f"{where} has no length"
            elif parameter["in"] == "path" and name == "message_id":  # a delivery's webhook-id
                assert schema.get("pattern") == "^msg_[0-9a-f]{32}$" and schema.get("maxLength") == 36, where
            elif parameter["in"] == "path" and name.endswith("_id") and not path.startswith("/public/"):
                assert schema.get("format") == "uuid", f"{where} is not a UUID"
            elif parameter["in"] == "path" and name in ("widget_id", "cid"):  # public ids: the canonical form the loader sends
                assert schema.get("pattern") == UUID_PATTERN, f"{where} has no UUID pattern"
            assert "null" not in json.dumps(schema).replace('"nullable"', ""), f"{where} admits null, which no URL or header can carry"


def test_patterns_are_json_schema_patterns(document: dict[str, Any]) -> None:
    """Python's `\\Z` means a literal `Z` (or nothing valid) to JSON Schema's ECMA-262 patterns; `$` is what it means there."""
    stack: list[Any] = [document]
    seen = 0
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                seen += 1
                assert not node["pattern"].endswith("\\Z"), node["pattern"]
                re.compile(node["pattern"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert seen > 20


def test_main_bodies_have_examples_that_their_schemas_accept(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in MAIN_BODIES:
        assert schemas[name].get("examples"), f"{name} has no example"
    for name in SCHEMA_EXAMPLES:
        validator = jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": document["components"]})
        for example in schemas[name]["examples"]:
            errors = [error.message for error in validator.iter_errors(example)]
            assert not errors, f"the example of {name} does not match its schema: {errors}"


def test_response_headers_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for operation_id in ("create_widget", "get_widget", "publish_widget", "replace_widget_config"):
        operation = next(op for _, _, op in operations(document) if op["operationId"] == operation_id)
        success = next(response for status, response in operation["responses"].items() if status.startswith("2"))
        assert success["headers"]["ETag"]["required"] is True, operation_id
        if operation_id != "get_widget":
            assert "X-Event-Position" in success["headers"], operation_id
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in response.get("headers", {}), f"{method.upper()} {path} {status}"
            if path.startswith("/public/v1/") and status not in BEFORE_ROUTING:  # refused before the origin is looked at
                assert "Access-Control-Allow-Origin" in response["headers"], f"{method.upper()} {path} {status}"
    for status in ("200", "304"):  # the public config read is cacheable: what to revalidate with, and for how long
        headers = paths["/public/v1/widgets/{widget_id}"]["get"]["responses"][status]["headers"]
        assert headers["ETag"]["required"] and headers["Cache-Control"]["required"], status
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"], f"{method.upper()} {path} {status}"
    embed = paths["/embed.js"]["get"]["responses"]["200"]["content"]
    assert list(embed) == ["text/javascript; charset=utf-8"]

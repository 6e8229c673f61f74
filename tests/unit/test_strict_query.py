"""The query contract read from an OpenAPI document: the kinds of type our document does not use yet (booleans,
UUIDs, enums behind a `$ref`, nullable unions, repeatable arrays) are checked as the ones it does."""

from __future__ import annotations

from multidict import MultiDict

from api.strict_query import problems, query_contract

DOCUMENT = {
    "paths": {
        "/things/{thing_id}": {
            "parameters": [{"name": "verbose", "in": "query", "schema": {"type": "boolean"}}],
            "get": {
                "parameters": [
                    {"name": "thing_id", "in": "path", "schema": {"type": "string"}},
                    {"name": "owner", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                    {"name": "colour", "in": "query", "schema": {"$ref": "#/components/schemas/Colour"}},
                    {"name": "since", "in": "query", "schema": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
                    {"name": "size", "in": "query", "schema": {"type": ["integer", "string"]}},
                    {"name": "tag", "in": "query", "schema": {"type": "array", "items": {"type": "integer"}}},
                    {"name": "note", "in": "query", "schema": {"type": "string", "maxLength": 3}},
                ],
                "responses": {},
            },
        },
    },
    "components": {"schemas": {"Colour": {"type": "string", "enum": ["red", "blue"]}}},
}


def fields(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    declared = query_contract(DOCUMENT)[("/things/{thing_id}", "GET")]
    return [(p.field, p.message) for p in problems(declared, MultiDict(query))]


def test_values_of_their_declared_types_pass() -> None:
    good = [("verbose", "true"), ("owner", "3f2c1a9e-0b5d-4c7e-9a1f-2b3c4d5e6f70"), ("colour", "blue"), ("since", "-3"),
            ("size", "large"), ("tag", "1"), ("tag", "2"), ("note", "anything at all"), ("undeclared", "x"), ("undeclared", "y")]
    assert fields(good) == []


def test_each_declared_parameter_not_of_its_type_is_named_once_with_what_it_must_be() -> None:
    assert fields([("verbose", "1"), ("owner", "3f2c1a9e0b5d4c7e9a1f2b3c4d5e6f70"), ("colour", "green"), ("since", "null"),
                   ("tag", "1"), ("tag", "x")]) == [
        ("verbose", "must be true or false"),
        ("owner", "must be a UUID"),
        ("colour", "must be one of red, blue"),
        ("since", "must be an integer"),
        ("tag", "must be an integer"),
    ]


def test_a_parameter_given_twice_is_refused_unless_it_is_an_array() -> None:
    assert fields([("verbose", "true"), ("verbose", "true"), ("tag", "1"), ("tag", "1")]) == [("verbose", "is given more than once")]

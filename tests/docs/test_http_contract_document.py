"""docs/api.md, the HTTP contract a newcomer reads, against the OpenAPI document the service serves (issue 31):
every operation served is documented, and every operation documented is served (or marked as planned)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# `METHOD /path` in backquotes, in a table or in prose; `.../tail` abbreviates a documented prefix.
MENTION = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) ((?:/|\.\.\./)[^`\s?]*)")
PLANNED = "(planned"
# Served beside the OpenAPI document rather than in it: the document's own page.
OUTSIDE_THE_DOCUMENT = {("GET", "/schema")}


def shape(path: str) -> str:
    """A path with every parameter name dropped: `/v1/widgets/{id}` and `/v1/widgets/{widget_id}` are one path."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/"))


def documented() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(operations the document names, those of them under a heading marked as planned)."""
    named: set[tuple[str, str]] = set()
    planned: set[tuple[str, str]] = set()
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            heading = line
        for method, path in MENTION.findall(line):
            op = (method, shape(path))
            (planned if PLANNED in heading else named).add(op)
    return named, planned


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=str(tmp_path_factory.mktemp("var"))))
    with TestClient(app) as client:
        doc = client.get("/schema/openapi.json").json()
    return {(m.upper(), shape(p)) for p, item in doc["paths"].items() for m in item if m.upper() in METHODS}


def matches(op: tuple[str, str], served: set[tuple[str, str]]) -> bool:
    method, path = op
    if path.startswith("..."):
        return any(m == method and p.endswith(path[3:]) for m, p in served)
    return op in served


def test_every_served_operation_is_in_the_http_contract_document(served: set[tuple[str, str]]) -> None:
    named, planned = documented()
    missing = sorted(op for op in served if not matches(op, named | planned) and not any(
        m == op[0] and n.startswith("...") and op[1].endswith(n[3:]) for m, n in named))
    assert not missing, f"served but not in docs/api.md: {missing}"


def test_every_documented_operation_is_served_unless_marked_as_planned(served: set[tuple[str, str]]) -> None:
    named, _ = documented()
    assert len(named) > 40, "the document's operations were not found: has its table format changed?"
    unknown = sorted(op for op in named if not matches(op, served) and op not in OUTSIDE_THE_DOCUMENT)
    assert not unknown, f"in docs/api.md but not served (mark the section '(planned: ...)' if it is to come): {unknown}"

"""JSON request bodies read strictly: a key given twice in one object is refused (400), not silently resolved,
and so is nesting deeper than any request of ours needs.

msgspec, like most decoders, keeps the last of two equal keys; another parser in
front of us (a proxy, a WAF, an audit log) may keep the first. Refusing the
ambiguity means everyone reads the same request.

Both decoders recurse once per level and stop at Python's recursion limit. A
body nested 10,000 deep got its 400 that way, but at the limit any finalizer the
garbage collector ran failed too (an "unraisable" RecursionError, seen once in
CI). Counting the levels first, without recursion, refuses such a body before
either decoder sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Request

from api.errors import ApiError, ProblemField

MAX_NESTING = 64  # levels of arrays and objects: far more than any body of ours has
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


class StrictJSONRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        body = await self.body()
        if body:
            if nested_deeper_than(body, MAX_NESTING):
                raise ApiError(400, "invalid_request", "The request is not valid",
                               f"Arrays and objects are nested more than {MAX_NESTING} levels deep.",
                               errors=[ProblemField("body", f"nests arrays or objects more than {MAX_NESTING} levels deep")])
            duplicate = first_duplicate_key(body)
            if duplicate is not None:
                raise ApiError(400, "invalid_request", "The request is not valid",
                               "A key appears more than once in one JSON object.",
                               errors=[ProblemField(duplicate[:200], "appears more than once in one object")])
        return await super().json()


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest more than `limit` deep (brackets in strings do not count)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # the common case, decided at C speed
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", body)):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


def first_duplicate_key(body: bytes) -> str | None:
    found: list[str] = []

    def check(pairs: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                found.append(key)
            seen.add(key)

    try:
        json.loads(body, object_pairs_hook=check)
    except (ValueError, RecursionError):
        return None  # not JSON, or nested too deeply: the body decoder refuses it with its own message
    return found[0] if found else None

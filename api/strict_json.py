"""JSON request bodies read strictly: a key given twice in one object is refused (400), not silently resolved.

msgspec, like most decoders, keeps the last of two equal keys; another parser in
front of us (a proxy, a WAF, an audit log) may keep the first. Refusing the
ambiguity means everyone reads the same request.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request

from api.errors import ApiError, ProblemField


class StrictJSONRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        body = await self.body()
        if body:
            duplicate = first_duplicate_key(body)
            if duplicate is not None:
                raise ApiError(400, "invalid_request", "The request is not valid",
                               "A key appears more than once in one JSON object.",
                               errors=[ProblemField(duplicate[:200], "appears more than once in one object")])
        return await super().json()


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

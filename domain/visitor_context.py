"""Context a page or a visitor token passes to the agent, checked against the widget's declaration.

Only declared keys are accepted, each of its declared type; strings are bounded by
the key's `max_length` (else `DEFAULT_MAX_LENGTH`). Booleans are not numbers here,
although JSON decoders in Python say they are.
"""

from __future__ import annotations

import math
from typing import Any

from domain.config import ContextKey
from domain.errors import FieldError, ValidationError

DEFAULT_MAX_LENGTH = 500
_TYPES = {"string": "a string", "number": "a number", "boolean": "a boolean"}


def validate_context(declared: tuple[ContextKey, ...], values: object, path: str) -> dict[str, Any]:
    """The values, if every key is declared and of its type; else `ValidationError` naming each bad key."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValidationError([FieldError(path, "must be an object")], "The context is not valid.")
    by_key = {d.key: d for d in declared}
    errors: list[FieldError] = []
    for key, value in values.items():
        declaration = by_key.get(key) if isinstance(key, str) else None
        if declaration is None:
            errors.append(FieldError(f"{path}.{key}", "is not a context key this widget declares"))
            continue
        problem = _problem(declaration, value)
        if problem:
            errors.append(FieldError(f"{path}.{key}", problem))
    if errors:
        raise ValidationError(errors, "The context is not valid.")
    return dict(values)


def _problem(declaration: ContextKey, value: object) -> str | None:
    kind = declaration.type
    if kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        limit = declaration.max_length or DEFAULT_MAX_LENGTH
        return f"must be at most {limit} characters" if len(value) > limit else None
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "must be a number"
    return None if isinstance(value, bool) else f"must be {_TYPES[kind]}"

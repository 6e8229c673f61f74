"""Errors the application layer raises beyond the domain's own."""

from __future__ import annotations


class PreconditionFailedError(Exception):
    """`If-Match` named a version that is no longer current (HTTP 412)."""

    code = "precondition_failed"

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"Expected version {expected}, but the current version is {actual}.")
        self.expected = expected
        self.actual = actual


class ConflictError(Exception):
    """A concurrent write won (HTTP 409, code `conflict`)."""

    code = "conflict"


class IdempotencyKeyReusedError(Exception):
    """An `Idempotency-Key` was reused with a different request body (HTTP 422)."""

    code = "idempotency_key_reused"


class ForbiddenError(Exception):
    """The caller's token lacks a scope (HTTP 403)."""

    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"This call needs the scope {scope!r}.")
        self.scope = scope

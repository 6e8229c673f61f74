"""What every command shares: the caller, expected versions, retries on conflict, idempotency."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.errors import ConflictError, ForbiddenError, IdempotencyKeyReusedError, PreconditionFailedError
from application.store import EventStore
from domain.errors import NotFoundError

A = TypeVar("A", bound=Aggregate)

IDEMPOTENCY_NAMESPACE = UUID("6f3f1d5e-8a5b-4c1e-9a57-0d6c1f2b7e41")
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Caller:
    """Who is calling: the organization and actor from a verified admin token."""

    organization_id: str
    actor: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ForbiddenError(scope)


def fingerprint(payload: Any) -> str:
    """A stable hash of a request's meaning, to tell a retry from a different request."""
    return hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest()


def idempotent_id(organization_id: str, kind: str, key: str, parent: UUID | None = None) -> UUID:
    """The id a create with this Idempotency-Key gets, so the event store's uniqueness makes retries safe."""
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{organization_id}\x00{kind}\x00{parent or ''}\x00{key}")


def load_owned(store: EventStore, cls: type[A], aggregate_id: UUID, caller: Caller, what: str, version: int | None = None) -> A:
    """Load an aggregate of this organization; anything else is simply not found."""
    try:
        aggregate = store.repository.get(aggregate_id, version=version)
    except AggregateNotFoundError:
        raise NotFoundError(what, aggregate_id) from None
    if not isinstance(aggregate, cls) or aggregate.organization_id != caller.organization_id:
        raise NotFoundError(what, aggregate_id)
    if version is not None and aggregate.version != version:
        # The repository answers the latest state at or before `version`; a version never reached is unknown.
        raise NotFoundError(f"{what} version {version} of", aggregate_id)
    return aggregate


def check_expected_version(aggregate: Aggregate, expected: int | None) -> None:
    if expected is not None and expected != aggregate.version:
        raise PreconditionFailedError(expected, aggregate.version)


def change(
    store: EventStore,
    load: Callable[[], A],
    command: Callable[[A], bool],
    expected_version: int | None,
) -> A:
    """Load, check If-Match, run one command, save.

    Without If-Match, a concurrent write is retried on fresh state, as a
    client that sent no precondition expects; with it, the loser gets 409.
    """
    for _ in range(CONFLICT_RETRIES):
        aggregate = load()
        check_expected_version(aggregate, expected_version)
        if not command(aggregate):
            return aggregate
        try:
            store.save(aggregate)
        except IntegrityError:
            if expected_version is not None:
                raise ConflictError(f"{type(aggregate).__name__} {aggregate.id} was changed by another request.") from None
            continue
        return aggregate
    raise ConflictError(f"Gave up after {CONFLICT_RETRIES} concurrent writes won.")


def create_once(store: EventStore, new: Callable[[], A], existing: Callable[[UUID], A], request_fingerprint: str | None) -> tuple[A, bool]:
    """Save a new aggregate; if its (idempotent) id exists, answer what the first request created.

    Returns the aggregate and whether this call created it.
    """
    aggregate = new()
    try:
        store.save(aggregate)
        return aggregate, True
    except IntegrityError:
        first = existing(aggregate.id)
        if request_fingerprint is None or getattr(first, "request_fingerprint", None) != request_fingerprint:
            raise IdempotencyKeyReusedError("This Idempotency-Key was used with a different request body.") from None
        return first, False

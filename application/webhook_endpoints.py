"""Webhook endpoints: an organization's receivers, their subscriptions and their signing secrets."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from application.agents import READ, WRITE
from application.commands import Caller, change, create_once, fingerprint, idempotent_id, load_owned
from application.store import EventStore
from domain.errors import NotFoundError
from domain.webhook_endpoint import DISABLED_ON_REQUEST, WebhookEndpoint, subscribed_events
from domain.webhook_url import check_endpoint_url

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SYSTEM_ACTOR = "webhooks"  # the actor of what the deliverer records (an endpoint disabled after a 410 or 5 days failing)


class EndpointSecrets(Protocol):
    """Where signing secrets live, sealed (infrastructure/webhook_secrets.py)."""

    def put(self, secret_id: UUID, endpoint_id: UUID, secret: bytes) -> None: ...

    def open(self, secret_ids: Iterable[UUID]) -> dict[UUID, bytes]: ...

    def discard(self, secret_ids: Iterable[UUID]) -> None: ...

    def discard_endpoint(self, endpoint_id: UUID, keep: Iterable[UUID] = ()) -> None: ...


def format_secret(secret: bytes) -> str:
    """The secret as clients see it (Standard Webhooks): `whsec_` + base64 of the key bytes."""
    return SECRET_PREFIX + base64.b64encode(secret).decode()


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint as a create or a rotation answers it: the only times the secret is shown."""

    endpoint: WebhookEndpoint
    secret: str


class WebhookEndpointService:
    """Commands and reads on the WebhookEndpoint aggregate."""

    def __init__(self, store: EventStore, secrets_table: EndpointSecrets, allow_private: bool = False,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.secrets = secrets_table
        self.allow_private = allow_private
        self.clock = clock

    def create_endpoint(self, caller: Caller, url: str, events: Sequence[str], description: str | None = None,
                        idempotency_key: str | None = None) -> EndpointWithSecret:
        caller.require(WRITE)
        check_endpoint_url(url, self.allow_private)
        subscribed = subscribed_events(events)
        request = fingerprint({"url": url, "events": subscribed, "description": description}) if idempotency_key else None
        endpoint_id = idempotent_id(caller.organization_id, "webhook_endpoint", idempotency_key) if idempotency_key else uuid.uuid4()
        secret_id, secret = uuid.uuid4(), secrets.token_bytes(SECRET_BYTES)
        self.secrets.put(secret_id, endpoint_id, secret)  # before the event that names it: never an event without its secret
        try:
            endpoint, created = create_once(
                self.store,
                lambda: WebhookEndpoint(id=endpoint_id, organization_id=caller.organization_id, url=url, events=subscribed,
                                        description=description, secret_id=secret_id, actor=caller.actor,
                                        request_fingerprint=request),
                lambda existing_id: self.load(caller, existing_id),
                request,
            )
        except Exception:
            if not self._discard_unless_stored(endpoint_id, secret_id):  # else stored, its answer lost: created
                raise
            endpoint, created = self.load(caller, endpoint_id), True
        except BaseException:
            self._discard_unless_stored(endpoint_id, secret_id)
            raise
        if not created and endpoint.secret_id != secret_id:  # a retry with the same Idempotency-Key: the first answer
            self.secrets.discard([secret_id])                # again, with the first secret
            secret = self._open(endpoint.secret_id)
        return EndpointWithSecret(endpoint, format_secret(secret))

    def get_endpoint(self, caller: Caller, endpoint_id: UUID) -> WebhookEndpoint:
        caller.require(READ)
        return self.load(caller, endpoint_id)

    def change_endpoint(self, caller: Caller, endpoint_id: UUID, url: str | None = None, events: Sequence[str] | None = None,
                        disabled: bool | None = None, expected_version: int | None = None) -> WebhookEndpoint:
        """Any of url, events and disabled; the events they record are saved together."""
        caller.require(WRITE)
        if url is not None:
            check_endpoint_url(url, self.allow_private)
        subscribed = subscribed_events(events) if events is not None else None

        def command(endpoint: WebhookEndpoint) -> bool:
            if url is not None:
                endpoint.change_url(url, caller.actor)
            if subscribed is not None:
                endpoint.change_events(subscribed, caller.actor)
            if disabled is True:
                endpoint.disable(DISABLED_ON_REQUEST, caller.actor)
            elif disabled is False:
                endpoint.enable(caller.actor)
            endpoint.check_not_deleted()
            return bool(endpoint.pending_events)

        return change(self.store, lambda: self.load(caller, endpoint_id), command, expected_version)

    def rotate_secret(self, caller: Caller, endpoint_id: UUID, expected_version: int | None = None) -> EndpointWithSecret:
        """A new secret signs from now on; the one it replaces also signs for 24 hours."""
        caller.require(WRITE)
        secret_id, secret = uuid.uuid4(), secrets.token_bytes(SECRET_BYTES)
        self.load(caller, endpoint_id).check_not_deleted()
        self.secrets.put(secret_id, endpoint_id, secret)

        def rotate(endpoint: WebhookEndpoint) -> bool:
            # Done already when a save stored the event but failed to say so and `change` tried again.
            return not _names(endpoint, secret_id) and _recorded(endpoint, lambda: endpoint.rotate_secret(
                secret_id, self.clock(), caller.actor))

        try:
            endpoint = change(self.store, lambda: self.load(caller, endpoint_id), rotate, expected_version)
        except Exception:
            # A save whose answer was lost (with If-Match it even looks like a conflict with itself) may have stored
            # the rotation: then it happened, and the answer is its secret.
            if not self._discard_unless_stored(endpoint_id, secret_id):
                raise
            endpoint = self.load(caller, endpoint_id)
        except BaseException:
            self._discard_unless_stored(endpoint_id, secret_id)
            raise
        now = self.clock()
        self.secrets.discard([s for s, until in endpoint.previous_secrets.items() if until <= now])  # no longer signing
        return EndpointWithSecret(endpoint, format_secret(secret))

    def delete_endpoint(self, caller: Caller, endpoint_id: UUID, expected_version: int | None = None) -> None:
        caller.require(WRITE)
        change(self.store, lambda: self.load(caller, endpoint_id), lambda e: _recorded(e, lambda: e.delete(caller.actor)),
               expected_version)
        self.secrets.discard_endpoint(endpoint_id)

    def disable_endpoint(self, endpoint_id: UUID, reason: str) -> bool:
        """The deliverer's command: stop deliveries to an endpoint (`gone_410`, `failing_5_days`).

        Returns whether this call disabled it; an endpoint already disabled, deleted or unknown is left as it is."""
        return disable_endpoint(self.store, endpoint_id, reason)

    def load(self, caller: Caller, endpoint_id: UUID, version: int | None = None) -> WebhookEndpoint:
        """An endpoint of the caller's organization; a deleted one is not found."""
        endpoint = load_owned(self.store, WebhookEndpoint, endpoint_id, caller, "Webhook endpoint", version)
        endpoint.check_not_deleted()
        return endpoint

    def _discard_unless_stored(self, endpoint_id: UUID, secret_id: UUID) -> bool:
        """After a command failed: discard the secret it put, unless an event naming it was stored all the same (a
        commit whose answer was lost, an error raised after the save); returns whether one was. Read from the log;
        when the log cannot be read, the secret stays: an orphan signs nothing, while a stored event without its
        secret would stop the endpoint's deliveries."""
        try:
            endpoint = self.store.repository.get(endpoint_id)
        except AggregateNotFoundError:
            endpoint = None  # not created: no event names the secret
        except Exception:  # noqa: BLE001 - the store is unreachable: keep the secret (see above)
            return False
        if isinstance(endpoint, WebhookEndpoint) and _names(endpoint, secret_id):
            return True
        self.secrets.discard([secret_id])
        return False

    def _open(self, secret_id: UUID) -> bytes:
        found = self.secrets.open([secret_id])
        if secret_id not in found:
            raise NotFoundError("Webhook endpoint secret", secret_id)
        return found[secret_id]


def disable_endpoint(store: EventStore, endpoint_id: UUID, reason: str, actor: str = SYSTEM_ACTOR) -> bool:
    """Record `webhook_endpoint.disabled` with `reason` unless the endpoint is already disabled, deleted or unknown."""
    disabled: list[bool] = []

    def command(endpoint: WebhookEndpoint) -> bool:
        if endpoint.deleted or endpoint.disabled:
            return False
        endpoint.disable(reason, actor)
        disabled.append(True)
        return True

    def load() -> WebhookEndpoint:
        disabled.clear()
        try:
            endpoint = store.repository.get(endpoint_id)
        except AggregateNotFoundError:
            raise NotFoundError("Webhook endpoint", endpoint_id) from None
        if not isinstance(endpoint, WebhookEndpoint):
            raise NotFoundError("Webhook endpoint", endpoint_id)
        return endpoint

    try:
        change(store, load, command, expected_version=None)
    except NotFoundError:
        return False
    return bool(disabled)


def _names(endpoint: WebhookEndpoint, secret_id: UUID) -> bool:
    """Whether the endpoint's events name this secret (as its current one, or one it rotated out)."""
    return secret_id == endpoint.secret_id or secret_id in endpoint.previous_secrets


def _recorded(endpoint: WebhookEndpoint, command: Callable[[], object]) -> bool:
    command()
    return bool(endpoint.pending_events)

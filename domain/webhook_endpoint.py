"""The WebhookEndpoint aggregate: where an organization's systems hear about its events.

The signing secret itself is never part of an event: the events name it by a
random `secret_id`, and the secret lives sealed under the deployment key in a
table of its own (infrastructure/webhook_secrets.py). A rotated-out secret
keeps signing until `previous_secret_expires_at`, which the rotation records.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import event_types as t
from domain.errors import FieldError, NotFoundError, ValidationError

ALL_EVENTS = "*"
# Every event type of the contract: the audit feed's types, and those of erasure and retention (#13) by name,
# so that a subscription made before they are recorded is kept.
SUBSCRIBABLE_EVENT_TYPES: frozenset[str] = frozenset(t.EVENT_TYPES) | {"conversation.personal_data_erased",
                                                                       "widget.retention_changed"}
MAX_EVENT_TYPES = len(SUBSCRIBABLE_EVENT_TYPES)
MAX_DESCRIPTION = 500
PREVIOUS_SECRET_GRACE = timedelta(hours=24)

DISABLED_ON_REQUEST = "request"
DISABLED_GONE = "gone_410"
DISABLED_FAILING = "failing_5_days"
DISABLED_REASONS = (DISABLED_ON_REQUEST, DISABLED_GONE, DISABLED_FAILING)


def subscribed_events(events: Iterable[str], field: str = "events") -> list[str]:
    """The event types as stored: `["*"]`, or known types without repeats in the order given."""
    given = list(events)
    if not given:
        raise ValidationError([FieldError(field, 'must name at least one event type, or "*" for all')])
    errors = [FieldError(f"{field}[{i}]", "is not an event type that can be subscribed to")
              for i, name in enumerate(given) if name != ALL_EVENTS and name not in SUBSCRIBABLE_EVENT_TYPES]
    if ALL_EVENTS in given and len(given) > 1:
        errors.append(FieldError(field, '"*" subscribes to every event type and stands alone'))
    if errors:
        raise ValidationError(errors, "The event types are not valid.")
    return list(dict.fromkeys(given))


def subscribes_to(events: Iterable[str], event_type: str) -> bool:
    return any(name == ALL_EVENTS or name == event_type for name in events)


class WebhookEndpoint(Aggregate):
    TOPIC = t.WEBHOOK_ENDPOINT

    @event("Created", topic=t.WEBHOOK_ENDPOINT_CREATED)
    def __init__(
        self,
        id: UUID,  # noqa: A002 (given, so that idempotent creates get a deterministic id)
        organization_id: str,
        url: str,
        events: list[str],
        description: str | None,
        secret_id: UUID,
        actor: str,
        request_fingerprint: str | None = None,
    ) -> None:
        self.organization_id = organization_id
        self.url = url
        self.events = list(events)
        self.description = description
        self.secret_id = secret_id
        self.previous_secrets: dict[UUID, datetime] = {}  # secret id -> until when it still signs
        self.disabled = False
        self.disabled_reason: str | None = None
        self.deleted = False
        self.request_fingerprint = request_fingerprint

    def change_url(self, url: str, actor: str) -> None:
        self.check_not_deleted()
        if url != self.url:
            self._url_changed(url=url, actor=actor)

    def change_events(self, events: list[str], actor: str) -> None:
        self.check_not_deleted()
        if events != self.events:
            self._events_changed(events=events, actor=actor)

    def rotate_secret(self, secret_id: UUID, at: datetime, actor: str) -> None:
        self.check_not_deleted()
        self._secret_rotated(secret_id=secret_id, previous_secret_expires_at=at + PREVIOUS_SECRET_GRACE, actor=actor)

    def disable(self, reason: str, actor: str) -> None:
        """Stops deliveries; a no-op if already disabled (the first reason stays)."""
        self.check_not_deleted()
        if reason not in DISABLED_REASONS:
            raise ValidationError([FieldError("reason", f"must be one of {', '.join(DISABLED_REASONS)}")])
        if not self.disabled:
            self._disabled(reason=reason, actor=actor)

    def enable(self, actor: str) -> None:
        self.check_not_deleted()
        if self.disabled:
            self._enabled(actor=actor)

    def delete(self, actor: str) -> None:
        self.check_not_deleted()
        self._deleted(actor=actor)

    def check_not_deleted(self) -> None:
        if self.deleted:
            raise NotFoundError("Webhook endpoint", self.id)

    # Facts: these run again on every replay, so they never raise.

    @event("UrlChanged", topic=t.WEBHOOK_ENDPOINT_URL_CHANGED)
    def _url_changed(self, url: str, actor: str) -> None:
        self.url = url

    @event("EventsChanged", topic=t.WEBHOOK_ENDPOINT_EVENTS_CHANGED)
    def _events_changed(self, events: list[str], actor: str) -> None:
        self.events = list(events)

    @event("SecretRotated", topic=t.WEBHOOK_ENDPOINT_SECRET_ROTATED)
    def _secret_rotated(self, secret_id: UUID, previous_secret_expires_at: datetime, actor: str) -> None:
        self.previous_secrets[self.secret_id] = previous_secret_expires_at
        self.secret_id = secret_id

    @event("Disabled", topic=t.WEBHOOK_ENDPOINT_DISABLED)
    def _disabled(self, reason: str, actor: str) -> None:
        self.disabled, self.disabled_reason = True, reason

    @event("Enabled", topic=t.WEBHOOK_ENDPOINT_ENABLED)
    def _enabled(self, actor: str) -> None:
        self.disabled, self.disabled_reason = False, None

    @event("Deleted", topic=t.WEBHOOK_ENDPOINT_DELETED)
    def _deleted(self, actor: str) -> None:
        self.deleted = True

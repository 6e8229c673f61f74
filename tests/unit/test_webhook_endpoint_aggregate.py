"""The WebhookEndpoint aggregate and its service on in-memory storage: facts with their actor, no secret in any event,
replay equal to state, and a secret never left behind by a command that failed."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from application.commands import Caller
from application.errors import PreconditionFailedError
from application.store import EventStore
from application.webhook_endpoints import WebhookEndpointService, disable_endpoint
from domain import event_types as t
from domain.errors import NotFoundError, ValidationError
from domain.records import describe
from domain.webhook_endpoint import PREVIOUS_SECRET_GRACE, WebhookEndpoint, subscribed_events

ALICE = Caller("org_a", "alice", frozenset({"widgets:write", "widgets:read"}))
BOB = Caller("org_b", "bob", frozenset({"widgets:write", "widgets:read"}))
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


class MemorySecrets:
    """The EndpointSecrets port in memory (the sealed SQL table is tested over HTTP on both wirings)."""

    def __init__(self) -> None:
        self.rows: dict[UUID, tuple[UUID, bytes]] = {}

    def put(self, secret_id: UUID, endpoint_id: UUID, secret: bytes) -> None:
        self.rows[secret_id] = (endpoint_id, secret)

    def open(self, secret_ids: Iterable[UUID]) -> dict[UUID, bytes]:
        return {s: self.rows[s][1] for s in secret_ids if s in self.rows}

    def discard(self, secret_ids: Iterable[UUID]) -> None:
        for s in list(secret_ids):
            self.rows.pop(s, None)

    def discard_endpoint(self, endpoint_id: UUID, keep: Iterable[UUID] = ()) -> None:
        kept = set(keep)
        self.rows = {s: row for s, row in self.rows.items() if row[0] != endpoint_id or s in kept}


@pytest.fixture
def secrets() -> MemorySecrets:
    return MemorySecrets()


@pytest.fixture
def store() -> EventStore:
    return EventStore()


@pytest.fixture
def service(store: EventStore, secrets: MemorySecrets) -> WebhookEndpointService:
    return WebhookEndpointService(store, secrets, clock=lambda: NOW)


def events_of(store: EventStore, endpoint_id: UUID) -> list[Any]:
    return list(store.events.get(endpoint_id))


def test_every_command_records_its_fact_with_the_actor_and_replay_gives_the_same_state(service: WebhookEndpointService,
                                                                                       store: EventStore) -> None:
    endpoint_id = service.create_endpoint(ALICE, "https://a.example.com/", ["*"], "CRM").endpoint.id
    service.change_endpoint(ALICE, endpoint_id, url="https://b.example.com/", events=[t.WIDGET_CREATED], disabled=True)
    service.change_endpoint(ALICE, endpoint_id, disabled=False)
    live = service.rotate_secret(ALICE, endpoint_id).endpoint  # the state the commands left in memory

    events = events_of(store, endpoint_id)
    assert [describe(e).type for e in events] == [
        t.WEBHOOK_ENDPOINT_CREATED, t.WEBHOOK_ENDPOINT_URL_CHANGED, t.WEBHOOK_ENDPOINT_EVENTS_CHANGED, t.WEBHOOK_ENDPOINT_DISABLED,
        t.WEBHOOK_ENDPOINT_ENABLED, t.WEBHOOK_ENDPOINT_SECRET_ROTATED]
    assert {e.actor for e in events} == {"alice"}
    replayed = store.repository.get(endpoint_id)
    assert vars(replayed) == vars(live)
    assert (replayed.url, replayed.events, replayed.disabled, replayed.disabled_reason) == ("https://b.example.com/", [t.WIDGET_CREATED], False, None)
    assert list(replayed.previous_secrets.values()) == [NOW + PREVIOUS_SECRET_GRACE]


def test_no_event_carries_the_secret(service: WebhookEndpointService, store: EventStore, secrets: MemorySecrets) -> None:
    created = service.create_endpoint(ALICE, "https://a.example.com/", ["*"])
    service.rotate_secret(ALICE, created.endpoint.id)

    stored = b"".join(n.state for n in store.recorder.select_notifications(start=1, limit=100))
    for _, secret in secrets.rows.values():
        assert secret not in stored and secret.hex().encode() not in stored
    assert created.secret.removeprefix("whsec_").encode() not in stored


def test_a_failed_rotation_leaves_no_secret_behind(service: WebhookEndpointService, secrets: MemorySecrets) -> None:
    endpoint_id = service.create_endpoint(ALICE, "https://a.example.com/", ["*"]).endpoint.id
    before = dict(secrets.rows)

    with pytest.raises(PreconditionFailedError):
        service.rotate_secret(ALICE, endpoint_id, expected_version=7)
    with pytest.raises(NotFoundError):
        service.rotate_secret(BOB, endpoint_id)

    assert secrets.rows == before


class AnswerLost(EventStore):
    """An event store whose next saves store their events and then fail as a lost commit answer does: the connection
    dropped (OperationalError), or the recorder's retry meeting its own insert (IntegrityError). With `unreadable`
    set, reading the log fails too afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Exception] = []
        self.unreadable = False

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        recordings = super().save(*objs, **kwargs)
        if self.failures:
            failure = self.failures.pop(0)
            if self.unreadable:
                self.repository.get = self._unreachable  # type: ignore[method-assign]
            raise failure
        return recordings

    def _unreachable(self, *args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize("if_match", [False, True], ids=["no_if_match", "if_match"])
@pytest.mark.parametrize("failure", [OperationalError("connection lost"), IntegrityError("duplicate key")],
                         ids=["connection_lost", "retry_met_its_own_insert"])
def test_a_rotation_stored_whose_answer_was_lost_keeps_its_secret_and_answers_it(secrets: MemorySecrets, failure: Exception,
                                                                                 if_match: bool) -> None:
    store = AnswerLost()
    service = WebhookEndpointService(store, secrets, clock=lambda: NOW)
    created = service.create_endpoint(ALICE, "https://a.example.com/", ["*"])
    store.failures.append(failure)

    rotated = service.rotate_secret(ALICE, created.endpoint.id, expected_version=1 if if_match else None)

    endpoint = store.repository.get(created.endpoint.id)
    assert endpoint.version == 2 and rotated.endpoint.secret_id == endpoint.secret_id  # rotated once, not twice
    assert secrets.open([endpoint.secret_id]) == {endpoint.secret_id: base64.b64decode(rotated.secret.removeprefix("whsec_"))}
    assert set(secrets.rows) == {created.endpoint.secret_id, endpoint.secret_id}


def test_a_rotation_whose_log_cannot_be_read_after_a_failure_keeps_the_secret_it_may_have_stored(secrets: MemorySecrets) -> None:
    store = AnswerLost()
    service = WebhookEndpointService(store, secrets, clock=lambda: NOW)
    created = service.create_endpoint(ALICE, "https://a.example.com/", ["*"])
    store.failures.append(OperationalError("connection lost"))
    store.unreadable = True

    with pytest.raises(OperationalError):
        service.rotate_secret(ALICE, created.endpoint.id)

    del store.repository.get  # readable again: the event was stored, and so is the secret it names
    endpoint = store.repository.get(created.endpoint.id)
    assert endpoint.secret_id != created.endpoint.secret_id and endpoint.secret_id in secrets.rows


def test_a_create_stored_whose_answer_was_lost_keeps_its_secret_and_answers_it(secrets: MemorySecrets) -> None:
    store = AnswerLost()
    service = WebhookEndpointService(store, secrets, clock=lambda: NOW)
    store.failures.append(OperationalError("connection lost"))

    created = service.create_endpoint(ALICE, "https://a.example.com/", ["*"])

    endpoint = store.repository.get(created.endpoint.id)
    assert secrets.open([endpoint.secret_id]) == {endpoint.secret_id: base64.b64decode(created.secret.removeprefix("whsec_"))}


def test_deleting_destroys_the_secrets_and_the_endpoint_is_then_not_found(service: WebhookEndpointService,
                                                                          secrets: MemorySecrets, store: EventStore) -> None:
    endpoint_id = service.create_endpoint(ALICE, "https://a.example.com/", ["*"]).endpoint.id
    service.rotate_secret(ALICE, endpoint_id)

    service.delete_endpoint(ALICE, endpoint_id)

    assert secrets.rows == {}
    for command in (lambda: service.get_endpoint(ALICE, endpoint_id), lambda: service.delete_endpoint(ALICE, endpoint_id),
                    lambda: service.change_endpoint(ALICE, endpoint_id, disabled=True)):
        with pytest.raises(NotFoundError):
            command()
    assert disable_endpoint(store, endpoint_id, "gone_410") is False


def test_the_deliverer_disables_once_and_only_with_a_known_reason(service: WebhookEndpointService, store: EventStore) -> None:
    endpoint_id = service.create_endpoint(ALICE, "https://a.example.com/", ["*"]).endpoint.id

    with pytest.raises(ValidationError):
        disable_endpoint(store, endpoint_id, "bored")
    assert disable_endpoint(store, endpoint_id, "failing_5_days") is True
    assert disable_endpoint(store, endpoint_id, "gone_410") is False
    assert disable_endpoint(store, uuid.uuid4(), "gone_410") is False

    last = events_of(store, endpoint_id)[-1]
    assert (describe(last).type, last.actor, last.reason) == (t.WEBHOOK_ENDPOINT_DISABLED, "webhooks", "failing_5_days")


def test_a_rotation_records_until_when_the_old_secret_signs(service: WebhookEndpointService) -> None:
    created = service.create_endpoint(ALICE, "https://a.example.com/", ["*"])
    rotated = service.rotate_secret(ALICE, created.endpoint.id)
    service.clock = lambda: NOW + timedelta(hours=30)
    again = service.rotate_secret(ALICE, created.endpoint.id).endpoint

    assert rotated.secret != created.secret
    assert again.previous_secrets == {created.endpoint.secret_id: NOW + PREVIOUS_SECRET_GRACE,
                                      rotated.endpoint.secret_id: NOW + timedelta(hours=30) + PREVIOUS_SECRET_GRACE}


@pytest.mark.parametrize(("events", "fields"), [
    ([], ["events"]), (["*", "*"], ["events"]), (["nope", t.WIDGET_CREATED, "x"], ["events[0]", "events[2]"]),
])
def test_unknown_or_empty_subscriptions_are_refused_naming_each_item(events: list[str], fields: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        subscribed_events(events)
    assert [e.field for e in caught.value.errors] == fields


def test_a_subscription_is_kept_in_order_without_repeats() -> None:
    assert subscribed_events([t.CONVERSATION_ENDED, t.WIDGET_CREATED, t.CONVERSATION_ENDED]) == [t.CONVERSATION_ENDED, t.WIDGET_CREATED]
    assert subscribed_events(["*"]) == ["*"]


def test_created_names_the_organization_for_the_audit_feed() -> None:
    endpoint = WebhookEndpoint(id=uuid.uuid4(), organization_id="org_a", url="https://a.example.com/", events=["*"],
                               description=None, secret_id=uuid.uuid4(), actor="alice")
    (created,) = endpoint.collect_events()
    assert describe(created).data == {"organization_id": "org_a", "url": "https://a.example.com/", "events": ["*"], "description": None}

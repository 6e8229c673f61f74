"""Schema evolution: events stored in an older shape still load, and stored topics are public names.

Old shapes are written straight into the SQLite event store, exactly as an
earlier release would have left them, then read back through the current
code: the repository, the history service and the auditors' description.
See docs/events.md for the policy these tests hold the code to.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from application.agents import AgentService
from application.commands import Caller
from application.conversations import ConversationService, Grant, LiveWidget, RoomTicket
from application.history import HistoryService
from application.personal_data import PersonalDataService
from application.store import EventStore
from application.webhook_endpoints import WebhookEndpointService
from application.widgets import WidgetService
from domain import event_types as t
from domain.agent import Agent
from domain.conversation import Conversation, hash_resume_token
from domain.records import HIDDEN, describe
from domain.webhook_endpoint import WebhookEndpoint
from domain.widget import Widget
from infrastructure.eventstore import sqlite_env
from infrastructure.personal_data import DeploymentKeys
from infrastructure.settings import Settings
from infrastructure.sql import Database
from infrastructure.webhook_secrets import WebhookSecretTable
from tests.visitors import SiteKey

ALICE = Caller("org_a", "alice", frozenset({"widgets:write", "widgets:read", "audit:read"}))

# Every public event name, and the class that must answer to it today.
CURRENT_CLASSES: dict[str, type[Any]] = {
    t.WIDGET_CREATED: Widget.Created,
    t.WIDGET_DOMAINS_CHANGED: Widget.DomainsChanged,
    t.WIDGET_VERSION_PINNED: Widget.VersionPinned,
    t.WIDGET_CONFIG_CHANGED: Widget.ConfigChanged,
    t.WIDGET_PUBLISHED: Widget.Published,
    t.WIDGET_UNPUBLISHED: Widget.Unpublished,
    t.WIDGET_DELETED: Widget.Deleted,
    t.WIDGET_IDENTITY_KEY_ADDED: Widget.IdentityKeyAdded,
    t.WIDGET_IDENTITY_KEY_REMOVED: Widget.IdentityKeyRemoved,
    t.CONVERSATION_PERSONAL_DATA_ERASED: Conversation.PersonalDataErased,
    t.WIDGET_RETENTION_CHANGED: Widget.RetentionChanged,
    t.AGENT_CREATED: Agent.Created,
    t.AGENT_VERSION_CREATED: Agent.VersionCreated,
    t.AGENT_VERSION_PUBLISHED: Agent.VersionPublished,
    t.AGENT_VERSION_UNPUBLISHED: Agent.VersionUnpublished,
    t.CONVERSATION_STARTED: Conversation.Created,
    t.CONVERSATION_RESUMED: Conversation.Resumed,
    t.CONVERSATION_FORM_SUBMITTED: Conversation.FormSubmitted,
    t.CONVERSATION_FEEDBACK_GIVEN: Conversation.FeedbackGiven,
    t.CONVERSATION_ENDED: Conversation.Ended,
    t.WEBHOOK_ENDPOINT_CREATED: WebhookEndpoint.Created,
    t.WEBHOOK_ENDPOINT_URL_CHANGED: WebhookEndpoint.UrlChanged,
    t.WEBHOOK_ENDPOINT_EVENTS_CHANGED: WebhookEndpoint.EventsChanged,
    t.WEBHOOK_ENDPOINT_SECRET_ROTATED: WebhookEndpoint.SecretRotated,
    t.WEBHOOK_ENDPOINT_DISABLED: WebhookEndpoint.Disabled,
    t.WEBHOOK_ENDPOINT_ENABLED: WebhookEndpoint.Enabled,
    t.WEBHOOK_ENDPOINT_DELETED: WebhookEndpoint.Deleted,
}
AGGREGATE_CLASSES: dict[str, type[Any]] = {t.WIDGET: Widget, t.AGENT: Agent, t.CONVERSATION: Conversation,
                                           t.WEBHOOK_ENDPOINT: WebhookEndpoint}


def public_event_names() -> set[str]:
    """Every event name `domain/event_types.py` declares (the aggregate names have no dot)."""
    return {v for k, v in vars(t).items() if k.isupper() and isinstance(v, str) and "." in v}


class FakeIssuer:
    """Grants without LiveKit: the conversation service only needs something shaped like one."""

    def grant(self, ticket: RoomTicket) -> Grant:
        return Grant(url="wss://livekit.test", room=ticket.room, token="token", expires_at=datetime.now(UTC) + timedelta(minutes=5))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def store(data_dir: Path) -> Iterator[EventStore]:
    store = EventStore(env=sqlite_env(data_dir))
    yield store
    store.close()


@pytest.fixture
def agents(store: EventStore) -> AgentService:
    return AgentService(store)


@pytest.fixture
def widgets(store: EventStore, agents: AgentService) -> WidgetService:
    return WidgetService(store, agents)


@pytest.fixture
def history(store: EventStore) -> HistoryService:
    return HistoryService(store)


def new_widget(agents: AgentService, widgets: WidgetService, **kwargs: Any) -> Widget:
    agent = agents.create_agent(ALICE, "Support")
    version = agents.create_version(ALICE, agent.id, None)
    return widgets.create_widget(ALICE, agent.id, version.id, ["example.com"], None, **kwargs).widget


def v1_created_state(store: EventStore, widget_id: UUID) -> bytes:
    """A real widget.created stored state, taken back to version 1: no fingerprint, no class_version."""
    stored = store.recorder.select_events(widget_id, lte=1)[0]
    assert stored.topic == t.WIDGET_CREATED
    state = json.loads(stored.state)
    assert state.pop("class_version") == 2  # what the current code writes
    del state["request_fingerprint"]
    return json.dumps(state).encode()


def plant_v1_widget(store: EventStore, template_id: UUID) -> UUID:
    """Insert a widget.created event in the version 1 shape, as a release before idempotency keys stored it."""
    old_id = uuid.uuid4()
    store.recorder.insert_events(
        [StoredEvent(originator_id=old_id, originator_version=1, topic=t.WIDGET_CREATED, state=v1_created_state(store, template_id))]
    )
    return old_id


# --- upcasting ------------------------------------------------------------------------------


def test_a_v1_widget_created_event_loads_with_no_request_fingerprint(
    store: EventStore, agents: AgentService, widgets: WidgetService
) -> None:
    template = new_widget(agents, widgets)
    old_id = plant_v1_widget(store, template.id)

    widget = store.repository.get(old_id)

    assert isinstance(widget, Widget)
    assert widget.id == old_id and widget.version == 1
    assert widget.request_fingerprint is None
    assert (widget.organization_id, widget.agent_id, widget.agent_version_id) == (
        template.organization_id, template.agent_id, template.agent_version_id)
    assert widget.domains == ["example.com"] and widget.config == template.config
    assert (widget.published, widget.deleted) == (False, False)
    [event] = store.events.get(old_id)
    assert type(event) is Widget.Created
    assert event.request_fingerprint is None


def test_a_v1_widget_is_described_and_its_history_read_like_any_other(
    store: EventStore, agents: AgentService, widgets: WidgetService, history: HistoryService
) -> None:
    template = new_widget(agents, widgets)
    old_id = plant_v1_widget(store, template.id)

    [record] = history.widget_history(ALICE, old_id)
    [reference] = history.widget_history(ALICE, template.id)

    assert (record.type, record.version, record.actor, record.aggregate_id) == (t.WIDGET_CREATED, 1, "alice", old_id)
    assert record.data == reference.data
    assert not HIDDEN & record.data.keys()
    assert "class_version" not in record.data
    at = history.widget_at_time(ALICE, old_id, datetime.now(UTC))
    assert at.version == 1 and at.domains == ["example.com"]


def test_a_v1_widget_takes_new_commands_and_reloads_with_them(
    store: EventStore, agents: AgentService, widgets: WidgetService, history: HistoryService
) -> None:
    template = new_widget(agents, widgets)
    old_id = plant_v1_widget(store, template.id)

    widgets.change_domains(ALICE, old_id, ["a.example.com"])
    widgets.patch_config(ALICE, old_id, {"v1": {"appearance": {"theme": "dark"}}})

    state = widgets.get_widget(ALICE, old_id)
    assert state.widget.version == 3
    assert state.widget.domains == ["a.example.com"]
    assert state.widget.config["v1"]["appearance"]["theme"] == "dark"
    assert [r.type for r in history.widget_history(ALICE, old_id)] == [
        t.WIDGET_CREATED, t.WIDGET_DOMAINS_CHANGED, t.WIDGET_CONFIG_CHANGED]
    assert widgets.get_widget(ALICE, old_id, version=1).widget.domains == ["example.com"]


def test_new_widget_created_events_are_stored_at_class_version_2_with_their_fingerprint(
    store: EventStore, agents: AgentService, widgets: WidgetService
) -> None:
    created = new_widget(agents, widgets, idempotency_key="retry-1")
    stored = json.loads(store.recorder.select_events(created.id, lte=1)[0].state)
    assert stored["class_version"] == Widget.Created.class_version == 2
    assert stored["request_fingerprint"] == created.request_fingerprint is not None
    assert store.repository.get(created.id).request_fingerprint == created.request_fingerprint


def test_the_upcaster_keeps_a_fingerprint_that_is_present() -> None:
    with_fingerprint = {"request_fingerprint": "abc"}
    without = {"domains": []}
    Widget.Created.upcast_v1_v2(with_fingerprint)
    Widget.Created.upcast_v1_v2(without)
    assert with_fingerprint == {"request_fingerprint": "abc"}
    assert without == {"domains": [], "request_fingerprint": None}


def test_resumes_recorded_before_version_3_replay_as_they_happened(store: EventStore, agents: AgentService,
                                                                   widgets: WidgetService) -> None:
    """Resumes recorded before version 3 read in its shape, in the aggregate and in what auditors see: version 1
    ones (with or without a verified visitor's token hash) have no context; the token hash a version 2 resume
    recorded was a verified visitor's token handed out beside the others, so it resumes as well as the token
    current then, until a resume of this version retires both."""
    widget = new_widget(agents, widgets)
    agents.publish_version(ALICE, widget.agent_id, widget.agent_version_id)
    widgets.publish(ALICE, widget.id)
    seen = LiveWidget(str(widget.id), widget.organization_id, str(widget.agent_id), str(widget.agent_version_id), widget.config)
    conversations = ConversationService(store, FakeIssuer())
    started = conversations.start(seen, "https://example.com", {"name": "Ada"})
    current, _ = conversations.resume(seen, started.conversation_id, started.resume_token)
    [stored] = [e for e in store.recorder.select_events(started.conversation_id) if e.topic == t.CONVERSATION_RESUMED]
    state = json.loads(stored.state)
    assert state.pop("class_version") == Conversation.Resumed.class_version == 3
    assert state.pop("context") is None and state.pop("added_token_hash") is None
    second_device = "a-token-handed-to-another-device"
    version_2 = {**state, "resume_token_hash": hash_resume_token(second_device), "context": None, "class_version": 2}
    oldest = {k: v for k, v in state.items() if k != "resume_token_hash"}
    store.recorder.insert_events([
        StoredEvent(originator_id=started.conversation_id, originator_version=3, topic=t.CONVERSATION_RESUMED,
                    state=json.dumps(version_2).encode()),
        StoredEvent(originator_id=started.conversation_id, originator_version=4, topic=t.CONVERSATION_RESUMED,
                    state=json.dumps({**oldest, "room": "conv_oldest"}).encode()),
    ])
    events = list(store.events.get(started.conversation_id))
    assert [(type(e), getattr(e, "context", "absent")) for e in events[1:]] == [(Conversation.Resumed, None)] * 3
    conversation = store.repository.get(started.conversation_id)
    assert conversation.version == 4 and conversation.room == "conv_oldest" and len(conversation.rooms) == 4
    assert conversation.holds_token(current) and conversation.holds_token(second_device)
    assert not conversation.holds_token(started.resume_token)
    newest, _ = conversations.resume(seen, started.conversation_id, second_device)
    conversation = store.repository.get(started.conversation_id)
    assert conversation.holds_token(newest) and not conversation.holds_token(current) and not conversation.holds_token(second_device)
    records = [r for r in (describe(e) for e in store.events.get(started.conversation_id)) if r.type == t.CONVERSATION_RESUMED]
    assert [sorted(r.data) for r in records] == [["agent_id", "agent_version_id", "context", "room"]] * 4
    Conversation.Resumed.upcast_v1_v2(kept := {"resume_token_hash": "h", "context": {"page": {}}})
    assert kept == {"resume_token_hash": "h", "context": {"page": {}}}
    Conversation.Resumed.upcast_v2_v3(moved := {"resume_token_hash": "h", "context": None})
    assert moved == {"resume_token_hash": None, "added_token_hash": "h", "context": None}
    Conversation.Resumed.upcast_v2_v3(moved)
    assert moved == {"resume_token_hash": None, "added_token_hash": "h", "context": None}


def test_ends_recorded_before_version_2_read_with_no_actor(store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
    """`conversation.ended` gained `actor` (who erased the conversation, when an erasure ended it): older ends read
    with none, and auditors still see the visitor or LiveKit as their actor."""
    widget = new_widget(agents, widgets)
    seen = LiveWidget(str(widget.id), widget.organization_id, str(widget.agent_id), str(widget.agent_version_id), widget.config)
    conversations = ConversationService(store, FakeIssuer())
    started = conversations.start(seen, "https://example.com", {})
    for version, by in ((2, "room_finished"), (3, "visitor")):
        store.recorder.insert_events([StoredEvent(originator_id=started.conversation_id, originator_version=version,
                                                  topic=t.CONVERSATION_ENDED, state=json.dumps({"by": by, "timestamp": {
                                                      "_type_": "datetime_iso", "_data_": datetime.now(UTC).isoformat()}}).encode())])
    ended = list(store.events.get(started.conversation_id))[1:]
    assert [(e.by, e.actor, describe(e).actor, describe(e).data) for e in ended] == [
        ("room_finished", None, "livekit", {"by": "room_finished"}), ("visitor", None, "visitor", {"by": "visitor"})]
    assert store.repository.get(started.conversation_id).ended_by == "visitor"
    PersonalDataService(store).erase(ALICE, widget.id, started.conversation_id)  # ended already: no end of its own
    names = [type(e).__name__ for e in store.events.get(started.conversation_id)]
    assert names[-1] == "PersonalDataErased" and names.count("Ended") == 2


# --- snapshots ------------------------------------------------------------------------------


def test_a_snapshot_taken_before_still_loads_in_a_new_process(
    data_dir: Path, store: EventStore, agents: AgentService, widgets: WidgetService
) -> None:
    template = new_widget(agents, widgets)
    old_id = plant_v1_widget(store, template.id)
    widgets.change_domains(ALICE, old_id, ["a.example.com"])
    store.take_snapshot(old_id)
    agents.publish_version(ALICE, template.agent_id, template.agent_version_id)
    widgets.publish(ALICE, old_id)
    expected = vars(store.repository.get(old_id)).copy()

    reopened = EventStore(env=sqlite_env(data_dir))
    try:
        [snapshot] = reopened.snapshots.get(old_id)  # type: ignore[union-attr]
        assert snapshot.originator_version == 2
        loaded = reopened.repository.get(old_id)
        assert vars(loaded) == expected
        assert (loaded.version, loaded.published, loaded.domains) == (3, True, ["a.example.com"])
        assert reopened.repository.get(old_id, version=2).domains == ["a.example.com"]
        assert reopened.repository.get(old_id, version=1).domains == ["example.com"]
    finally:
        reopened.close()


def test_a_snapshot_in_the_shape_before_idempotency_keys_still_loads(
    store: EventStore, agents: AgentService, widgets: WidgetService, history: HistoryService
) -> None:
    widget = new_widget(agents, widgets)
    widgets.change_domains(ALICE, widget.id, ["a.example.com"])
    store.take_snapshot(widget.id)
    assert store.snapshots is not None
    [stored] = store.snapshots.recorder.select_events(widget.id)
    old_shape = json.loads(stored.state)
    del old_shape["state"]["request_fingerprint"]
    # A snapshot is replaceable: put the old-shaped one in its place.
    other = uuid.uuid4()
    store.recorder.insert_events([
        StoredEvent(originator_id=other, originator_version=e.originator_version, topic=e.topic,
                    state=v1_created_state(store, widget.id) if e.originator_version == 1 else e.state)
        for e in store.recorder.select_events(widget.id)
    ])
    store.snapshots.recorder.insert_events([
        StoredEvent(originator_id=other, originator_version=stored.originator_version, topic=stored.topic,
                    state=json.dumps(old_shape).encode())
    ])

    loaded = store.repository.get(other)

    assert (loaded.version, loaded.domains) == (2, ["a.example.com"])
    assert getattr(loaded, "request_fingerprint", None) is None
    assert widgets.get_widget(ALICE, other).widget.domains == ["a.example.com"]
    assert [r.type for r in history.widget_history(ALICE, other)] == [t.WIDGET_CREATED, t.WIDGET_DOMAINS_CHANGED]


# --- topics are public names ----------------------------------------------------------------


def one_of_each_event(agents: AgentService, widgets: WidgetService, conversations: ConversationService) -> None:
    """Record at least one event of every public type, through the application services."""
    agent = agents.create_agent(ALICE, "Support")
    first = agents.create_version(ALICE, agent.id, None)
    second = agents.create_version(ALICE, agent.id, "v2")
    agents.publish_version(ALICE, agent.id, first.id)
    agents.publish_version(ALICE, agent.id, second.id)
    config = {"v1": {
        "forms": [{"id": "contact", "title": "Contact", "fields": [{"name": "email", "label": "Email", "type": "email"}]}],
        "feedback": {"enabled": True, "type": "stars"},
    }}
    state = widgets.create_widget(ALICE, agent.id, first.id, ["example.com"], config)
    widget_id = state.widget.id
    widgets.change_domains(ALICE, widget_id, ["a.example.com"])
    widgets.patch_config(ALICE, widget_id, {"v1": {"appearance": {"theme": "dark"}}})
    widgets.pin_version(ALICE, widget_id, second.id)
    widgets.add_identity_key(ALICE, widget_id, SiteKey.generate("ES256", "old").public_jwk)
    widgets.add_identity_key(ALICE, widget_id, SiteKey.generate("EdDSA", "new").public_jwk)
    widgets.remove_identity_key(ALICE, widget_id, "old")
    widgets.change_retention(ALICE, widget_id, 30)
    widgets.publish(ALICE, widget_id)
    live = widgets.get_widget(ALICE, widget_id).widget
    seen = LiveWidget(str(widget_id), live.organization_id, str(live.agent_id), str(live.agent_version_id), live.config)
    started = conversations.start(seen, "https://a.example.com", {"name": "Ada"})
    token, _ = conversations.resume(seen, started.conversation_id, started.resume_token)
    conversations.submit_form(seen, started.conversation_id, token, "contact", {"email": "ada@example.com"})
    conversations.give_feedback(seen, started.conversation_id, token, 5, None)
    conversations.end(seen, started.conversation_id, token)
    PersonalDataService(conversations.store).erase(ALICE, widget_id, started.conversation_id)
    widgets.unpublish(ALICE, widget_id)
    agents.unpublish_version(ALICE, agent.id, first.id)
    widgets.delete(ALICE, widget_id)


def one_of_each_endpoint_event(endpoints: WebhookEndpointService) -> None:
    endpoint_id = endpoints.create_endpoint(ALICE, "https://hooks.example.com/", ["*"]).endpoint.id
    endpoints.change_endpoint(ALICE, endpoint_id, url="https://other.example.com/", events=[t.WIDGET_CREATED], disabled=True)
    endpoints.change_endpoint(ALICE, endpoint_id, disabled=False)
    endpoints.rotate_secret(ALICE, endpoint_id)
    endpoints.delete_endpoint(ALICE, endpoint_id)


def test_every_stored_topic_is_the_public_event_name(store: EventStore, agents: AgentService, widgets: WidgetService,
                                                     data_dir: Path) -> None:
    one_of_each_event(agents, widgets, ConversationService(store, FakeIssuer()))
    settings = Settings(data_dir=str(data_dir))
    db = Database(settings)
    one_of_each_endpoint_event(WebhookEndpointService(store, WebhookSecretTable(db, DeploymentKeys.from_settings(settings))))
    db.close()

    notifications = store.recorder.select_notifications(start=1, limit=1000)
    topics = [n.topic for n in notifications]

    assert set(topics) == public_event_names() == set(CURRENT_CLASSES) == set(t.EVENT_TYPES)
    assert not any(":" in topic for topic in topics), "a Python path was stored as a topic"
    for notification in notifications:
        event = store.mapper.to_domain_event(notification)
        assert type(event) is CURRENT_CLASSES[notification.topic]
        assert describe(event).type == notification.topic


def test_each_public_name_resolves_to_the_current_class() -> None:
    for name, cls in CURRENT_CLASSES.items():
        assert resolve_topic(name) is cls, name
        assert get_topic(cls) == name == cls.TOPIC
    for name, aggregate in AGGREGATE_CLASSES.items():
        assert resolve_topic(name) is aggregate
        assert get_topic(aggregate) == name


def test_a_class_name_is_not_part_of_the_stored_event(store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
    widget = new_widget(agents, widgets)
    for stored in store.recorder.select_events(widget.id):
        state = json.loads(stored.state)
        assert state["originator_topic"] == t.WIDGET
        assert ":" not in stored.topic and "domain.widget" not in json.dumps(state)

"""The application services on real storage: one abstract set of cases, run on each storage by subclassing.

Here on in-memory (POPO) and SQLite storage; tests/integration/test_application_postgres.py runs
the same cases on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.agents import AgentService
from application.commands import Caller, change
from application.conversations import ConversationService, Grant, LiveWidget, RoomTicket
from application.errors import ConflictError, ForbiddenError, IdempotencyKeyReusedError, PreconditionFailedError
from application.store import EventStore
from application.widgets import WidgetService, WidgetState
from domain.agent import AgentVersion
from domain.domains import AllowedDomains
from domain.errors import (
    AgentVersionNotPublishedError,
    NotFoundError,
    ValidationError,
    VersionNotInAgentError,
    WidgetDeletedError,
)
from domain.widget import Widget
from infrastructure.eventstore import sqlite_env

LIVE = LiveWidget(str(uuid.uuid4()), "org_a", str(uuid.uuid4()), str(uuid.uuid4()), {})


class CountingIssuer:
    """A grant issuer that counts its calls (the number of each call is appended to `runs`)."""

    def __init__(self, runs: list[int]) -> None:
        self.runs = runs

    def grant(self, ticket: RoomTicket) -> Grant:
        self.runs.append(len(self.runs) + 1)
        return Grant("ws://localhost:7880", ticket.room, f"token-for-{ticket.identity}", datetime.now(UTC))


ALL_SCOPES = frozenset({"widgets:write", "widgets:read", "audit:read"})
ALICE = Caller("org_a", "alice", ALL_SCOPES)
BOB = Caller("org_b", "bob", ALL_SCOPES)
READER = Caller("org_a", "reader", frozenset({"widgets:read"}))


class ApplicationCases:
    """Cases every storage must pass. Subclasses provide the `store` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[EventStore]:
        raise NotImplementedError

    @pytest.fixture
    def agents(self, store: EventStore) -> AgentService:
        return AgentService(store)

    @pytest.fixture
    def widgets(self, store: EventStore, agents: AgentService) -> WidgetService:
        return WidgetService(store, agents)

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def events_of(store: EventStore, aggregate_id: UUID) -> list[Any]:
        return list(store.events.get(aggregate_id))

    @staticmethod
    def total_events(store: EventStore) -> int:
        return store.recorder.max_notification_id() or 0

    @staticmethod
    def version(agents: AgentService, caller: Caller = ALICE, *, published: bool = False) -> tuple[UUID, AgentVersion]:
        agent = agents.create_agent(caller, "Support bot")
        version = agents.create_version(caller, agent.id, "v1")
        if published:
            version = agents.publish_version(caller, agent.id, version.id)
        return agent.id, version

    def widget(self, agents: AgentService, widgets: WidgetService, *, published: bool = False) -> WidgetState:
        agent_id, version = self.version(agents, published=published)
        state = widgets.create_widget(ALICE, agent_id, version.id, ["example.com"], None)
        return widgets.publish(ALICE, state.widget.id) if published else state

    # -- agents ----------------------------------------------------------------------

    def test_an_agent_is_created_and_read_back_with_its_numbered_versions(self, agents: AgentService) -> None:
        agent = agents.create_agent(ALICE, "Support bot")
        made = [agents.create_version(ALICE, agent.id, label) for label in ("one", None, "three")]
        loaded = agents.get_agent(READER, agent.id)
        assert loaded.name == "Support bot"
        assert loaded.organization_id == "org_a"
        assert {v.id: (v.number, v.label, v.published) for v in loaded.versions.values()} == {
            made[0].id: (1, "one", False),
            made[1].id: (2, None, False),
            made[2].id: (3, "three", False),
        }
        assert loaded.version == 4

    def test_publishing_and_unpublishing_an_agent_version_is_stored_and_idempotent(
        self, store: EventStore, agents: AgentService
    ) -> None:
        agent_id, version = self.version(agents)
        assert agents.publish_version(ALICE, agent_id, version.id).published is True
        count = len(self.events_of(store, agent_id))
        assert agents.publish_version(ALICE, agent_id, version.id).published is True
        assert len(self.events_of(store, agent_id)) == count
        assert agents.get_agent(ALICE, agent_id).has_published_version(version.id) is True
        assert agents.unpublish_version(ALICE, agent_id, version.id).published is False
        assert agents.unpublish_version(ALICE, agent_id, version.id).published is False
        assert len(self.events_of(store, agent_id)) == count + 1
        assert agents.get_agent(ALICE, agent_id).has_published_version(version.id) is False

    def test_every_stored_event_names_the_caller_as_actor(self, store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
        agent_id, version = self.version(agents, published=True)
        state = widgets.create_widget(ALICE, agent_id, version.id, [], None)
        widgets.publish(Caller("org_a", "carol", ALL_SCOPES), state.widget.id)
        assert [e.actor for e in self.events_of(store, agent_id)] == ["alice", "alice", "alice"]
        assert [e.actor for e in self.events_of(store, state.widget.id)] == ["alice", "carol"]

    def test_an_agent_with_more_events_than_the_snapshot_interval_still_loads(self, agents: AgentService) -> None:
        agent = agents.create_agent(ALICE, "Busy bot")
        made = [agents.create_version(ALICE, agent.id, None) for _ in range(30)]
        for version in made[:25]:
            agents.publish_version(ALICE, agent.id, version.id)
        loaded = agents.get_agent(ALICE, agent.id)
        assert loaded.version == 56
        assert [loaded.versions[v.id].number for v in made] == list(range(1, 31))
        assert [loaded.versions[v.id].published for v in made] == [True] * 25 + [False] * 5
        assert isinstance(next(iter(loaded.versions)), UUID)

    # -- widgets ---------------------------------------------------------------------

    def test_a_widget_is_created_with_normalised_domains_and_full_config(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        agent_id, version = self.version(agents)
        state = widgets.create_widget(
            ALICE, agent_id, version.id, ["Example.COM", "example.com", "*.shop.example.org"],
            {"v1": {"appearance": {"theme": "dark"}}},
        )
        loaded = widgets.get_widget(READER, state.widget.id)
        assert loaded.widget.domains == ["example.com", "*.shop.example.org"]
        assert loaded.widget.config["v1"]["appearance"]["theme"] == "dark"
        assert loaded.widget.config["v1"]["branding"]["display_name"] == "Assistant"
        assert (loaded.widget.agent_id, loaded.widget.agent_version_id) == (agent_id, version.id)
        assert loaded.widget.published is False and loaded.live is False
        assert loaded.widget.version == 1
        assert len(self.events_of(store, state.widget.id)) == 1

    def test_invalid_widget_input_lists_every_bad_field_and_stores_nothing(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        agent_id, version = self.version(agents)
        before = self.total_events(store)
        with pytest.raises(ValidationError) as refused:
            widgets.create_widget(
                ALICE, agent_id, version.id, ["com", "ok.example.com", "a/b"],
                {"v1": {"appearance": {"primary_color": "red"}}},
            )
        assert {e.field for e in refused.value.errors} == {"domains[0]", "domains[2]", "config.v1.appearance.primary_color"}
        assert self.total_events(store) == before

    def test_a_widget_cannot_pin_a_version_of_another_organizations_agent(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        agent_id, version = self.version(agents, published=True)
        bobs_agent_id, bobs_version = self.version(agents, BOB, published=True)
        with pytest.raises(VersionNotInAgentError) as refused:
            widgets.create_widget(ALICE, agent_id, bobs_version.id, [], None)
        assert refused.value.code == "version_not_in_agent"
        state = widgets.create_widget(ALICE, agent_id, version.id, [], None)
        with pytest.raises(VersionNotInAgentError):
            widgets.pin_version(ALICE, state.widget.id, bobs_version.id)
        with pytest.raises(NotFoundError):
            widgets.pin_version(ALICE, state.widget.id, bobs_version.id, agent_id=bobs_agent_id)
        with pytest.raises(NotFoundError):
            widgets.create_widget(ALICE, bobs_agent_id, bobs_version.id, [], None)
        assert widgets.get_widget(ALICE, state.widget.id).widget.agent_version_id == version.id
        assert len(self.events_of(store, state.widget.id)) == 1

    def test_pinning_a_version_of_the_same_agent_records_it(self, agents: AgentService, widgets: WidgetService) -> None:
        state = self.widget(agents, widgets)
        second = agents.create_version(ALICE, state.widget.agent_id, "v2")
        pinned = widgets.pin_version(ALICE, state.widget.id, second.id)
        assert pinned.widget.agent_version_id == second.id
        assert widgets.get_widget(ALICE, state.widget.id).widget.agent_version_id == second.id

    def test_another_organizations_ids_are_not_found(self, store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
        state = self.widget(agents, widgets, published=True)
        widget_id, agent_id, version_id = state.widget.id, state.widget.agent_id, state.widget.agent_version_id
        before = self.total_events(store)
        attempts = [
            lambda: widgets.get_widget(BOB, widget_id),
            lambda: widgets.get_widget(BOB, widget_id, version=1),
            lambda: widgets.change_domains(BOB, widget_id, ["bob.example.com"]),
            lambda: widgets.pin_version(BOB, widget_id, version_id),
            lambda: widgets.replace_config(BOB, widget_id, {}),
            lambda: widgets.patch_config(BOB, widget_id, {"v1": {"appearance": {"theme": "dark"}}}),
            lambda: widgets.publish(BOB, widget_id),
            lambda: widgets.unpublish(BOB, widget_id),
            lambda: widgets.delete(BOB, widget_id),
            lambda: agents.get_agent(BOB, agent_id),
            lambda: agents.create_version(BOB, agent_id, None),
            lambda: agents.publish_version(BOB, agent_id, version_id),
            lambda: agents.unpublish_version(BOB, agent_id, version_id),
            lambda: widgets.create_widget(BOB, agent_id, version_id, [], None),
        ]
        for attempt in attempts:
            with pytest.raises(NotFoundError):
                attempt()
        assert self.total_events(store) == before
        assert widgets.get_widget(ALICE, widget_id).live is True

    def test_an_unknown_id_is_not_found(self, agents: AgentService, widgets: WidgetService) -> None:
        with pytest.raises(NotFoundError):
            widgets.get_widget(ALICE, uuid.uuid4())
        with pytest.raises(NotFoundError):
            agents.get_agent(ALICE, uuid.uuid4())
        agent_id, _ = self.version(agents)
        with pytest.raises(NotFoundError):
            agents.publish_version(ALICE, agent_id, uuid.uuid4())

    def test_an_agent_id_is_not_a_widget_id(self, agents: AgentService, widgets: WidgetService) -> None:
        agent_id, _ = self.version(agents)
        with pytest.raises(NotFoundError):
            widgets.get_widget(ALICE, agent_id)

    def test_a_widget_goes_live_only_when_it_and_its_agent_version_are_published(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets)
        widget_id, agent_id, version_id = state.widget.id, state.widget.agent_id, state.widget.agent_version_id
        with pytest.raises(AgentVersionNotPublishedError) as refused:
            widgets.publish(ALICE, widget_id)
        assert refused.value.code == "agent_version_not_published"
        assert len(self.events_of(store, widget_id)) == 1
        agents.publish_version(ALICE, agent_id, version_id)
        published = widgets.publish(ALICE, widget_id)
        assert published.widget.published is True and published.live is True
        agents.unpublish_version(ALICE, agent_id, version_id)
        stopped = widgets.get_widget(ALICE, widget_id)
        assert stopped.widget.published is True and stopped.live is False
        assert widgets.unpublish(ALICE, widget_id).widget.published is False

    def test_a_published_widget_refuses_to_pin_an_unpublished_version(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets, published=True)
        draft = agents.create_version(ALICE, state.widget.agent_id, "draft")
        with pytest.raises(AgentVersionNotPublishedError):
            widgets.pin_version(ALICE, state.widget.id, draft.id)
        assert widgets.get_widget(ALICE, state.widget.id).widget.agent_version_id == state.widget.agent_version_id
        agents.publish_version(ALICE, state.widget.agent_id, draft.id)
        assert widgets.pin_version(ALICE, state.widget.id, draft.id).live is True

    def test_commands_that_change_nothing_record_nothing(self, store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
        state = self.widget(agents, widgets, published=True)
        widget_id = state.widget.id
        count = len(self.events_of(store, widget_id))
        same_domains = widgets.change_domains(ALICE, widget_id, ["EXAMPLE.com"])
        same_version = widgets.pin_version(ALICE, widget_id, state.widget.agent_version_id)
        same_config = widgets.replace_config(ALICE, widget_id, {"v1": {"appearance": {"theme": "auto"}}})
        empty_patch = widgets.patch_config(ALICE, widget_id, {})
        again_published = widgets.publish(ALICE, widget_id)
        for answer in (same_domains, same_version, same_config, empty_patch, again_published):
            assert answer.widget.version == state.widget.version
        assert len(self.events_of(store, widget_id)) == count
        widgets.unpublish(ALICE, widget_id)
        widgets.unpublish(ALICE, widget_id)
        assert len(self.events_of(store, widget_id)) == count + 1

    def test_config_is_replaced_by_put_and_merged_by_patch(self, agents: AgentService, widgets: WidgetService) -> None:
        state = self.widget(agents, widgets)
        widget_id = state.widget.id
        widgets.replace_config(ALICE, widget_id, {"v1": {"appearance": {"theme": "dark"}, "locale": "de"}})
        widgets.patch_config(ALICE, widget_id, {"v1": {"appearance": {"primary_color": "#000000"}, "locale": None}})
        config = widgets.get_widget(ALICE, widget_id).widget.config["v1"]
        assert config["appearance"]["theme"] == "dark"
        assert config["appearance"]["primary_color"] == "#000000"
        assert config["locale"] is None
        widgets.replace_config(ALICE, widget_id, {"v1": {"voice": {"enabled": False}}})
        config = widgets.get_widget(ALICE, widget_id).widget.config["v1"]
        assert config["appearance"]["theme"] == "auto"
        assert config["voice"]["enabled"] is False

    def test_a_stale_expected_version_is_refused_and_nothing_is_recorded(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets)
        widget_id = state.widget.id
        changed = widgets.change_domains(ALICE, widget_id, ["a.example.com"], expected_version=1)
        assert changed.widget.version == 2
        with pytest.raises(PreconditionFailedError) as refused:
            widgets.change_domains(ALICE, widget_id, ["b.example.com"], expected_version=1)
        assert (refused.value.expected, refused.value.actual) == (1, 2)
        with pytest.raises(PreconditionFailedError):
            widgets.publish(ALICE, widget_id, expected_version=3)
        with pytest.raises(PreconditionFailedError):
            widgets.delete(ALICE, widget_id, expected_version=1)
        assert widgets.get_widget(ALICE, widget_id).widget.domains == ["a.example.com"]
        assert len(self.events_of(store, widget_id)) == 2

    def test_a_write_that_loses_the_race_under_an_expected_version_is_a_conflict(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets)
        widget_id = state.widget.id
        read_before_the_winner_wrote: Widget = store.repository.get(widget_id)
        widgets.change_domains(ALICE, widget_id, ["winner.example.com"])
        loser = AllowedDomains.parse(["loser.example.com"])
        with pytest.raises(ConflictError):
            change(store, lambda: read_before_the_winner_wrote, lambda w: w.change_domains(loser, "bob"), expected_version=1)
        assert widgets.get_widget(ALICE, widget_id).widget.domains == ["winner.example.com"]
        assert len(self.events_of(store, widget_id)) == 2

    def test_a_write_without_expected_version_that_loses_the_race_is_retried_on_fresh_state(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets)
        widget_id = state.widget.id
        stale: list[Widget] = [store.repository.get(widget_id)]
        widgets.replace_config(ALICE, widget_id, {"v1": {"appearance": {"theme": "dark"}}})

        def load() -> Widget:
            return stale.pop() if stale else store.repository.get(widget_id)

        loser = AllowedDomains.parse(["second.example.com"])
        changed = change(store, load, lambda w: w.change_domains(loser, "bob"), expected_version=None)
        assert changed.version == 3
        final = widgets.get_widget(ALICE, widget_id).widget
        assert final.domains == ["second.example.com"]
        assert final.config["v1"]["appearance"]["theme"] == "dark"

    def test_an_agent_command_with_a_stale_expected_version_is_refused(self, agents: AgentService) -> None:
        agent_id, version = self.version(agents)
        with pytest.raises(PreconditionFailedError):
            agents.publish_version(ALICE, agent_id, version.id, expected_version=1)
        assert agents.publish_version(ALICE, agent_id, version.id, expected_version=2).published is True

    def test_a_deleted_widget_is_gone_and_refuses_every_command(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets, published=True)
        widget_id = state.widget.id
        widgets.delete(ALICE, widget_id)
        with pytest.raises(NotFoundError):
            widgets.get_widget(ALICE, widget_id)
        count = len(self.events_of(store, widget_id))
        other_agent_id, other_version = self.version(agents)
        for attempt in (
            lambda: widgets.change_domains(ALICE, widget_id, ["a.example.com"]),
            lambda: widgets.pin_version(ALICE, widget_id, state.widget.agent_version_id),
            lambda: widgets.pin_version(ALICE, widget_id, other_version.id, agent_id=other_agent_id),
            lambda: widgets.pin_version(ALICE, widget_id, uuid.uuid4()),
            lambda: widgets.replace_config(ALICE, widget_id, {}),
            lambda: widgets.patch_config(ALICE, widget_id, {"v1": {"locale": "en"}}),
            lambda: widgets.publish(ALICE, widget_id),
            lambda: widgets.unpublish(ALICE, widget_id),
            lambda: widgets.delete(ALICE, widget_id),
        ):
            with pytest.raises(WidgetDeletedError):
                attempt()
        assert len(self.events_of(store, widget_id)) == count

    def test_an_earlier_version_reads_as_it_stood_then(self, agents: AgentService, widgets: WidgetService) -> None:
        state = self.widget(agents, widgets)
        widget_id = state.widget.id
        widgets.change_domains(ALICE, widget_id, ["a.example.com"])
        widgets.delete(ALICE, widget_id)
        first = widgets.get_widget(ALICE, widget_id, version=1)
        assert (first.widget.version, first.widget.domains, first.widget.deleted) == (1, ["example.com"], False)
        assert widgets.get_widget(ALICE, widget_id, version=2).widget.domains == ["a.example.com"]
        assert widgets.get_widget(ALICE, widget_id, version=3).widget.deleted is True
        with pytest.raises(NotFoundError):
            widgets.get_widget(ALICE, widget_id, version=4)

    def test_a_widget_with_more_events_than_the_snapshot_interval_replays_to_its_state(
        self, agents: AgentService, widgets: WidgetService
    ) -> None:
        state = self.widget(agents, widgets)
        widget_id = state.widget.id
        for i in range(55):
            widgets.change_domains(ALICE, widget_id, [f"site{i}.example.com"])
        loaded = widgets.get_widget(ALICE, widget_id)
        assert loaded.widget.version == 56
        assert loaded.widget.domains == ["site54.example.com"]
        assert widgets.get_widget(ALICE, widget_id, version=51).widget.domains == ["site49.example.com"]

    def test_a_caller_without_the_scope_is_refused(self, store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
        state = self.widget(agents, widgets)
        before = self.total_events(store)
        with pytest.raises(ForbiddenError):
            agents.create_agent(READER, "bot")
        with pytest.raises(ForbiddenError):
            widgets.change_domains(READER, state.widget.id, ["a.example.com"])
        with pytest.raises(ForbiddenError):
            widgets.get_widget(Caller("org_a", "writer", frozenset({"widgets:write"})), state.widget.id)
        assert self.total_events(store) == before

    # -- idempotent creation --------------------------------------------------------

    def test_a_widget_create_retried_with_the_same_key_and_body_creates_it_once(
        self, store: EventStore, agents: AgentService, widgets: WidgetService
    ) -> None:
        agent_id, version = self.version(agents)
        body = (agent_id, version.id, ["example.com"], {"v1": {"appearance": {"theme": "dark"}}})
        first = widgets.create_widget(ALICE, *body, idempotency_key="create-1")
        before = self.total_events(store)
        again = widgets.create_widget(ALICE, *body, idempotency_key="create-1")
        assert again.widget.id == first.widget.id
        assert self.total_events(store) == before
        # The same meaning written differently is the same request.
        normalised = widgets.create_widget(
            ALICE, agent_id, version.id, ["EXAMPLE.com"], {"v1": {"appearance": {"theme": "dark"}, "locale": None}},
            idempotency_key="create-1",
        )
        assert normalised.widget.id == first.widget.id
        assert self.total_events(store) == before

    def test_a_widget_create_retried_after_changes_answers_the_widget_as_created(
        self, agents: AgentService, widgets: WidgetService
    ) -> None:
        agent_id, version = self.version(agents)
        first = widgets.create_widget(ALICE, agent_id, version.id, ["example.com"], None, idempotency_key="k")
        widgets.change_domains(ALICE, first.widget.id, ["changed.example.com"])
        again = widgets.create_widget(ALICE, agent_id, version.id, ["example.com"], None, idempotency_key="k")
        assert again.widget.id == first.widget.id

    def test_reusing_a_key_with_another_body_is_refused(self, store: EventStore, agents: AgentService, widgets: WidgetService) -> None:
        agent_id, version = self.version(agents)
        widgets.create_widget(ALICE, agent_id, version.id, ["example.com"], None, idempotency_key="create-2")
        agents.create_agent(ALICE, "bot", idempotency_key="agent-1")
        before = self.total_events(store)
        with pytest.raises(IdempotencyKeyReusedError):
            widgets.create_widget(ALICE, agent_id, version.id, ["other.example.com"], None, idempotency_key="create-2")
        with pytest.raises(IdempotencyKeyReusedError):
            agents.create_agent(ALICE, "another bot", idempotency_key="agent-1")
        assert self.total_events(store) == before

    def test_agent_and_version_creates_are_idempotent_too(self, store: EventStore, agents: AgentService) -> None:
        agent = agents.create_agent(ALICE, "bot", idempotency_key="a")
        assert agents.create_agent(ALICE, "bot", idempotency_key="a").id == agent.id
        version = agents.create_version(ALICE, agent.id, "v1", idempotency_key="v")
        before = self.total_events(store)
        again = agents.create_version(ALICE, agent.id, "v1", idempotency_key="v")
        assert (again.id, again.number) == (version.id, 1)
        assert self.total_events(store) == before
        with pytest.raises(IdempotencyKeyReusedError):
            agents.create_version(ALICE, agent.id, "v2", idempotency_key="v")
        assert len(agents.get_agent(ALICE, agent.id).versions) == 1

    def test_the_same_key_in_two_organizations_creates_two_widgets(self, agents: AgentService, widgets: WidgetService) -> None:
        alice_agent, alice_version = self.version(agents, ALICE)
        bob_agent, bob_version = self.version(agents, BOB)
        alices = widgets.create_widget(ALICE, alice_agent, alice_version.id, [], None, idempotency_key="same")
        bobs = widgets.create_widget(BOB, bob_agent, bob_version.id, [], None, idempotency_key="same")
        assert alices.widget.id != bobs.widget.id
        assert widgets.get_widget(ALICE, alices.widget.id).widget.organization_id == "org_a"
        assert widgets.get_widget(BOB, bobs.widget.id).widget.organization_id == "org_b"

    # -- work done during a save (`meanwhile`) ----------------------------------------

    def test_a_save_runs_its_meanwhile_exactly_once_and_stores_the_event(self, store: EventStore) -> None:
        """Where the recorder overlaps it with the round trip (PostgreSQL) and where it runs it first."""
        runs: list[int] = []
        conversations = ConversationService(store, CountingIssuer(runs))
        before = self.total_events(store)

        started = conversations.start(LIVE, "https://example.com", {"name": "Ada"})

        assert runs == [1]
        assert started.grant.room == store.repository.get(started.conversation_id).room
        assert self.total_events(store) == before + 1

    def test_when_meanwhile_fails_the_caller_gets_its_error_and_the_store_serves_the_next_save(
        self, store: EventStore
    ) -> None:
        class Broken(CountingIssuer):
            def grant(self, ticket: RoomTicket) -> Grant:
                super().grant(ticket)
                raise RuntimeError("signing failed")

        runs: list[int] = []
        with pytest.raises(RuntimeError, match="signing failed"):
            ConversationService(store, Broken(runs)).start(LIVE, "https://example.com", {})
        assert runs == [1]
        # An overlapping recorder had sent the event before the failure; it read the answer all the same,
        # so the connection it returned to the pool serves the next save.
        before = self.total_events(store)
        started = ConversationService(store, CountingIssuer(runs)).start(LIVE, "https://example.com", {})
        assert runs == [1, 2]
        assert self.total_events(store) == before + 1
        assert store.repository.get(started.conversation_id).version == 1


class TestApplicationInMemory(ApplicationCases):
    @pytest.fixture
    def store(self) -> Iterator[EventStore]:
        store = EventStore(env={})
        yield store
        store.close()


class TestApplicationOnSQLite(ApplicationCases):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = EventStore(env=sqlite_env(tmp_path / "var"))
        yield store
        store.close()

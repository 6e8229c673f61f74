"""Replay equals state: whatever commands a widget has taken, its stored events rebuild exactly the live widget.

A stateful machine drives one Widget with random commands (refusals included),
saves it to an in-memory event store after each, and checks three readings
against the live aggregate and a simple model: the events replayed by hand,
the store's repository (through the transcoder, and through snapshots past
50 events), and the store's reading of every earlier version.
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from application.store import EventStore
from domain.config import config_to_builtins, parse_config
from domain.domains import AllowedDomains
from domain.errors import AgentVersionNotPublishedError, DomainError, WidgetDeletedError
from domain.widget import Widget

AGENTS = [uuid.UUID(int=0xA0 + i) for i in range(2)]
VERSIONS = {agent: [uuid.UUID(int=(0xA0 + i) * 16 + n) for n in range(3)] for i, agent in enumerate(AGENTS)}
PINS = [(agent, version) for agent, versions in VERSIONS.items() for version in versions]
ENTRIES = ["example.com", "a.example.com", "*.shop.example.org", "localhost:3000", "http://example.com",
           "[::1]:8080", "127.0.0.1", "Example.COM", "bücher.example"]

domain_lists = st.lists(st.sampled_from(ENTRIES), max_size=4)
configs = st.fixed_dictionaries(
    {},
    optional={
        "appearance": st.fixed_dictionaries({}, optional={
            "theme": st.sampled_from(["light", "dark", "auto"]),
            "primary_color": st.sampled_from(["#2563EB", "#000000", "#ffffff"]),
            "position": st.sampled_from(["bottom-right", "bottom-left"]),
        }),
        "voice": st.fixed_dictionaries({}, optional={"enabled": st.booleans()}),
        "locale": st.sampled_from([None, "en", "pt-BR"]),
        "quick_actions": st.lists(
            st.fixed_dictionaries({"label": st.sampled_from(["Hours", "Pricing"]), "message": st.just("Tell me")}),
            max_size=2,
        ),
    },
).map(lambda v1: {"v1": v1})
actors = st.sampled_from(["alice", "bob", "carol"])


def state_of(widget: Widget) -> dict[str, Any]:
    return {
        "id": widget.id,
        "version": widget.version,
        "organization_id": widget.organization_id,
        "agent_id": widget.agent_id,
        "agent_version_id": widget.agent_version_id,
        "domains": list(widget.domains),
        "config": widget.config,
        "published": widget.published,
        "deleted": widget.deleted,
    }


class WidgetHistory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = EventStore(env={})
        self.events: list[Any] = []
        self.states: dict[int, dict[str, Any]] = {}
        self.widget: Widget
        # The model: what the widget should be, kept without the aggregate's code.
        self.expected: dict[str, Any] = {}

    @initialize(domains=domain_lists, config=configs, pin=st.sampled_from(PINS), actor=actors)
    def start(self, domains: list[str], config: dict[str, Any], pin: tuple[UUID, UUID], actor: str) -> None:
        allowed, parsed = AllowedDomains.parse(domains), parse_config(config)
        self.widget = Widget.start("org_a", pin[0], pin[1], allowed, parsed, actor)
        self.expected = {
            "version": 0, "agent_id": pin[0], "agent_version_id": pin[1], "domains": list(allowed.entries),
            "config": config_to_builtins(parsed), "published": False, "deleted": False,
        }
        self.record(changed=True, actor=actor)

    def record(self, changed: bool, actor: str) -> None:
        pending = list(self.widget.pending_events)
        assert len(pending) == (1 if changed else 0)
        assert all(event.actor == actor for event in pending)
        self.events += pending
        self.store.save(self.widget)
        self.expected["version"] += 1 if changed else 0
        self.states[self.widget.version] = state_of(self.widget)

    def attempt(self, command: Any, actor: str, refusal: type[DomainError] | None = None) -> None:
        try:
            changed = command()
        except DomainError as error:
            assert refusal is not None and isinstance(error, refusal), error
            assert self.widget.pending_events == []
            return
        assert refusal is None, f"expected {refusal.__name__}"
        self.record(changed, actor)

    @rule(domains=domain_lists, actor=actors)
    def change_domains(self, domains: list[str], actor: str) -> None:
        allowed = AllowedDomains.parse(domains)
        deleted = self.expected["deleted"]
        self.attempt(lambda: self.widget.change_domains(allowed, actor), actor, WidgetDeletedError if deleted else None)
        if not deleted and set(allowed.entries) != set(self.expected["domains"]):  # a new order alone changes nothing
            self.expected["domains"] = list(allowed.entries)

    @rule(pin=st.sampled_from(PINS), version_published=st.booleans(), actor=actors)
    def pin_version(self, pin: tuple[UUID, UUID], version_published: bool, actor: str) -> None:
        e = self.expected
        same = (pin[0], pin[1]) == (e["agent_id"], e["agent_version_id"])
        refusal: type[DomainError] | None = None
        if e["deleted"]:
            refusal = WidgetDeletedError
        elif e["published"] and not version_published and not same:
            refusal = AgentVersionNotPublishedError
        self.attempt(lambda: self.widget.pin_version(pin[0], pin[1], version_published, actor), actor, refusal)
        if refusal is None:
            e["agent_id"], e["agent_version_id"] = pin

    @rule(config=configs, actor=actors)
    def change_config(self, config: dict[str, Any], actor: str) -> None:
        parsed = parse_config(config)
        deleted = self.expected["deleted"]
        self.attempt(lambda: self.widget.change_config(parsed, actor), actor, WidgetDeletedError if deleted else None)
        if not deleted:
            self.expected["config"] = config_to_builtins(parsed)

    @rule(version_published=st.booleans(), actor=actors)
    def publish(self, version_published: bool, actor: str) -> None:
        e = self.expected
        refusal = WidgetDeletedError if e["deleted"] else None if version_published else AgentVersionNotPublishedError
        self.attempt(lambda: self.widget.publish(version_published, actor), actor, refusal)
        if refusal is None:
            e["published"] = True

    @rule(actor=actors)
    def unpublish(self, actor: str) -> None:
        deleted = self.expected["deleted"]
        self.attempt(lambda: self.widget.unpublish(actor), actor, WidgetDeletedError if deleted else None)
        if not deleted:
            self.expected["published"] = False

    @rule(actor=actors, now=st.integers(0, 19))
    def delete(self, actor: str, now: int) -> None:
        if now:  # rarely, so that most histories grow long enough to be snapshotted
            return
        deleted = self.expected["deleted"]
        self.attempt(lambda: self.widget.delete(actor) or True, actor, WidgetDeletedError if deleted else None)
        self.expected["deleted"], self.expected["published"] = True, False

    @invariant()
    def live_widget_matches_the_model(self) -> None:
        live = state_of(self.widget)
        assert {k: live[k] for k in self.expected} == self.expected

    @invariant()
    def replaying_the_events_gives_the_live_state(self) -> None:
        rebuilt: Widget | None = None
        for event in self.events:
            rebuilt = event.mutate(rebuilt)
        assert rebuilt is not None
        assert state_of(rebuilt) == state_of(self.widget)
        assert [e.originator_version for e in self.events] == list(range(1, self.widget.version + 1))

    # Reading the store back is a step of its own, so that long histories stay quick to run.

    @rule()
    def the_store_gives_the_live_state(self) -> None:
        assert state_of(self.store.repository.get(self.widget.id)) == state_of(self.widget)

    @rule(data=st.data())
    def the_store_gives_an_earlier_version_as_it_was(self, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(sorted(self.states)), label="version")
        assert state_of(self.store.repository.get(self.widget.id, version=version)) == self.states[version]

    def teardown(self) -> None:
        try:
            if hasattr(self, "widget"):
                self.the_store_gives_the_live_state()
        finally:
            self.store.close()


WidgetHistory.TestCase.settings = settings(
    max_examples=40, stateful_step_count=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestWidgetReplay = WidgetHistory.TestCase

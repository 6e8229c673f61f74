"""The widget read model's logic on in-memory storage: events in, rows out, whatever the page boundaries.

`Admin` and `random_history` drive the real application services; the integration
tests of the projections reuse them on PostgreSQL, Redis and SQLite.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest

from application.agents import AgentService
from application.commands import Caller
from application.errors import ConflictError
from application.store import EventStore
from application.widgets import WidgetService
from domain import event_types
from domain.config import parse_config
from domain.domains import AllowedDomains
from domain.errors import DomainError, NotFoundError
from domain.widget import Widget
from projections.public_views import APPLIED, STALE, InProcessPublicView
from projections.runner import ProjectionRunner
from projections.widget_rows import Changes, WidgetRow, WidgetRowsProjection, touched_ids

ALL_SCOPES = frozenset({"widgets:write", "widgets:read", "audit:read"})
DOMAIN_POOL = ("example.com", "shop.example.com", "*.eu.example.org", "localhost:3000", "help.example.net")


@dataclass
class Admin:
    """One organization's admin, issuing commands through the real application services."""

    store: EventStore
    organization_id: str = "org_a"
    actor: str = "alice"
    created: list[UUID] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.caller = Caller(self.organization_id, self.actor, ALL_SCOPES)
        self.agents = AgentService(self.store)
        self.widgets = WidgetService(self.store, self.agents)

    def agent(self) -> UUID:
        return self.agents.create_agent(self.caller, "Support bot").id

    def version(self, agent_id: UUID | None = None, *, published: bool = True) -> tuple[UUID, UUID]:
        """A new version (of a new agent unless one is given); returns (agent id, version id)."""
        agent_id = agent_id or self.agent()
        version = self.agents.create_version(self.caller, agent_id, None)
        if published:
            self.agents.publish_version(self.caller, agent_id, version.id)
        return agent_id, version.id

    def widget(
        self,
        agent_version: tuple[UUID, UUID] | None = None,
        *,
        domains: list[str] | None = None,
        config: Any = None,
        published: bool = False,
    ) -> UUID:
        agent_id, version_id = agent_version or self.version()
        state = self.widgets.create_widget(self.caller, agent_id, version_id, domains or ["example.com"], config)
        self.created.append(state.widget.id)
        if published:
            self.widgets.publish(self.caller, state.widget.id)
        return state.widget.id

    def change_domains(self, widget_id: UUID, domains: list[str]) -> None:
        self.widgets.change_domains(self.caller, widget_id, domains)

    def pin(self, widget_id: UUID, version_id: UUID, agent_id: UUID | None = None) -> None:
        self.widgets.pin_version(self.caller, widget_id, version_id, agent_id)

    def configure(self, widget_id: UUID, config: Any) -> None:
        self.widgets.replace_config(self.caller, widget_id, config)

    def publish(self, widget_id: UUID) -> None:
        self.widgets.publish(self.caller, widget_id)

    def unpublish(self, widget_id: UUID) -> None:
        self.widgets.unpublish(self.caller, widget_id)

    def delete(self, widget_id: UUID) -> None:
        self.widgets.delete(self.caller, widget_id)

    def publish_version(self, agent_version: tuple[UUID, UUID]) -> None:
        self.agents.publish_version(self.caller, *agent_version)

    def unpublish_version(self, agent_version: tuple[UUID, UUID]) -> None:
        self.agents.unpublish_version(self.caller, *agent_version)

    def expected_row(self, widget_id: UUID) -> WidgetRow:
        """The row the read model must hold, computed from the aggregates themselves."""
        widget = self.widgets.load(self.caller, widget_id)
        return WidgetRow(
            id=str(widget.id), organization_id=widget.organization_id, agent_id=str(widget.agent_id),
            agent_version_id=str(widget.agent_version_id), domains=list(widget.domains), config=widget.config,
            published=widget.published, deleted=widget.deleted, live=self.widgets.state(self.caller, widget).live,
            created_at=widget.created_on, updated_at=widget.modified_on, version=widget.version,
        )


def config_named(name: str) -> dict[str, Any]:
    return {"v1": {"branding": {"display_name": name}}}


def random_history(
    admin: Admin,
    rng: random.Random,
    commands: int,
    *,
    widgets: int = 50,
    agents: int = 5,
    versions: int = 3,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """A seeded stream of admin commands over a fleet of widgets; returns the commands issued.

    Commands the domain refuses (publishing on an unpublished version, touching a
    deleted widget) are part of the stream: they must record nothing.
    """
    fleet = [admin.agent() for _ in range(agents)]
    agent_versions = [admin.version(a, published=rng.random() < 0.8) for a in fleet for _ in range(versions)]
    by_agent = {a: [av for av in agent_versions if av[0] == a] for a in fleet}
    for _ in range(widgets):
        admin.widget(rng.choice(agent_versions), domains=rng.sample(DOMAIN_POOL, rng.randint(0, 3)))
    issued = 0
    for issued in range(1, commands + 1):
        if should_stop():
            break
        widget_id = rng.choice(admin.created)
        roll = rng.random()
        try:
            if roll < 0.15:
                admin.change_domains(widget_id, rng.sample(DOMAIN_POOL, rng.randint(0, 4)))
            elif roll < 0.30:
                agent_id, version_id = rng.choice(agent_versions)
                admin.pin(widget_id, version_id, agent_id)
            elif roll < 0.45:
                admin.configure(widget_id, config_named(f"Bot {rng.randrange(1000)}"))
            elif roll < 0.60:
                admin.publish(widget_id)
            elif roll < 0.70:
                admin.unpublish(widget_id)
            elif roll < 0.82:
                admin.publish_version(rng.choice(agent_versions))
            elif roll < 0.94:
                admin.unpublish_version(rng.choice(agent_versions))
            elif roll < 0.96:
                admin.widget(rng.choice(by_agent[rng.choice(fleet)]), domains=rng.sample(DOMAIN_POOL, 2))
            elif roll < 0.975:
                admin.delete(widget_id)
            else:
                admin.configure(widget_id, {})
        except (DomainError, NotFoundError, ConflictError):
            pass
    return issued


# ---- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[EventStore]:
    store = EventStore(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield store
    store.close()


@pytest.fixture
def admin(store: EventStore) -> Admin:
    return Admin(store)


def project(store: EventStore, page_size: int = 500, view: InProcessPublicView | None = None) -> InProcessPublicView:
    view = view or InProcessPublicView()
    ProjectionRunner("test", store, view, page_size=page_size).catch_up()
    return view


def rows_of(view: InProcessPublicView) -> dict[str, WidgetRow]:
    return {widget_id: entry.row for widget_id, entry in view.entries.items()}


def events_of(store: EventStore) -> list[Any]:
    return [store.mapper.to_domain_event(n) for n in store.recorder.select_notifications(start=1, limit=1_000_000)]


def assert_matches_aggregates(admin: Admin, view: InProcessPublicView) -> None:
    for widget_id in admin.created:
        expected = admin.expected_row(widget_id)
        if expected.deleted:
            assert view.get(str(widget_id)) is None
        else:
            assert rows_of(view)[str(widget_id)] == expected


# ---- the pieces -------------------------------------------------------------------------


def test_touched_ids_name_every_widget_and_version_a_page_reads(admin: Admin, store: EventStore) -> None:
    agent_version = admin.version()
    widget_id = admin.widget(agent_version)
    other_version = admin.version(agent_version[0])
    admin.pin(widget_id, other_version[1])

    widgets, versions = touched_ids(events_of(store))

    assert widgets == {str(widget_id)}
    assert versions == {str(agent_version[1]), str(other_version[1])}


def test_pinning_and_unpinning_the_same_pair_in_one_page_cancel_out() -> None:
    changes = Changes()
    changes.pin("v1", "w1")
    changes.unpin("v1", "w1")
    assert (changes.pinned, changes.unpinned) == (set(), {("v1", "w1")})
    changes.pin("v1", "w1")
    assert (changes.pinned, changes.unpinned) == ({("v1", "w1")}, set())


def test_events_outside_the_read_model_change_nothing(admin: Admin, store: EventStore) -> None:
    admin.agent()
    changes = WidgetRowsProjection().apply(events_of(store), InProcessPublicView())
    assert changes == Changes()


def test_the_projection_subscribes_to_every_widget_event_type() -> None:
    widget_topics = {value for name, value in vars(event_types).items() if name.startswith("WIDGET_")}
    assert widget_topics <= set(WidgetRowsProjection.topics)
    assert {event_types.AGENT_VERSION_PUBLISHED, event_types.AGENT_VERSION_UNPUBLISHED} <= set(WidgetRowsProjection.topics)


# ---- rows follow the aggregates ----------------------------------------------------------


def test_a_new_widget_is_a_row_that_is_not_live_until_published(admin: Admin, store: EventStore) -> None:
    widget_id = admin.widget(domains=["example.com"], config=config_named("Ada"))
    view = project(store)
    row = rows_of(view)[str(widget_id)]
    assert (row.published, row.live, row.version) == (False, False, 1)
    assert row.domains == ["example.com"]
    assert row.config["v1"]["branding"]["display_name"] == "Ada"

    admin.publish(widget_id)
    assert rows_of(project(store, view=view))[str(widget_id)].live


def test_a_version_unpublished_in_the_same_page_as_a_widget_is_pinned_to_it_leaves_the_widget_not_live(
    admin: Admin, store: EventStore
) -> None:
    first = admin.version()
    widget_id = admin.widget(first, published=True)
    second = admin.version(first[0])
    admin.pin(widget_id, second[1])
    admin.unpublish_version(second)

    view = project(store)  # one page holds everything

    assert not rows_of(view)[str(widget_id)].live
    assert view.pinned_widgets(str(second[1])) == {str(widget_id)}
    assert view.pinned_widgets(str(first[1])) == set()


def test_a_widget_pinned_away_and_back_within_one_page_is_pinned_once(admin: Admin, store: EventStore) -> None:
    first = admin.version()
    widget_id = admin.widget(first)
    view = project(store)
    second = admin.version(first[0])
    admin.pin(widget_id, second[1])
    admin.pin(widget_id, first[1])

    project(store, view=view)

    assert view.pinned_widgets(str(first[1])) == {str(widget_id)}
    assert view.pinned_widgets(str(second[1])) == set()


def test_a_deleted_widget_is_not_revived_when_its_version_is_published_again(admin: Admin, store: EventStore) -> None:
    agent_version = admin.version()
    widget_id = admin.widget(agent_version, published=True)
    admin.delete(widget_id)
    admin.unpublish_version(agent_version)
    admin.publish_version(agent_version)

    for page_size in (1, 500):
        view = project(store, page_size)
        assert view.get(str(widget_id)) is None
        assert view.pinned_widgets(str(agent_version[1])) == set()


def test_a_widget_created_on_an_unpublished_version_goes_live_when_that_version_is_published(
    admin: Admin, store: EventStore
) -> None:
    agent_version = admin.version(published=False)
    widget_id = admin.widget(agent_version)
    view = project(store)
    admin.publish_version(agent_version)
    admin.publish(widget_id)

    assert rows_of(project(store, view=view))[str(widget_id)].live


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_are_the_same_whatever_the_page_size_and_agree_with_the_aggregates(admin: Admin, store: EventStore, seed: int) -> None:
    random_history(admin, random.Random(seed), 400, widgets=12, agents=3, versions=2)

    views = {size: project(store, size) for size in (1, 7, 500)}

    reference = views[500]
    for size, view in views.items():
        assert rows_of(view) == rows_of(reference), f"page size {size}"
        assert view.versions == reference.versions, f"page size {size}"
        assert {v: w for v, w in view.pins.items() if w} == {v: w for v, w in reference.pins.items() if w}
        assert {w: e.body for w, e in view.entries.items()} == {w: e.body for w, e in reference.entries.items()}
    assert_matches_aggregates(admin, reference)


def test_following_the_log_page_by_page_as_it_grows_agrees_with_the_aggregates(admin: Admin, store: EventStore) -> None:
    rng = random.Random(7)
    view = InProcessPublicView()
    random_history(admin, rng, 50, widgets=8, agents=2, versions=2)
    for _ in range(6):
        project(store, page_size=rng.choice([1, 3, 50]), view=view)
        random_history(admin, rng, 60, widgets=2, agents=1, versions=2)
    project(store, view=view)

    assert_matches_aggregates(admin, view)
    assert view.position() == store.recorder.max_notification_id()


def test_an_in_process_view_refuses_a_page_at_or_below_its_position(admin: Admin, store: EventStore) -> None:
    widget_id = admin.widget()
    events = events_of(store)
    view = InProcessPublicView()
    changes = WidgetRowsProjection().apply(events, view)

    assert view.commit(changes, 1, len(events)) == APPLIED
    assert view.commit(Changes(rows={str(widget_id): None}), 1, len(events)) == STALE
    assert view.commit(Changes(rows={str(widget_id): None}), len(events), len(events) + 1) == STALE
    assert view.get(str(widget_id)) is not None
    assert view.position() == len(events)


def test_deleting_a_widget_marks_its_row_deleted_and_not_live(admin: Admin, store: EventStore) -> None:
    widget_id = admin.widget(published=True)
    admin.delete(widget_id)
    changes = WidgetRowsProjection().apply(events_of(store), InProcessPublicView())
    row = changes.rows[str(widget_id)]
    assert row is not None
    assert (row.deleted, row.published, row.live) == (True, False, False)


def test_a_widget_event_without_a_created_row_changes_nothing() -> None:
    # A page that starts mid-history (after a lost row) must not invent a row.
    widget = Widget.start("org_a", uuid.uuid4(), uuid.uuid4(), AllowedDomains(()), parse_config({}), "alice")
    widget.publish(version_published=True, actor="alice")
    published = widget.collect_events()[1:]
    assert WidgetRowsProjection().apply(published, InProcessPublicView()) == Changes()

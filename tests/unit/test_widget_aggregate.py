"""The Widget aggregate on its own: each command records one fact naming its actor, or nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.utils import get_topic

from domain import event_types as t
from domain.config import config_to_builtins, parse_config
from domain.domains import AllowedDomains
from domain.errors import AgentVersionNotPublishedError, WidgetDeletedError
from domain.widget import Widget

AGENT_ID = uuid.UUID("00000000-0000-4000-8000-00000000a001")
VERSION_1 = uuid.UUID("00000000-0000-4000-8000-000000000001")
VERSION_2 = uuid.UUID("00000000-0000-4000-8000-000000000002")
OTHER_AGENT_ID = uuid.UUID("00000000-0000-4000-8000-00000000a002")


def domains(*entries: str) -> AllowedDomains:
    return AllowedDomains.parse(list(entries))


def config(**appearance: Any) -> Any:
    return parse_config({"v1": {"appearance": appearance}})


def new_widget(*, published: bool = False, actor: str = "user_creator") -> Widget:
    widget = Widget.start("org_a", AGENT_ID, VERSION_1, domains("example.com"), parse_config({}), actor)
    if published:
        widget.publish(version_published=True, actor=actor)
    widget.collect_events()
    return widget


def only_event(widget: Widget) -> Any:
    events = widget.collect_events()
    assert len(events) == 1, events
    return events[0]


# --- creation -------------------------------------------------------------------------


def test_starting_a_widget_records_created_with_its_actor_and_full_config() -> None:
    widget = Widget.start(
        "org_a", AGENT_ID, VERSION_1, domains("Example.COM", "*.shop.example.org"), config(theme="dark"), "user_1"
    )
    created = only_event(widget)
    assert isinstance(created, Widget.Created)
    assert created.actor == "user_1"
    assert created.originator_version == 1
    assert widget.version == 1
    assert widget.organization_id == "org_a"
    assert (widget.agent_id, widget.agent_version_id) == (AGENT_ID, VERSION_1)
    assert widget.domains == ["example.com", "*.shop.example.org"]
    assert widget.config == config_to_builtins(config(theme="dark"))
    assert widget.config["v1"]["appearance"]["theme"] == "dark"
    assert widget.published is False
    assert widget.deleted is False


def test_a_given_widget_id_is_kept_so_idempotent_creates_are_deterministic() -> None:
    chosen = uuid.uuid4()
    widget = Widget.start("org_a", AGENT_ID, VERSION_1, domains(), parse_config({}), "user_1", "fp", chosen)
    assert widget.id == chosen
    assert widget.request_fingerprint == "fp"


def test_a_new_widget_is_neither_published_nor_allowed_anywhere_by_default() -> None:
    widget = Widget.start("org_a", AGENT_ID, VERSION_1, domains(), parse_config({}), "user_1")
    assert widget.domains == []
    assert widget.published is False


def test_events_are_stored_under_their_public_type_names() -> None:
    widget = new_widget()
    widget.change_domains(domains("a.example.com"), "u")
    widget.pin_version(AGENT_ID, VERSION_2, True, "u")
    widget.change_config(config(theme="dark"), "u")
    widget.publish(True, "u")
    widget.unpublish("u")
    widget.delete("u")
    assert get_topic(Widget.Created) == t.WIDGET_CREATED
    assert [get_topic(type(e)) for e in widget.collect_events()] == [
        t.WIDGET_DOMAINS_CHANGED,
        t.WIDGET_VERSION_PINNED,
        t.WIDGET_CONFIG_CHANGED,
        t.WIDGET_PUBLISHED,
        t.WIDGET_UNPUBLISHED,
        t.WIDGET_DELETED,
    ]


# --- domains ---------------------------------------------------------------------------


def test_changing_domains_records_the_new_list_with_what_was_added_and_removed() -> None:
    widget = Widget.start("org_a", AGENT_ID, VERSION_1, domains("example.com", "b.example.com"), parse_config({}), "u0")
    widget.collect_events()
    assert widget.change_domains(domains("b.example.com", "c.example.com"), "user_2") is True
    changed = only_event(widget)
    assert isinstance(changed, Widget.DomainsChanged)
    assert changed.actor == "user_2"
    assert changed.domains == ["b.example.com", "c.example.com"]
    assert changed.added == ["c.example.com"]
    assert changed.removed == ["example.com"]
    assert widget.domains == ["b.example.com", "c.example.com"]
    assert widget.version == 2


def test_setting_the_same_domains_records_nothing() -> None:
    widget = new_widget()
    assert widget.change_domains(domains("EXAMPLE.com"), "user_2") is False
    assert widget.collect_events() == []
    assert widget.version == 1


def test_clearing_domains_allows_no_site() -> None:
    widget = new_widget()
    assert widget.change_domains(domains(), "user_2") is True
    assert only_event(widget).removed == ["example.com"]
    assert widget.domains == []


# --- pinning ---------------------------------------------------------------------------


def test_pinning_another_version_records_version_pinned() -> None:
    widget = new_widget()
    assert widget.pin_version(AGENT_ID, VERSION_2, version_published=False, actor="user_3") is True
    pinned = only_event(widget)
    assert isinstance(pinned, Widget.VersionPinned)
    assert (pinned.agent_id, pinned.agent_version_id, pinned.actor) == (AGENT_ID, VERSION_2, "user_3")
    assert widget.agent_version_id == VERSION_2


def test_pinning_a_version_of_another_agent_changes_the_agent_too() -> None:
    widget = new_widget()
    other_version = uuid.uuid4()
    widget.pin_version(OTHER_AGENT_ID, other_version, version_published=True, actor="u")
    assert (widget.agent_id, widget.agent_version_id) == (OTHER_AGENT_ID, other_version)


def test_pinning_the_version_already_pinned_records_nothing() -> None:
    widget = new_widget(published=True)
    assert widget.pin_version(AGENT_ID, VERSION_1, version_published=False, actor="u") is False
    assert widget.collect_events() == []


def test_a_published_widget_refuses_to_pin_an_unpublished_version() -> None:
    widget = new_widget(published=True)
    with pytest.raises(AgentVersionNotPublishedError) as refused:
        widget.pin_version(AGENT_ID, VERSION_2, version_published=False, actor="u")
    assert refused.value.code == "agent_version_not_published"
    assert widget.collect_events() == []
    assert widget.agent_version_id == VERSION_1


def test_a_published_widget_may_pin_a_published_version() -> None:
    widget = new_widget(published=True)
    assert widget.pin_version(AGENT_ID, VERSION_2, version_published=True, actor="u") is True
    assert widget.agent_version_id == VERSION_2
    assert widget.published is True


def test_an_unpublished_widget_may_pin_an_unpublished_version() -> None:
    widget = new_widget()
    assert widget.pin_version(AGENT_ID, VERSION_2, version_published=False, actor="u") is True


# --- config ----------------------------------------------------------------------------


def test_changing_config_records_the_full_new_config_and_the_changed_paths() -> None:
    widget = new_widget()
    assert widget.change_config(config(theme="dark", primary_color="#000000"), "user_4") is True
    changed = only_event(widget)
    assert isinstance(changed, Widget.ConfigChanged)
    assert changed.actor == "user_4"
    assert changed.changed_paths == ["v1.appearance.primary_color", "v1.appearance.theme"]
    assert changed.config == config_to_builtins(config(theme="dark", primary_color="#000000"))
    assert widget.config["v1"]["appearance"]["primary_color"] == "#000000"


def test_setting_an_equal_config_records_nothing() -> None:
    widget = new_widget()
    assert widget.change_config(parse_config({"v1": {"appearance": {"theme": "auto"}}}), "u") is False
    assert widget.collect_events() == []


# --- publishing --------------------------------------------------------------------------


def test_publishing_with_a_published_agent_version_records_published() -> None:
    widget = new_widget()
    assert widget.publish(version_published=True, actor="user_5") is True
    published = only_event(widget)
    assert isinstance(published, Widget.Published)
    assert published.actor == "user_5"
    assert widget.published is True


def test_publishing_needs_the_pinned_agent_version_to_be_published() -> None:
    widget = new_widget()
    with pytest.raises(AgentVersionNotPublishedError):
        widget.publish(version_published=False, actor="u")
    assert widget.collect_events() == []
    assert widget.published is False


def test_publishing_a_published_widget_records_nothing() -> None:
    widget = new_widget(published=True)
    assert widget.publish(version_published=True, actor="u") is False
    assert widget.collect_events() == []


def test_unpublishing_records_unpublished() -> None:
    widget = new_widget(published=True)
    assert widget.unpublish("user_6") is True
    unpublished = only_event(widget)
    assert isinstance(unpublished, Widget.Unpublished)
    assert unpublished.actor == "user_6"
    assert widget.published is False


def test_unpublishing_an_unpublished_widget_records_nothing() -> None:
    widget = new_widget()
    assert widget.unpublish("u") is False
    assert widget.collect_events() == []


# --- deletion ----------------------------------------------------------------------------


def test_deleting_records_deleted_and_takes_the_widget_offline() -> None:
    widget = new_widget(published=True)
    widget.delete("user_7")
    deleted = only_event(widget)
    assert isinstance(deleted, Widget.Deleted)
    assert deleted.actor == "user_7"
    assert widget.deleted is True
    assert widget.published is False


COMMANDS_ON_A_DELETED_WIDGET: dict[str, Callable[[Widget], object]] = {
    "change_domains": lambda w: w.change_domains(domains("other.example.com"), "u"),
    "change_domains_to_same": lambda w: w.change_domains(domains("example.com"), "u"),
    "pin_version": lambda w: w.pin_version(AGENT_ID, VERSION_2, True, "u"),
    "pin_same_version": lambda w: w.pin_version(AGENT_ID, VERSION_1, True, "u"),
    "change_config": lambda w: w.change_config(config(theme="dark"), "u"),
    "publish": lambda w: w.publish(True, "u"),
    "publish_unpublished_version": lambda w: w.publish(False, "u"),
    "unpublish": lambda w: w.unpublish("u"),
    "delete": lambda w: w.delete("u"),
}


@pytest.mark.parametrize("command", COMMANDS_ON_A_DELETED_WIDGET.values(), ids=COMMANDS_ON_A_DELETED_WIDGET.keys())
def test_a_deleted_widget_refuses_every_command(command: Callable[[Widget], object]) -> None:
    widget = new_widget(published=True)
    widget.delete("u")
    widget.collect_events()
    with pytest.raises(WidgetDeletedError) as refused:
        command(widget)
    assert refused.value.code == "widget_deleted"
    assert widget.collect_events() == []
    assert widget.version == 3


# --- history -----------------------------------------------------------------------------


def test_every_event_names_its_actor() -> None:
    widget = Widget.start("org_a", AGENT_ID, VERSION_1, domains(), parse_config({}), "a1")
    widget.change_domains(domains("example.com"), "a2")
    widget.pin_version(AGENT_ID, VERSION_2, True, "a3")
    widget.change_config(config(theme="light"), "a4")
    widget.publish(True, "a5")
    widget.unpublish("a6")
    widget.delete("a7")
    events = widget.collect_events()
    assert [e.actor for e in events] == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    assert [e.originator_version for e in events] == [1, 2, 3, 4, 5, 6, 7]


def test_replaying_the_events_rebuilds_the_same_widget() -> None:
    widget = Widget.start("org_a", AGENT_ID, VERSION_1, domains("example.com"), parse_config({}), "u")
    widget.change_domains(domains("*.example.com"), "u")
    widget.change_config(config(position="bottom-left"), "u")
    widget.publish(True, "u")
    rebuilt: Widget | None = None
    for event in widget.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert rebuilt is not None
    assert rebuilt.id == widget.id
    assert rebuilt.version == widget.version == 4
    assert rebuilt.domains == widget.domains == ["*.example.com"]
    assert rebuilt.config == widget.config
    assert rebuilt.published is True

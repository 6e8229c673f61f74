"""The Agent aggregate on its own: numbered versions, each published or not, every fact naming its actor."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from eventsourcing.utils import get_topic

from domain import event_types as t
from domain.agent import Agent, AgentVersion
from domain.errors import NotFoundError


def new_agent(actor: str = "user_creator") -> Agent:
    agent = Agent(id=uuid.uuid4(), organization_id="org_a", name="Support bot", actor=actor)
    agent.collect_events()
    return agent


def only_event(agent: Agent) -> Any:
    events = agent.collect_events()
    assert len(events) == 1, events
    return events[0]


def test_creating_an_agent_records_created_with_its_actor() -> None:
    agent_id = uuid.uuid4()
    agent = Agent(id=agent_id, organization_id="org_a", name="Support bot", actor="user_1", request_fingerprint="fp")
    created = only_event(agent)
    assert isinstance(created, Agent.Created)
    assert get_topic(type(created)) == t.AGENT_CREATED
    assert created.actor == "user_1"
    assert agent.id == agent_id
    assert (agent.organization_id, agent.name, agent.request_fingerprint) == ("org_a", "Support bot", "fp")
    assert agent.versions == {}
    assert agent.version == 1


def test_versions_are_numbered_one_two_three_in_creation_order() -> None:
    agent = new_agent()
    ids = [uuid.uuid4() for _ in range(3)]
    made = [agent.create_version(version_id, f"v{i}", "user_2") for i, version_id in enumerate(ids)]
    assert [v.number for v in made] == [1, 2, 3]
    assert [v.id for v in made] == ids
    assert [agent.versions[i].number for i in ids] == [1, 2, 3]
    assert all(v.published is False for v in made)


def test_creating_a_version_records_version_created_with_number_label_and_actor() -> None:
    agent = new_agent()
    version_id = uuid.uuid4()
    version = agent.create_version(version_id, "spring prompts", "user_2", request_fingerprint="fp")
    created = only_event(agent)
    assert isinstance(created, Agent.VersionCreated)
    assert get_topic(type(created)) == t.AGENT_VERSION_CREATED
    assert (created.version_id, created.number, created.label, created.actor) == (version_id, 1, "spring prompts", "user_2")
    assert version == AgentVersion(version_id, 1, "spring prompts", False, "fp")
    assert agent.version == 2


def test_publishing_a_version_records_version_published() -> None:
    agent = new_agent()
    version = agent.create_version(uuid.uuid4(), None, "u")
    agent.collect_events()
    assert agent.publish_version(version.id, "user_3").published is True
    published = only_event(agent)
    assert isinstance(published, Agent.VersionPublished)
    assert get_topic(type(published)) == t.AGENT_VERSION_PUBLISHED
    assert (published.version_id, published.actor) == (version.id, "user_3")
    assert agent.has_published_version(version.id) is True


def test_publishing_a_published_version_records_nothing() -> None:
    agent = new_agent()
    version = agent.create_version(uuid.uuid4(), None, "u")
    agent.publish_version(version.id, "u")
    agent.collect_events()
    assert agent.publish_version(version.id, "u").published is True
    assert agent.collect_events() == []


def test_unpublishing_a_version_records_version_unpublished() -> None:
    agent = new_agent()
    version = agent.create_version(uuid.uuid4(), None, "u")
    agent.publish_version(version.id, "u")
    agent.collect_events()
    assert agent.unpublish_version(version.id, "user_4").published is False
    unpublished = only_event(agent)
    assert isinstance(unpublished, Agent.VersionUnpublished)
    assert get_topic(type(unpublished)) == t.AGENT_VERSION_UNPUBLISHED
    assert (unpublished.version_id, unpublished.actor) == (version.id, "user_4")
    assert agent.has_published_version(version.id) is False


def test_unpublishing_an_unpublished_version_records_nothing() -> None:
    agent = new_agent()
    version = agent.create_version(uuid.uuid4(), None, "u")
    agent.collect_events()
    assert agent.unpublish_version(version.id, "u").published is False
    assert agent.collect_events() == []


def test_publishing_one_version_leaves_the_others_unpublished() -> None:
    agent = new_agent()
    first = agent.create_version(uuid.uuid4(), None, "u")
    second = agent.create_version(uuid.uuid4(), None, "u")
    agent.publish_version(second.id, "u")
    assert agent.has_published_version(first.id) is False
    assert agent.has_published_version(second.id) is True


@pytest.mark.parametrize("command", ["publish_version", "unpublish_version", "find_version"])
def test_an_unknown_version_is_not_found_and_nothing_is_recorded(command: str) -> None:
    agent = new_agent()
    agent.create_version(uuid.uuid4(), None, "u")
    agent.collect_events()
    unknown = uuid.uuid4()
    args = (unknown,) if command == "find_version" else (unknown, "u")
    with pytest.raises(NotFoundError):
        getattr(agent, command)(*args)
    assert agent.collect_events() == []


def test_an_unknown_version_is_not_a_published_one() -> None:
    assert new_agent().has_published_version(uuid.uuid4()) is False


def test_every_event_names_its_actor() -> None:
    agent = Agent(id=uuid.uuid4(), organization_id="org_a", name="bot", actor="a1")
    version = agent.create_version(uuid.uuid4(), None, "a2")
    agent.publish_version(version.id, "a3")
    agent.unpublish_version(version.id, "a4")
    assert [e.actor for e in agent.collect_events()] == ["a1", "a2", "a3", "a4"]


def test_replaying_the_events_rebuilds_the_same_versions() -> None:
    agent = Agent(id=uuid.uuid4(), organization_id="org_a", name="bot", actor="u")
    first = agent.create_version(uuid.uuid4(), "one", "u")
    second = agent.create_version(uuid.uuid4(), "two", "u")
    agent.publish_version(second.id, "u")
    rebuilt: Agent | None = None
    for event in agent.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert rebuilt is not None
    assert rebuilt.version == agent.version == 4
    assert rebuilt.versions == {
        first.id: AgentVersion(first.id, 1, "one", False, None),
        second.id: AgentVersion(second.id, 2, "two", True, None),
    }


def test_a_snapshot_restores_the_versions_as_they_were() -> None:
    agent = Agent(id=uuid.uuid4(), organization_id="org_a", name="bot", actor="u")
    first = agent.create_version(uuid.uuid4(), "one", "u")
    agent.publish_version(first.id, "u")
    agent.create_version(uuid.uuid4(), None, "u", request_fingerprint="fp")
    restored = Agent.Snapshot.take(agent).mutate(None)
    assert restored.versions == agent.versions
    assert restored.version == agent.version
    assert restored.has_published_version(first.id) is True

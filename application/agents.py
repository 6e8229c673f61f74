"""Agents and their versions, scoped to the caller's organization."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from uuid import UUID

from application.commands import Caller, change, create_once, fingerprint, idempotent_id, load_owned
from application.errors import IdempotencyKeyReusedError
from application.store import EventStore
from domain.agent import Agent, AgentVersion

WRITE = "widgets:write"
READ = "widgets:read"
AUDIT = "audit:read"


class AgentService:
    """Commands and reads on the Agent aggregate."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def create_agent(self, caller: Caller, name: str, idempotency_key: str | None = None) -> Agent:
        caller.require(WRITE)
        request = fingerprint({"name": name}) if idempotency_key else None
        agent_id = idempotent_id(caller.organization_id, "agent", idempotency_key) if idempotency_key else uuid.uuid4()
        agent, _ = create_once(
            self.store,
            lambda: Agent(id=agent_id, organization_id=caller.organization_id, name=name, actor=caller.actor, request_fingerprint=request),
            lambda existing_id: self.load(caller, existing_id, version=1),
            request,
        )
        return agent

    def get_agent(self, caller: Caller, agent_id: UUID) -> Agent:
        caller.require(READ)
        return self.load(caller, agent_id)

    def create_version(
        self, caller: Caller, agent_id: UUID, label: str | None, idempotency_key: str | None = None
    ) -> AgentVersion:
        caller.require(WRITE)
        request = fingerprint({"label": label}) if idempotency_key else None
        version_id = (
            idempotent_id(caller.organization_id, "agent_version", idempotency_key, parent=agent_id)
            if idempotency_key
            else uuid.uuid4()
        )
        created: list[AgentVersion] = []

        def command(agent: Agent) -> bool:
            existing = agent.versions.get(version_id)
            if existing is not None:
                if existing.request_fingerprint != request:
                    raise IdempotencyKeyReusedError("This Idempotency-Key was used with a different request body.")
                created.append(existing)
                return False
            created.append(agent.create_version(version_id, label, caller.actor, request))
            return True

        change(self.store, lambda: self.load(caller, agent_id), command, expected_version=None)
        return created[-1]

    def publish_version(self, caller: Caller, agent_id: UUID, version_id: UUID, expected_version: int | None = None) -> AgentVersion:
        caller.require(WRITE)
        agent = change(
            self.store,
            lambda: self.load(caller, agent_id),
            lambda a: _changed(a, lambda: a.publish_version(version_id, caller.actor)),
            expected_version,
        )
        return agent.find_version(version_id)

    def unpublish_version(self, caller: Caller, agent_id: UUID, version_id: UUID, expected_version: int | None = None) -> AgentVersion:
        caller.require(WRITE)
        agent = change(
            self.store,
            lambda: self.load(caller, agent_id),
            lambda a: _changed(a, lambda: a.unpublish_version(version_id, caller.actor)),
            expected_version,
        )
        return agent.find_version(version_id)

    def load(self, caller: Caller, agent_id: UUID, version: int | None = None) -> Agent:
        return load_owned(self.store, Agent, agent_id, caller, "Agent", version)


def _changed(agent: Agent, command: Callable[[], object]) -> bool:
    command()
    return bool(agent.pending_events)

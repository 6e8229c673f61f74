"""The Agent aggregate: an organization's agent and its numbered versions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import event_types as t
from domain.errors import NotFoundError


@dataclass
class AgentVersion:
    id: UUID
    number: int
    label: str | None
    published: bool
    request_fingerprint: str | None


class Agent(Aggregate):
    TOPIC = t.AGENT

    class Snapshot(Aggregate.Snapshot):
        """The state with its versions as a list of plain records: the JSON transcoder
        takes neither UUID dict keys nor AgentVersion objects."""

        @classmethod
        def take(cls, aggregate: Any) -> Any:
            snapshot = super().take(aggregate)
            snapshot.state["versions"] = [asdict(v) for v in aggregate.versions.values()]
            return snapshot

        def mutate(self, _: None) -> Any:
            agent = super().mutate(_)
            agent.versions = {v["id"]: AgentVersion(**v) for v in self.state["versions"]}
            return agent

    @event("Created", topic=t.AGENT_CREATED)
    def __init__(self, id: UUID, organization_id: str, name: str, actor: str, request_fingerprint: str | None = None) -> None:
        self.organization_id = organization_id
        self.name = name
        self.request_fingerprint = request_fingerprint
        self.versions: dict[UUID, AgentVersion] = {}

    def create_version(self, version_id: UUID, label: str | None, actor: str, request_fingerprint: str | None = None) -> AgentVersion:
        self._version_created(
            version_id=version_id, number=len(self.versions) + 1, label=label, actor=actor,
            request_fingerprint=request_fingerprint,
        )
        return self.versions[version_id]

    def publish_version(self, version_id: UUID, actor: str) -> AgentVersion:
        version = self.find_version(version_id)
        if not version.published:
            self._version_published(version_id=version_id, actor=actor)
        return version

    def unpublish_version(self, version_id: UUID, actor: str) -> AgentVersion:
        version = self.find_version(version_id)
        if version.published:
            self._version_unpublished(version_id=version_id, actor=actor)
        return version

    def find_version(self, version_id: UUID) -> AgentVersion:
        try:
            return self.versions[version_id]
        except KeyError:
            raise NotFoundError("Agent version", version_id) from None

    def has_published_version(self, version_id: UUID) -> bool:
        version = self.versions.get(version_id)
        return version is not None and version.published

    @event("VersionCreated", topic=t.AGENT_VERSION_CREATED)
    def _version_created(self, version_id: UUID, number: int, label: str | None, actor: str, request_fingerprint: str | None) -> None:
        self.versions[version_id] = AgentVersion(version_id, number, label, False, request_fingerprint)

    @event("VersionPublished", topic=t.AGENT_VERSION_PUBLISHED)
    def _version_published(self, version_id: UUID, actor: str) -> None:
        self.versions[version_id].published = True

    @event("VersionUnpublished", topic=t.AGENT_VERSION_UNPUBLISHED)
    def _version_unpublished(self, version_id: UUID, actor: str) -> None:
        self.versions[version_id].published = False

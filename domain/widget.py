"""The Widget aggregate: an agent on a website, behind two gates.

A widget serves only when it is published and its pinned agent version is
published. The second gate belongs to the Agent aggregate, so the
application hands its answer in (`version_published`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain import event_types as t
from domain.config import WidgetConfig, changed_paths, config_to_builtins
from domain.domains import AllowedDomains
from domain.errors import AgentVersionNotPublishedError, FieldError, NotFoundError, ValidationError, WidgetDeletedError
from domain.identity import MAX_IDENTITY_KEYS, IdentityKey

MAX_RETENTION_DAYS = 36_500


class Widget(Aggregate):
    TOPIC = t.WIDGET
    # By kid: {"kid", "alg", "jwk", "added_at"}. Replaced, never changed in place; widgets (and snapshots)
    # from before identity keys existed fall back to this empty default.
    identity_keys: ClassVar[Mapping[str, dict[str, Any]]] = MappingProxyType({})

    class Created(Aggregate.Created):
        """Version 2 added `request_fingerprint` (idempotent creates); version 1 events predate it."""

        TOPIC = t.WIDGET_CREATED
        class_version = 2

        organization_id: str
        agent_id: UUID
        agent_version_id: UUID
        domains: list[str]
        config: dict[str, Any]
        actor: str
        request_fingerprint: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("request_fingerprint", None)

    @event(Created)
    def __init__(
        self,
        id: UUID,  # noqa: A002 (given, so that idempotent creates get a deterministic id)
        organization_id: str,
        agent_id: UUID,
        agent_version_id: UUID,
        domains: list[str],
        config: dict[str, Any],
        actor: str,
        request_fingerprint: str | None = None,
    ) -> None:
        self.organization_id = organization_id
        self.agent_id = agent_id
        self.agent_version_id = agent_version_id
        self.domains = list(domains)
        self.config = config
        self.published = False
        self.deleted = False
        self.request_fingerprint = request_fingerprint

    @classmethod
    def start(
        cls,
        organization_id: str,
        agent_id: UUID,
        agent_version_id: UUID,
        domains: AllowedDomains,
        config: WidgetConfig,
        actor: str,
        request_fingerprint: str | None = None,
        widget_id: UUID | None = None,
    ) -> Widget:
        return cls(
            id=widget_id or uuid4(),
            organization_id=organization_id,
            agent_id=agent_id,
            agent_version_id=agent_version_id,
            domains=list(domains.entries),
            config=config_to_builtins(config),
            actor=actor,
            request_fingerprint=request_fingerprint,
        )

    # Commands: guard first, then record the fact. Each returns whether anything changed.

    def change_domains(self, domains: AllowedDomains, actor: str) -> bool:
        self.check_not_deleted()
        new = list(domains.entries)
        if set(new) == set(self.domains):  # the same sites in another order change nothing
            return False
        before, after = set(self.domains), set(new)
        self._domains_changed(
            domains=new,
            added=[d for d in new if d not in before],
            removed=[d for d in self.domains if d not in after],
            actor=actor,
        )
        return True

    def pin_version(self, agent_id: UUID, agent_version_id: UUID, version_published: bool, actor: str) -> bool:
        self.check_not_deleted()
        if (agent_id, agent_version_id) == (self.agent_id, self.agent_version_id):
            return False
        if self.published and not version_published:
            raise AgentVersionNotPublishedError(
                f"Widget {self.id} is published, and agent version {agent_version_id} has not been published."
            )
        self._version_pinned(agent_id=agent_id, agent_version_id=agent_version_id, actor=actor)
        return True

    def change_config(self, config: WidgetConfig, actor: str) -> bool:
        self.check_not_deleted()
        new = config_to_builtins(config)
        if new == self.config:
            return False
        paths = changed_paths(self.config, new)
        self._config_changed(config=new, changed_paths=paths, actor=actor)
        return True

    def publish(self, version_published: bool, actor: str) -> bool:
        self.check_not_deleted()
        if not version_published:
            raise AgentVersionNotPublishedError(
                f"Widget {self.id} pins agent version {self.agent_version_id}, which has not been published."
            )
        if self.published:
            return False
        self._published(actor=actor)
        return True

    def unpublish(self, actor: str) -> bool:
        self.check_not_deleted()
        if not self.published:
            return False
        self._unpublished(actor=actor)
        return True

    def delete(self, actor: str) -> None:
        self.check_not_deleted()
        self._deleted(actor=actor)

    def add_identity_key(self, key: IdentityKey, actor: str) -> None:
        self.check_not_deleted()
        if key.kid in self.identity_keys:
            raise ValidationError([FieldError("jwk.kid", "this widget already has a key with this kid")], "The identity key is not valid.")
        if len(self.identity_keys) >= MAX_IDENTITY_KEYS:
            raise ValidationError([FieldError("jwk", f"a widget holds at most {MAX_IDENTITY_KEYS} identity keys; remove one first")],
                                  "The identity key is not valid.")
        self.trigger_event(self.IdentityKeyAdded, kid=key.kid, alg=key.alg, jwk=dict(key.jwk), actor=actor)

    def remove_identity_key(self, kid: str, actor: str) -> None:
        self.check_not_deleted()
        if kid not in self.identity_keys:
            raise NotFoundError("Identity key", kid)
        self.trigger_event(self.IdentityKeyRemoved, kid=kid, actor=actor)

    def change_retention(self, days: int | None, actor: str) -> bool:
        """Keep conversations' personal data `days` after their last activity (0: until they end; None: until erased)."""
        self.check_not_deleted()
        if days is not None and not 0 <= days <= MAX_RETENTION_DAYS:
            raise ValidationError([FieldError("days", f"must be a whole number of days from 0 to {MAX_RETENTION_DAYS}, or null")],
                                  "The retention is not valid.")
        if days == self.retention_days:
            return False
        self.trigger_event(self.RetentionChanged, days=days, actor=actor)
        return True

    @property
    def retention_days(self) -> int | None:
        return self.__dict__.get("_retention_days")  # widgets recorded before retention existed keep everything

    def check_not_deleted(self) -> None:
        if self.deleted:
            raise WidgetDeletedError(f"Widget {self.id} has been deleted.")

    # Facts: these run again on every replay, so they never raise.

    @event("DomainsChanged", topic=t.WIDGET_DOMAINS_CHANGED)
    def _domains_changed(self, domains: list[str], added: list[str], removed: list[str], actor: str) -> None:
        self.domains = list(domains)

    @event("VersionPinned", topic=t.WIDGET_VERSION_PINNED)
    def _version_pinned(self, agent_id: UUID, agent_version_id: UUID, actor: str) -> None:
        self.agent_id = agent_id
        self.agent_version_id = agent_version_id

    @event("ConfigChanged", topic=t.WIDGET_CONFIG_CHANGED)
    def _config_changed(self, config: dict[str, Any], changed_paths: list[str], actor: str) -> None:
        self.config = config

    @event("Published", topic=t.WIDGET_PUBLISHED)
    def _published(self, actor: str) -> None:
        self.published = True

    @event("Unpublished", topic=t.WIDGET_UNPUBLISHED)
    def _unpublished(self, actor: str) -> None:
        self.published = False

    @event("Deleted", topic=t.WIDGET_DELETED)
    def _deleted(self, actor: str) -> None:
        self.deleted = True
        self.published = False

    class IdentityKeyAdded(Aggregate.Event):
        TOPIC = t.WIDGET_IDENTITY_KEY_ADDED
        kid: str
        alg: str
        jwk: dict[str, str]
        actor: str

        def apply(self, aggregate: Aggregate) -> None:
            entry = {"kid": self.kid, "alg": self.alg, "jwk": dict(self.jwk), "added_at": self.timestamp}
            aggregate.identity_keys = {**aggregate.identity_keys, self.kid: entry}  # type: ignore[attr-defined]

    class RetentionChanged(Aggregate.Event):
        TOPIC = t.WIDGET_RETENTION_CHANGED
        days: int | None
        actor: str

        def apply(self, aggregate: Aggregate) -> None:
            aggregate._retention_days = self.days  # type: ignore[attr-defined]

    class IdentityKeyRemoved(Aggregate.Event):
        TOPIC = t.WIDGET_IDENTITY_KEY_REMOVED
        kid: str
        actor: str

        def apply(self, aggregate: Aggregate) -> None:
            keys = aggregate.identity_keys  # type: ignore[attr-defined]
            aggregate.identity_keys = {kid: key for kid, key in keys.items() if kid != self.kid}  # type: ignore[attr-defined]

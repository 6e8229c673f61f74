"""Request and response bodies of the admin API: separate structs to create, change and read."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from application.widgets import WidgetState
from domain.agent import Agent, AgentVersion
from domain.domains import AllowedDomains
from domain.liveness import not_live_reasons
from domain.widget import MAX_RETENTION_DAYS

ONE_LINE = r"^[^\x00-\x1f\x7f-\x9f]*\Z"  # as config's one-line texts: no NUL, control characters or line breaks
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=ONE_LINE)]
Label = Annotated[str, Meta(min_length=1, max_length=100, pattern=ONE_LINE)]
DomainEntry = Annotated[str, Meta(max_length=300)]
DomainList = Annotated[list[DomainEntry], Meta(max_length=1000)]


class AgentCreate(Struct, forbid_unknown_fields=True):
    name: Name


class VersionCreate(Struct, forbid_unknown_fields=True):
    label: Label | None = None


class WidgetCreate(Struct, forbid_unknown_fields=True):
    agent_id: UUID
    agent_version_id: UUID
    domains: DomainList | None = None
    config: dict[str, Any] | None = None


class DomainsChange(Struct, forbid_unknown_fields=True):
    domains: DomainList


class RetentionChange(Struct, forbid_unknown_fields=True):
    """How many days after a conversation's last activity its personal data is kept (0: until it ends); null: until erased."""

    days: Annotated[int, Meta(ge=0, le=MAX_RETENTION_DAYS)] | None


class VersionPin(Struct, forbid_unknown_fields=True):
    agent_version_id: UUID
    agent_id: UUID | None = None


class VersionOut(Struct):
    id: UUID
    agent_id: UUID
    number: int
    label: str | None
    published: bool


class AgentOut(Struct):
    id: UUID
    organization_id: str
    name: str
    versions: list[VersionOut]
    created_at: datetime
    updated_at: datetime
    version: int


class IdentityKeyAdd(Struct, forbid_unknown_fields=True):
    jwk: Annotated[dict[str, Any], Meta(description="A public JWK: EC P-256 (ES256) or OKP Ed25519 (EdDSA), with a kid")]


class IdentityKeyOut(Struct):
    kid: str
    alg: str
    added_at: datetime


class NotLiveReasonOut(Struct):
    code: Annotated[str, Meta(description="`widget_unpublished`, `agent_version_unpublished` or `widget_deleted`")]
    message: str


class DomainEntryOut(Struct):
    entry: Annotated[str, Meta(description="The entry as stored (normalised)")]
    admits: Annotated[str, Meta(description="What it lets in, in words: the origins or subdomains it matches")]


class WidgetOut(Struct):
    id: UUID
    organization_id: str
    agent_id: UUID
    agent_version_id: UUID
    domains: list[str]
    published: bool
    live: bool
    deleted: bool
    config: dict[str, Any]
    identity_keys: list[IdentityKeyOut]
    created_at: datetime
    updated_at: datetime
    version: int
    retention_days: int | None = None  # days a conversation's personal data is kept after its last activity; null: until erased
    # Present when `live` is false: each gate that is closed, in the order to open them.
    not_live_reasons: list[NotLiveReasonOut] | UnsetType = UNSET
    # Each domain entry as stored and what it admits.
    domains_explained: list[DomainEntryOut] | UnsetType = UNSET


class WidgetPage(Struct):
    items: list[WidgetOut]
    next_cursor: str | None


def version_out(agent_id: UUID, v: AgentVersion) -> VersionOut:
    return VersionOut(id=v.id, agent_id=agent_id, number=v.number, label=v.label, published=v.published)


def agent_out(agent: Agent) -> AgentOut:
    return AgentOut(
        id=agent.id,
        organization_id=agent.organization_id,
        name=agent.name,
        versions=[version_out(agent.id, v) for v in sorted(agent.versions.values(), key=lambda v: v.number)],
        created_at=agent.created_on,
        updated_at=agent.modified_on,
        version=agent.version,
    )


def domains_out(domains: Iterable[str]) -> list[DomainEntryOut]:
    return [DomainEntryOut(entry, admits) for entry, admits in AllowedDomains(tuple(domains)).explained()]


def reasons_out(*, published: bool, deleted: bool, version_published: bool) -> list[NotLiveReasonOut] | UnsetType:
    reasons = not_live_reasons(published=published, deleted=deleted, version_published=version_published)
    return [NotLiveReasonOut(r.code, r.message) for r in reasons] if reasons else UNSET


def widget_out(state: WidgetState) -> WidgetOut:
    w = state.widget
    return WidgetOut(
        id=w.id,
        organization_id=w.organization_id,
        agent_id=w.agent_id,
        agent_version_id=w.agent_version_id,
        domains=list(w.domains),
        published=w.published,
        live=state.live,
        deleted=w.deleted,
        config=w.config,
        identity_keys=[IdentityKeyOut(k["kid"], k["alg"], k["added_at"]) for k in w.identity_keys.values()],
        retention_days=w.retention_days,
        not_live_reasons=reasons_out(published=w.published, deleted=w.deleted, version_published=state.version_published),
        domains_explained=domains_out(w.domains),
        created_at=w.created_on,
        updated_at=w.modified_on,
        version=w.version,
    )


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)

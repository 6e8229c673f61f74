"""Widgets: create, configure, pin, publish; every read and write scoped to the caller's organization."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from application.agents import AUDIT, READ, WRITE, AgentService
from application.commands import Caller, change, create_once, fingerprint, idempotent_id, load_owned
from application.store import EventStore
from domain.agent import Agent
from domain.config import WidgetConfig, config_to_builtins, merge_patch, parse_config
from domain.domains import AllowedDomains
from domain.errors import FieldError, NotFoundError, ValidationError, VersionNotInAgentError
from domain.identity import parse_identity_key
from domain.widget import Widget


@dataclass(frozen=True)
class WidgetState:
    """A widget as the admin API shows it: the aggregate and whether both gates hold."""

    widget: Widget
    live: bool
    version_published: bool = True


def parse_widget_inputs(domains: list[str] | None, config: Any) -> tuple[AllowedDomains, WidgetConfig]:
    """Validate domains and config together, so every invalid field is listed at once."""
    errors: list[FieldError] = []
    allowed = parsed_config = None
    try:
        allowed = AllowedDomains.parse(domains or [])
    except ValidationError as e:
        errors += e.errors
    try:
        parsed_config = parse_config({} if config is None else config)
    except ValidationError as e:
        errors += e.errors
    if errors or allowed is None or parsed_config is None:
        raise ValidationError(errors)
    return allowed, parsed_config


class WidgetService:
    """Commands and reads on the Widget aggregate; loads the Agent for the rules that span both."""

    def __init__(self, store: EventStore, agents: AgentService) -> None:
        self.store = store
        self.agents = agents

    def create_widget(
        self,
        caller: Caller,
        agent_id: UUID,
        agent_version_id: UUID,
        domains: list[str] | None,
        config: Any,
        idempotency_key: str | None = None,
    ) -> WidgetState:
        caller.require(WRITE)
        allowed, parsed = parse_widget_inputs(domains, config)
        agent = self.agents.load(caller, agent_id)
        check_version_in_agent(agent, agent_version_id)
        request = (
            fingerprint([str(agent_id), str(agent_version_id), list(allowed.entries), config_to_builtins(parsed)])
            if idempotency_key
            else None
        )
        widget_id = idempotent_id(caller.organization_id, "widget", idempotency_key) if idempotency_key else uuid.uuid4()
        widget, _ = create_once(
            self.store,
            lambda: Widget.start(
                caller.organization_id, agent_id, agent_version_id, allowed, parsed, caller.actor, request, widget_id
            ),
            lambda existing_id: self.load(caller, existing_id, version=1),
            request,
        )
        return self.state(caller, widget)

    def get_widget(self, caller: Caller, widget_id: UUID, version: int | None = None) -> WidgetState:
        """The widget now (`widgets:read`), or as it stood at a version (`audit:read`, deleted ones too)."""
        caller.require(READ if version is None else AUDIT)
        widget = self.load(caller, widget_id, version)
        if widget.deleted and version is None:
            raise NotFoundError("Widget", widget_id)
        return self.state(caller, widget)

    def change_domains(self, caller: Caller, widget_id: UUID, domains: list[str], expected_version: int | None = None) -> WidgetState:
        caller.require(WRITE)
        allowed = AllowedDomains.parse(domains)
        return self._change(caller, widget_id, lambda w: w.change_domains(allowed, caller.actor), expected_version)

    def change_retention(self, caller: Caller, widget_id: UUID, days: int | None, expected_version: int | None = None) -> WidgetState:
        caller.require(WRITE)
        return self._change(caller, widget_id, lambda w: w.change_retention(days, caller.actor), expected_version)

    def pin_version(
        self, caller: Caller, widget_id: UUID, agent_version_id: UUID, agent_id: UUID | None = None, expected_version: int | None = None
    ) -> WidgetState:
        caller.require(WRITE)

        def command(widget: Widget) -> bool:
            widget.check_not_deleted()
            agent = self.agents.load(caller, agent_id or widget.agent_id)
            check_version_in_agent(agent, agent_version_id)
            return widget.pin_version(agent.id, agent_version_id, agent.has_published_version(agent_version_id), caller.actor)

        return self._change(caller, widget_id, command, expected_version)

    def replace_config(self, caller: Caller, widget_id: UUID, config: Any, expected_version: int | None = None) -> WidgetState:
        caller.require(WRITE)
        parsed = parse_config(config)
        return self._change(caller, widget_id, lambda w: w.change_config(parsed, caller.actor), expected_version)

    def patch_config(self, caller: Caller, widget_id: UUID, patch: Any, expected_version: int | None = None) -> WidgetState:
        """Apply a JSON merge patch (RFC 7396) to the current config."""
        caller.require(WRITE)

        def command(widget: Widget) -> bool:
            widget.check_not_deleted()
            return widget.change_config(parse_config(merge_patch(widget.config, patch)), caller.actor)

        return self._change(caller, widget_id, command, expected_version)

    def add_identity_key(self, caller: Caller, widget_id: UUID, jwk: Any, expected_version: int | None = None) -> WidgetState:
        """Add a site's public key for visitor tokens (the site keeps its private key)."""
        caller.require(WRITE)
        key = parse_identity_key(jwk)

        def command(widget: Widget) -> bool:
            widget.add_identity_key(key, caller.actor)
            return True

        return self._change(caller, widget_id, command, expected_version)

    def remove_identity_key(self, caller: Caller, widget_id: UUID, kid: str, expected_version: int | None = None) -> WidgetState:
        caller.require(WRITE)

        def command(widget: Widget) -> bool:
            widget.remove_identity_key(kid, caller.actor)
            return True

        return self._change(caller, widget_id, command, expected_version)

    def publish(self, caller: Caller, widget_id: UUID, expected_version: int | None = None) -> WidgetState:
        caller.require(WRITE)

        def command(widget: Widget) -> bool:
            widget.check_not_deleted()
            agent = self.agents.load(caller, widget.agent_id)
            return widget.publish(agent.has_published_version(widget.agent_version_id), caller.actor)

        return self._change(caller, widget_id, command, expected_version)

    def unpublish(self, caller: Caller, widget_id: UUID, expected_version: int | None = None) -> WidgetState:
        caller.require(WRITE)
        return self._change(caller, widget_id, lambda w: w.unpublish(caller.actor), expected_version)

    def delete(self, caller: Caller, widget_id: UUID, expected_version: int | None = None) -> None:
        caller.require(WRITE)

        def command(widget: Widget) -> bool:
            widget.delete(caller.actor)
            return True

        change(self.store, lambda: self.load(caller, widget_id), command, expected_version)

    def _change(self, caller: Caller, widget_id: UUID, command: Any, expected_version: int | None) -> WidgetState:
        widget = change(self.store, lambda: self.load(caller, widget_id), command, expected_version)
        return self.state(caller, widget)

    def load(self, caller: Caller, widget_id: UUID, version: int | None = None) -> Widget:
        return load_owned(self.store, Widget, widget_id, caller, "Widget", version)

    def state(self, caller: Caller, widget: Widget) -> WidgetState:
        agent: Agent = self.agents.load(caller, widget.agent_id)
        version_published = agent.has_published_version(widget.agent_version_id)
        live = widget.published and version_published  # a deleted widget is unpublished
        return WidgetState(widget, live=live, version_published=version_published)


def check_version_in_agent(agent: Agent, agent_version_id: UUID) -> None:
    if agent_version_id not in agent.versions:
        raise VersionNotInAgentError(f"Agent version {agent_version_id} is not a version of agent {agent.id}.")

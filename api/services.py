"""The composition root's product: every concrete adapter the handlers use, wired once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from application.agents import AgentService
from application.store import EventStore
from application.widgets import WidgetService
from infrastructure.auth import TokenAuthority
from infrastructure.eventstore import open_event_store
from infrastructure.settings import DEV_AUTH_SECRET, Settings

log = structlog.get_logger("services")


@dataclass
class Services:
    settings: Settings
    store: EventStore
    tokens: TokenAuthority
    agents: AgentService
    widgets: WidgetService
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, store: EventStore | None = None) -> Services:
        if settings.auth_secret == DEV_AUTH_SECRET and not settings.embedded:
            log.warning("insecure_auth_secret", hint="set WIDGETS_AUTH_SECRET; the development default is in use")
        store = store or open_event_store(settings)
        agents = AgentService(store)
        return cls(
            settings=settings,
            store=store,
            tokens=TokenAuthority(settings.auth_secret),
            agents=agents,
            widgets=WidgetService(store, agents),
        )

    def close(self) -> None:
        self.store.close()

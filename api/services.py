"""The composition root's product: every concrete adapter the handlers use, wired once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from application.agents import AgentService
from application.conversations import ConversationService
from application.history import HistoryService
from application.personal_data import PersonalDataService
from application.store import EventStore
from application.webhook_endpoints import WebhookEndpointService
from application.widgets import WidgetService
from infrastructure.auth import TokenAuthority
from infrastructure.eventstore import open_event_store
from infrastructure.installations import InstallationCounter, InstallationStore, RedisInstallationStore, SqlInstallationStore
from infrastructure.livekit import LiveKitIssuer, LiveKitWebhooks
from infrastructure.livekit_rooms import LiveKitRooms
from infrastructure.personal_data import DeploymentKeys
from infrastructure.proxies import TrustedProxies
from infrastructure.ratelimit import PublicRateLimits
from infrastructure.settings import Settings
from infrastructure.sql import Database
from infrastructure.visitor_tokens import VisitorTokenVerifier, lookup_keys
from infrastructure.webhook_secrets import WebhookSecretTable
from projections.setup import PROJECTIONS, ReadModels, build_runners

log = structlog.get_logger("services")


@dataclass
class Services:
    settings: Settings
    store: EventStore
    db: Database
    read_models: ReadModels
    tokens: TokenAuthority
    agents: AgentService
    widgets: WidgetService
    conversations: ConversationService
    history: HistoryService
    webhooks: LiveKitWebhooks
    rate_limits: PublicRateLimits
    trusted_proxies: TrustedProxies
    installations: InstallationCounter
    installation_store: InstallationStore
    webhook_endpoints: WebhookEndpointService
    personal_data: PersonalDataService
    rooms: LiveKitRooms
    reader: Any = None  # the public reader; built on the event loop at startup
    dispatcher: Any = None  # the webhook dispatcher, when the projections run in this process
    _dispatching: threading.Thread | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def public_cache_control(self) -> bytes:
        return f"public, max-age={self.settings.public_max_age}".encode()

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.refuse_public_secrets()
        store = wait_for(lambda: open_event_store(settings), "event store", settings.startup_timeout)
        db = wait_for(lambda: Database(settings), "read model database", settings.startup_timeout)
        names = PROJECTIONS if settings.projections_in_process else ()
        read_models = wait_for(lambda: build_runners(settings, store, db, names), "read models", settings.startup_timeout)
        agents = AgentService(store)
        installation_store = installation_store_for(settings, db)
        webhook_secrets = WebhookSecretTable(db, DeploymentKeys.from_settings(settings))
        rooms = LiveKitRooms(settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret)
        return cls(
            settings=settings,
            store=store,
            db=db,
            read_models=read_models,
            tokens=TokenAuthority(settings.auth_secret, settings.auth_max_ttl),
            agents=agents,
            widgets=WidgetService(store, agents),
            history=HistoryService(store),
            conversations=ConversationService(
                store,
                LiveKitIssuer(
                    url=settings.livekit_url,
                    api_key=settings.livekit_api_key,
                    api_secret=settings.livekit_api_secret,
                    agent_name=settings.livekit_agent_name,
                    ttl_seconds=settings.livekit_token_ttl,
                ),
                VisitorTokenVerifier(settings.data_key, settings.data_key_previous, lookup_keys(
                    store.personal_data, settings.data_key, settings.data_key_previous)),
                rooms=rooms,
                form_submissions=settings.form_submissions,
            ),
            webhooks=LiveKitWebhooks(settings.livekit_api_key, settings.livekit_api_secret),
            trusted_proxies=TrustedProxies(settings.trusted_proxies),
            rate_limits=PublicRateLimits(
                settings.rate_config_reads, settings.rate_conversation_starts, settings.redis_url, settings.redis_prefix,
                resumes=settings.rate_resumes, submissions=settings.rate_submissions,
            ),
            installations=InstallationCounter(installation_store),
            installation_store=installation_store,
            webhook_endpoints=WebhookEndpointService(store, webhook_secrets, allow_private=settings.webhook_allow_private),
            personal_data=PersonalDataService(store),
            rooms=rooms,
        )

    def start(self) -> None:
        self.read_models.start()
        if self.settings.projections_in_process:
            from api.retention import RetentionSweep

            RetentionSweep(self.store, self.db).start(self.stopping)
            if self.settings.webhook_deliveries:
                self._start_dispatcher()

    def _start_dispatcher(self) -> None:
        from api.webhook_delivery import WebhookDispatcher

        self.dispatcher = WebhookDispatcher.from_settings(self.settings, self.store, self.db)
        self.read_models.webhook_outbox_view.on_queued = self.dispatcher.wake
        self._dispatching = self.dispatcher.start(self.stopping)

    def close(self) -> None:
        self.stopping.set()
        self.read_models.stop()
        if self._dispatching is not None:
            self.dispatcher.wake()  # it sees `stopping` at once, not at its next poll
            self._dispatching.join(timeout=15)
        self.installation_store.close()
        self.rooms.close()
        self.db.close()
        self.store.close()


def installation_store_for(settings: Settings, db: Database) -> InstallationStore:
    """Where config-read counts add up: Redis in production, the read-model database when embedded."""
    if settings.redis_url:
        from projections.setup import sync_redis

        return RedisInstallationStore(sync_redis(settings), settings.redis_prefix)
    return SqlInstallationStore(db)


def wait_for(connect: Any, what: str, timeout: float) -> Any:
    """Retry connecting to a store with backoff until `timeout`, saying so in the log."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return connect()
        except Exception as error:
            if time.monotonic() + delay > deadline:
                log.error("store_unreachable", store=what, error=repr(error))
                raise
            log.warning("waiting_for_store", store=what, error=type(error).__name__, retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)

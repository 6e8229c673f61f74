"""Builds the projections' views and runners for the embedded or the production wiring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.audit_feed import AuditFeedProjection, AuditFeedView
from projections.conversation_list import ConversationListProjection, ConversationListView
from projections.public_views import InProcessPublicView, RedisPublicView, current_generation
from projections.runner import EventLog, ProjectionRunner
from projections.webhook_endpoints import WebhookEndpointsProjection, WebhookEndpointsView
from projections.webhook_outbox import WebhookOutboxProjection, WebhookOutboxView
from projections.widget_list import WidgetListView
from projections.widget_rows import WidgetRowsProjection
from projections.widget_stats import WidgetStatsProjection, WidgetStatsView

PUBLIC_LOOKUP = "public_lookup"
WIDGET_LIST = "widget_list"
CONVERSATION_LIST = "conversation_list"
AUDIT_FEED = "audit_feed"
WIDGET_STATS = "widget_stats"
WEBHOOK_ENDPOINTS = "webhook_endpoints"
WEBHOOK_OUTBOX = "webhook_outbox"
PROJECTIONS = (PUBLIC_LOOKUP, WIDGET_LIST, CONVERSATION_LIST, AUDIT_FEED, WIDGET_STATS, WEBHOOK_ENDPOINTS, WEBHOOK_OUTBOX)
SQL_PROJECTIONS = {
    WIDGET_LIST: (WidgetListView, WidgetRowsProjection),
    CONVERSATION_LIST: (ConversationListView, ConversationListProjection),
    AUDIT_FEED: (AuditFeedView, AuditFeedProjection),
    WIDGET_STATS: (WidgetStatsView, WidgetStatsProjection),
    WEBHOOK_ENDPOINTS: (WebhookEndpointsView, WebhookEndpointsProjection),
    WEBHOOK_OUTBOX: (WebhookOutboxView, WebhookOutboxProjection),
}

log = structlog.get_logger("projections")


def sync_redis(settings: Settings) -> redis.Redis:
    """One Redis, or a Redis Cluster for a `redis+cluster://` URL."""
    return sync_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)  # type: ignore[return-value]


def redis_public_view(client: redis.Redis, settings: Settings) -> RedisPublicView:
    return RedisPublicView(client, settings.redis_prefix, current_generation(client, settings.redis_prefix))


@dataclass
class ReadModels:
    """The read models of one process, and the runners that keep them (when they run here)."""

    settings: Settings
    views: dict[str, Any]
    runners: dict[str, ProjectionRunner] = field(default_factory=dict)
    # Reads the Redis lookup's position when its projection runs in another process (`/readyz` asks often).
    _probe: redis.Redis | None = field(default=None, repr=False)

    list_view = property(lambda self: self.views[WIDGET_LIST])
    conversation_view = property(lambda self: self.views[CONVERSATION_LIST])
    audit_view = property(lambda self: self.views[AUDIT_FEED])
    stats_view = property(lambda self: self.views[WIDGET_STATS])
    webhook_endpoints_view = property(lambda self: self.views[WEBHOOK_ENDPOINTS])
    webhook_outbox_view = property(lambda self: self.views[WEBHOOK_OUTBOX])
    public_view = property(lambda self: self.views.get(PUBLIC_LOOKUP))

    def start(self) -> None:
        for runner in self.runners.values():
            runner.catch_up()
            runner.start()

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def wait(self, position: int, timeout: float) -> bool:
        return all(r.wait(position, timeout) for r in self.runners.values())

    def position(self) -> int:
        """The lowest position of them all (for `projections.positions.reached`)."""
        return min(self.positions().values())

    def positions(self) -> dict[str, int]:
        """Where each projection stands, whether it runs here or in a `widgets project` process."""
        found = {name: runner.position for name, runner in self.runners.items()}
        for name, view in self.views.items():
            if name not in found and view is not None:
                found[name] = view.position()
        if PUBLIC_LOOKUP not in found and self.settings.redis_url:
            if self._probe is None:
                self._probe = sync_redis(self.settings)
            found[PUBLIC_LOOKUP] = redis_public_view(self._probe, self.settings).position()
        return found


def rebuild_outdated(store: EventLog, db: Database) -> list[str]:
    """Rebuild each SQL model whose rows are in an older format than its code writes (once, at startup: the
    conversation list and audit feed of a database from before encryption hold personal values in the clear),
    then scrub the old rows' bytes from the files. Idempotent; returns the models rebuilt."""
    from projections.rebuild import rebuild_sql

    rebuilt = []
    for name, (view_class, _) in SQL_PROJECTIONS.items():
        view_class.create_tables(db)
        stored = view_class.stored_format(db)
        if stored is not None and stored < view_class.format:
            log.info("read_model_format_outdated", projection=name, stored=stored, format=view_class.format)
            rebuild_sql(store, db, name)
            db.scrub(view_class.tables, full=True)  # the old rows held personal values in the clear
            rebuilt.append(name)
        if stored != view_class.format:
            view_class.record_format(db)
    return rebuilt


def build_runners(settings: Settings, store: EventLog, db: Database, names: tuple[str, ...] = PROJECTIONS) -> ReadModels:
    if names:
        rebuild_outdated(store, db)
    views: dict[str, Any] = {name: view_class(db) for name, (view_class, _) in SQL_PROJECTIONS.items()}
    if not settings.redis_url:
        views[PUBLIC_LOOKUP] = InProcessPublicView()
    models = ReadModels(settings=settings, views=views)
    listen_url = settings.database_listen_url  # else the library's LISTEN, on the store's own pool
    for name in names:
        if name in SQL_PROJECTIONS:
            models.runners[name] = ProjectionRunner(name, store, views[name], projection_factory=SQL_PROJECTIONS[name][1],
                                                    listen_url=listen_url)
        elif name == PUBLIC_LOOKUP and not settings.redis_url:
            models.runners[name] = ProjectionRunner(name, store, views[name], listen_url=listen_url)
        elif name == PUBLIC_LOOKUP:
            client = sync_redis(settings)
            models.runners[name] = ProjectionRunner(
                name, store, redis_public_view(client, settings), reopen=lambda client=client: redis_public_view(client, settings),
                listen_url=listen_url,
            )
    return models

"""Builds the projections' views and runners for the embedded or the production wiring."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from application.store import EventStore
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.conversation_list import ConversationListProjection, ConversationListView
from projections.public_views import InProcessPublicView, RedisPublicView, current_generation
from projections.runner import ProjectionRunner
from projections.widget_list import WidgetListView

PUBLIC_LOOKUP = "public_lookup"
WIDGET_LIST = "widget_list"
CONVERSATION_LIST = "conversation_list"
PROJECTIONS = (PUBLIC_LOOKUP, WIDGET_LIST, CONVERSATION_LIST)


def sync_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


@dataclass
class ReadModels:
    """The read models of one process, and the runners that keep them (when they run here)."""

    list_view: WidgetListView
    conversation_view: ConversationListView
    public_view: InProcessPublicView | None
    runners: dict[str, ProjectionRunner] = field(default_factory=dict)

    def start(self) -> None:
        for runner in self.runners.values():
            runner.catch_up()
            runner.start()

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()

    def wait(self, position: int, timeout: float) -> bool:
        return all(r.wait(position, timeout) for r in self.runners.values())


def redis_public_view(client: redis.Redis, settings: Settings) -> RedisPublicView:
    return RedisPublicView(client, settings.redis_prefix, current_generation(client, settings.redis_prefix))


def build_runners(settings: Settings, store: EventStore, db: Database, names: tuple[str, ...] = PROJECTIONS) -> ReadModels:
    list_view = WidgetListView(db)
    public_view = InProcessPublicView() if not settings.redis_url else None
    conversation_view = ConversationListView(db)
    models = ReadModels(list_view=list_view, conversation_view=conversation_view, public_view=public_view)
    if WIDGET_LIST in names:
        models.runners[WIDGET_LIST] = ProjectionRunner(WIDGET_LIST, store, list_view)
    if CONVERSATION_LIST in names:
        models.runners[CONVERSATION_LIST] = ProjectionRunner(
            CONVERSATION_LIST, store, conversation_view, projection_factory=ConversationListProjection
        )
    if PUBLIC_LOOKUP in names:
        if public_view is not None:
            models.runners[PUBLIC_LOOKUP] = ProjectionRunner(PUBLIC_LOOKUP, store, public_view)
        else:
            client = sync_redis(settings)
            models.runners[PUBLIC_LOOKUP] = ProjectionRunner(
                PUBLIC_LOOKUP, store, redis_public_view(client, settings), reopen=lambda: redis_public_view(client, settings)
            )
    return models

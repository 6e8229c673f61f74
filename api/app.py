"""The Litestar app: the one place where controllers, errors, middleware and plugins are wired."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import anyio
from litestar import Litestar
from litestar.middleware import DefineMiddleware
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.admin import AgentController, WidgetController
from api.audit import AuditController
from api.embed_routes import embed_router
from api.errors import exception_handlers
from api.hot_path import PublicConfigFront, WidgetsApp
from api.methods import MethodsFront
from api.middleware import RequestContextMiddleware
from api.openapi import StrictStructSchemaPlugin, openapi_config
from api.operations import ReadModelController, healthz, metrics, readyz
from api.personal_data import PersonalDataController
from api.public import PublicWidgetController, livekit_webhook
from api.public_fallback import EventStoreFallback
from api.request_limits import RequestLimits
from api.services import Services
from api.stats import WidgetStatsController
from api.strict_json import StrictJSONRequest
from api.strict_query import QueryContract, StrictQueryMiddleware
from api.webhook_endpoints import WebhookEndpointController
from infrastructure.logging import configure_logging
from infrastructure.redis_clients import async_client
from infrastructure.settings import Settings
from infrastructure.tasks import every, stop_task
from projections.public_reader import InProcessPublicReader, RedisPublicReader

ADMIN_BODY_LIMIT = 64 * 1024
METRICS_FLUSH_INTERVAL = 1.0  # seconds between the hand-overs of the hot path's request metrics to Prometheus


def build_reader(services: Services) -> InProcessPublicReader | RedisPublicReader:
    settings = services.settings
    if not settings.redis_url:
        view = services.read_models.public_view
        assert view is not None
        return InProcessPublicReader(lambda: view)
    client = async_client(  # one Redis, or a Redis Cluster for a redis+cluster:// URL
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_timeout=2,
        socket_connect_timeout=2,
        # A connection left over from before a Redis restart fails once; try again on a fresh one.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    fallback = EventStoreFallback(services.store)
    listener = async_client(settings.redis_url, socket_connect_timeout=2, health_check_interval=10)
    return RedisPublicReader(
        client, settings.redis_prefix, settings.public_cache_size, settings.public_cache_ttl,
        fallback=fallback, head=fallback.head, listener=listener,
        max_in_flight=max(1, settings.redis_max_connections - 2),  # a little room for readiness probes
    )


def create_app(settings: Settings | None = None, services: Services | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    owned = services is None
    built = services or Services.build(settings)
    flusher: list[asyncio.Task[None] | None] = [None, None]
    query_contract = QueryContract()

    async def start(app: Litestar) -> None:
        if owned:
            await anyio.to_thread.run_sync(built.start)
        await anyio.to_thread.run_sync(query_contract.load, app)  # the query parameters' types, from the OpenAPI document
        built.reader = build_reader(built)
        await built.reader.start()
        await built.rate_limits.start()
        flusher[0] = asyncio.create_task(built.installations.run(settings.installations_flush_interval), name="installations-flush")
        flusher[1] = asyncio.create_task(every(METRICS_FLUSH_INTERVAL, app.front.flush_metrics), name="metrics-flush")

    async def stop(app: Litestar) -> None:
        await stop_task(flusher[0])
        await stop_task(flusher[1])
        app.front.flush_metrics()
        with contextlib.suppress(Exception):  # logged; a store that is down loses this process's last seconds of counts
            await built.installations.flush_now()
        await built.rate_limits.close()
        if built.reader is not None:
            await built.reader.close()
        if owned:
            await anyio.to_thread.run_sync(built.close)

    app = WidgetsApp(
        route_handlers=[
            healthz, readyz, metrics, ReadModelController, AgentController, WidgetController, AuditController, PublicWidgetController, livekit_webhook, embed_router,
            WidgetStatsController, WebhookEndpointController, PersonalDataController,
        ],
        exception_handlers=exception_handlers,
        middleware=[RequestContextMiddleware, DefineMiddleware(StrictQueryMiddleware, contract=query_contract)],
        request_max_body_size=ADMIN_BODY_LIMIT,
        request_class=StrictJSONRequest,
        on_startup=[start],
        on_shutdown=[stop],
        openapi_config=openapi_config(),
        plugins=[StrictStructSchemaPlugin()],
        debug=False,
    )
    methods = app.asgi_handler = MethodsFront(app, app.asgi_handler)  # HEAD wherever GET is; a correct Allow (api/methods.py)
    # Before Litestar's own entry point: the public config read, answered when it can be (api/hot_path.py).
    # Litestar's side refuses a request over the URI or header limit first, as a problem (api/request_limits.py).
    app.front = PublicConfigFront(app, RequestLimits(functools.partial(Litestar.__call__, app)), methods.allow_for)
    app.state.services = built
    return app

"""The Litestar app: the one place where controllers, errors, middleware and plugins are wired."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from api.admin import AgentController, WidgetController
from api.errors import exception_handlers
from api.middleware import RequestContextMiddleware
from api.services import Services
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings

ADMIN_BODY_LIMIT = 64 * 1024


@get("/healthz", include_in_schema=True, tags=["operations"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(settings: Settings | None = None, services: Services | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    built = services or Services.build(settings)

    def close_services(app: Litestar) -> None:
        if services is None:
            built.close()

    app = Litestar(
        route_handlers=[healthz, AgentController, WidgetController],
        exception_handlers=exception_handlers,
        middleware=[RequestContextMiddleware],
        request_max_body_size=ADMIN_BODY_LIMIT,
        on_shutdown=[close_services],
        openapi_config=OpenAPIConfig(
            title="Anyreach web widgets",
            version="1.0.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        debug=False,
    )
    app.state.services = built
    return app

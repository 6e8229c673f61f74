"""What every admin handler needs from the request: the verified caller and the wired services."""

from __future__ import annotations

from typing import Any

from litestar import Request

from api.services import Services
from application.commands import Caller


def caller_from(request: Request[Any, Any, Any]) -> Caller:
    services: Services = request.app.state.services
    return services.tokens.verify(request.headers.get("authorization"))


def services_from(request: Request[Any, Any, Any]) -> Services:
    return request.app.state.services

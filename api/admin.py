"""Admin API: agents and widgets. Handlers are thin: parse, call one service method, shape the answer."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import Body, FromPath, HeaderParameter, JSONBody, QueryParameter

from api.admin_lists import ConversationPage, Cursor, Limit, list_conversations, list_widgets
from api.audit import MAX_POSITION, After, History, widget_history
from api.audit import Limit as HistoryLimit
from api.deps import caller_from, services_from
from api.errors import ApiError, ProblemField, problem_responses
from api.schemas import (
    AgentCreate,
    AgentOut,
    DomainsChange,
    VersionCreate,
    VersionOut,
    VersionPin,
    WidgetCreate,
    WidgetOut,
    WidgetPage,
    agent_out,
    version_out,
    widget_out,
)
from api.services import Services
from application.commands import Caller
from application.widgets import WidgetState

IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False, description='Expected aggregate version, e.g. "3"')]
IdempotencyKey = Annotated[
    str | None, HeaderParameter(name="Idempotency-Key", required=False, max_length=255, description="Retry-safe create key (24 h)")
]
ETAG = re.compile(r'^(?:W/)?"?(\d{1,12})"?$')
KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    found = ETAG.match(if_match.strip())
    if not found:
        raise ApiError(400, "invalid_request", "The request is not valid", "If-Match must be an ETag such as \"3\".",
                       errors=[ProblemField("If-Match", 'must be an ETag such as "3"')])
    return int(found.group(1))


def idempotency_key(key: str | None) -> str | None:
    if key is not None and not KEY.match(key):
        raise ApiError(400, "invalid_request", "The request is not valid", errors=[
            ProblemField("Idempotency-Key", "must be 1 to 255 printable ASCII characters")])
    return key


def with_etag(state: WidgetState, status: int = 200) -> Response[WidgetOut]:
    return Response(widget_out(state), status_code=status, headers={"ETag": f'"{state.widget.version}"'})


# What the OpenAPI document declares besides the success: every error is a problem document (api/errors.py).
WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 412, 413, 422, 503)
READ_ERRORS = {status: WRITE_ERRORS[status] for status in (400, 401, 403, 404, 503)}


class AgentController(Controller):
    path = "/v1/agents"
    tags = ["agents"]
    dependencies = {"caller": Provide(caller_from, sync_to_thread=False), "services": Provide(services_from, sync_to_thread=False)}

    @post("/", sync_to_thread=True, status_code=201, summary="Create an agent", responses=WRITE_ERRORS)
    def create_agent(self, caller: NamedDependency[Caller], services: NamedDependency[Services], data: JSONBody[AgentCreate], key: IdempotencyKey = None) -> AgentOut:
        return agent_out(services.agents.create_agent(caller, data.name, idempotency_key(key)))

    @get("/{agent_id:uuid}", sync_to_thread=True, summary="An agent with its versions", responses=READ_ERRORS)
    def get_agent(self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID]) -> AgentOut:
        return agent_out(services.agents.get_agent(caller, agent_id))

    @post("/{agent_id:uuid}/versions", sync_to_thread=True, status_code=201, summary="Create an agent version", responses=WRITE_ERRORS)
    def create_version(
        self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID], key: IdempotencyKey = None,
        data: Annotated[VersionCreate | None, Body()] = None,
    ) -> VersionOut:
        label = data.label if data else None
        version = services.agents.create_version(caller, agent_id, label, idempotency_key(key))
        return version_out(agent_id, version)

    @post("/{agent_id:uuid}/versions/{version_id:uuid}/publish", sync_to_thread=True, status_code=200,
          summary="Publish an agent version", responses=WRITE_ERRORS)
    def publish_version(self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID], version_id: FromPath[UUID], if_match: IfMatch = None) -> VersionOut:
        return version_out(agent_id, services.agents.publish_version(caller, agent_id, version_id, expected_version(if_match)))

    @post("/{agent_id:uuid}/versions/{version_id:uuid}/unpublish", sync_to_thread=True, status_code=200,
          summary="Unpublish an agent version: widgets pinned to it stop serving", responses=WRITE_ERRORS)
    def unpublish_version(self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID], version_id: FromPath[UUID], if_match: IfMatch = None) -> VersionOut:
        return version_out(agent_id, services.agents.unpublish_version(caller, agent_id, version_id, expected_version(if_match)))


class WidgetController(Controller):
    path = "/v1/widgets"
    tags = ["widgets"]
    dependencies = {"caller": Provide(caller_from, sync_to_thread=False), "services": Provide(services_from, sync_to_thread=False)}

    @post("/", sync_to_thread=True, status_code=201, summary="Create a widget", responses=WRITE_ERRORS)
    def create_widget(self, caller: NamedDependency[Caller], services: NamedDependency[Services], data: JSONBody[WidgetCreate], key: IdempotencyKey = None) -> Response[WidgetOut]:
        state = services.widgets.create_widget(
            caller, data.agent_id, data.agent_version_id, data.domains, data.config, idempotency_key(key)
        )
        return with_etag(state, 201)

    @get("/", sync_to_thread=True, summary="This organization's widgets, newest first", responses=READ_ERRORS)
    def list_widgets(self, request: Request[Any, Any, Any], cursor: Cursor = None, limit: Limit = 20) -> WidgetPage:
        return list_widgets(request, cursor, limit)

    @get("/{widget_id:uuid}/conversations", sync_to_thread=True, summary="A widget's conversations with forms and feedback", responses=READ_ERRORS)
    def list_conversations(
        self, request: Request[Any, Any, Any], widget_id: FromPath[UUID], cursor: Cursor = None, limit: Limit = 20
    ) -> ConversationPage:
        return list_conversations(request, widget_id, cursor, limit)

    @get("/{widget_id:uuid}/history", sync_to_thread=True, summary="The widget's events, oldest first (audit:read)", responses=READ_ERRORS)
    def history(self, request: Request[Any, Any, Any], widget_id: FromPath[UUID], after: After = 0, limit: HistoryLimit = 100) -> History:
        return widget_history(request, widget_id, after, limit)

    @get("/{widget_id:uuid}", sync_to_thread=True, summary="A widget, now or as it stood at a version or time", responses=READ_ERRORS)
    def get_widget(
        self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID],
        version: Annotated[int | None, QueryParameter(name="version", ge=1, le=MAX_POSITION, required=False, description="As it stood at this version (audit:read)")] = None,
        at: Annotated[datetime | None, QueryParameter(name="at", required=False, description="As it stood at this RFC 3339 time (audit:read)")] = None,
    ) -> Response[WidgetOut]:
        if at is not None:
            if at.tzinfo is None:
                raise ApiError(400, "invalid_request", "The request is not valid",
                               errors=[ProblemField("at", "must be an RFC 3339 time with a UTC offset")])
            widget = services.history.widget_at_time(caller, widget_id, at)
            return with_etag(services.widgets.state(caller, widget))
        return with_etag(services.widgets.get_widget(caller, widget_id, version))

    @put("/{widget_id:uuid}/domains", sync_to_thread=True, summary="Replace the allowed domains", responses=WRITE_ERRORS)
    def change_domains(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[DomainsChange], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.change_domains(caller, widget_id, data.domains, expected_version(if_match)))

    @put("/{widget_id:uuid}/agent-version", sync_to_thread=True, summary="Pin an agent version", responses=WRITE_ERRORS)
    def pin_version(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[VersionPin], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(
            services.widgets.pin_version(caller, widget_id, data.agent_version_id, data.agent_id, expected_version(if_match))
        )

    @put("/{widget_id:uuid}/config", sync_to_thread=True, summary="Replace the config", responses=WRITE_ERRORS)
    def replace_config(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[dict[str, Any]], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.replace_config(caller, widget_id, data, expected_version(if_match)))

    @patch("/{widget_id:uuid}/config", sync_to_thread=True, summary="Change the config with a JSON merge patch (RFC 7396)",
            responses=WRITE_ERRORS)
    def patch_config(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[dict[str, Any]], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.patch_config(caller, widget_id, data, expected_version(if_match)))

    @post("/{widget_id:uuid}/publish", sync_to_thread=True, status_code=200, summary="Publish the widget", responses=WRITE_ERRORS)
    def publish(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.publish(caller, widget_id, expected_version(if_match)))

    @post("/{widget_id:uuid}/unpublish", sync_to_thread=True, status_code=200, summary="Unpublish the widget", responses=WRITE_ERRORS)
    def unpublish(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.unpublish(caller, widget_id, expected_version(if_match)))

    @delete("/{widget_id:uuid}", sync_to_thread=True, status_code=204, summary="Delete the widget", responses=WRITE_ERRORS)
    def delete_widget(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], if_match: IfMatch = None) -> None:
        services.widgets.delete(caller, widget_id, expected_version(if_match))

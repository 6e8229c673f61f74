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
from api.openapi import BEARER, ETAG_HEADER, ETAG_PATTERN, EVENT_POSITION_HEADER, IDEMPOTENCY_KEY_PATTERN
from api.schemas import (
    AgentCreate,
    AgentOut,
    DomainsChange,
    IdentityKeyAdd,
    RetentionChange,
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

IfMatch = Annotated[str | None, HeaderParameter(
    name="If-Match", required=False, schema_extra={"pattern": ETAG_PATTERN, "maxLength": 16},
    description='The version this change expects, as the last answer\'s ETag gave it (`"3"`), or `*`; 412 if it is no longer current',
)]
IdempotencyKey = Annotated[str | None, HeaderParameter(
    name="Idempotency-Key", required=False, schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN, "minLength": 1, "maxLength": 255},
    description="Retry-safe create: the same key and body within 24 h answer the first response again and create nothing; "
                "another body with the same key is a 422",
)]
ETAG = re.compile(r'^(?:W/)?"(\d{1,12})"$')
KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match == "*":
        return None
    found = ETAG.match(if_match)
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
CREATE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 503)
WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 412, 413, 503)
READ_ERRORS = problem_responses(400, 401, 403, 404, 503)
WIDGET_HEADERS = [ETAG_HEADER, EVENT_POSITION_HEADER]
COMMAND_HEADERS = [EVENT_POSITION_HEADER]


class AgentController(Controller):
    path = "/v1/agents"
    tags = ["agents"]
    security = BEARER
    dependencies = {"caller": Provide(caller_from, sync_to_thread=False), "services": Provide(services_from, sync_to_thread=False)}

    @post("/", sync_to_thread=True, status_code=201, operation_id="create_agent", summary="Create an agent",
          description="Creates an agent in the caller's organization (`widgets:write`). With `Idempotency-Key`, a retry "
                      "within 24 h answers the first response again.",
          responses=problem_responses(400, 401, 403, 409, 413, 422, 503), response_headers=COMMAND_HEADERS)
    def create_agent(self, caller: NamedDependency[Caller], services: NamedDependency[Services], data: JSONBody[AgentCreate], key: IdempotencyKey = None) -> AgentOut:
        return agent_out(services.agents.create_agent(caller, data.name, idempotency_key(key)))

    @get("/{agent_id:uuid}", sync_to_thread=True, operation_id="get_agent", summary="An agent with its versions",
         description="The agent and every version it has, oldest first (`widgets:read`). Another organization's agent is 404.",
         responses=READ_ERRORS)
    def get_agent(self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID]) -> AgentOut:
        return agent_out(services.agents.get_agent(caller, agent_id))

    @post("/{agent_id:uuid}/versions", sync_to_thread=True, status_code=201, operation_id="create_agent_version",
          summary="Create an agent version",
          description="Adds the next numbered version (1, 2, ...), not published (`widgets:write`). The body is optional.",
          responses=CREATE_ERRORS, response_headers=COMMAND_HEADERS)
    def create_version(
        self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID], key: IdempotencyKey = None,
        data: Annotated[VersionCreate | None, Body()] = None,
    ) -> VersionOut:
        label = data.label if data else None
        version = services.agents.create_version(caller, agent_id, label, idempotency_key(key))
        return version_out(agent_id, version)

    @post("/{agent_id:uuid}/versions/{version_id:uuid}/publish", sync_to_thread=True, status_code=200,
          operation_id="publish_agent_version", summary="Publish an agent version",
          description="Widgets pinned to a published version can go live (`widgets:write`). `If-Match` names the agent's version.",
          responses=WRITE_ERRORS, response_headers=COMMAND_HEADERS)
    def publish_version(self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID], version_id: FromPath[UUID], if_match: IfMatch = None) -> VersionOut:
        return version_out(agent_id, services.agents.publish_version(caller, agent_id, version_id, expected_version(if_match)))

    @post("/{agent_id:uuid}/versions/{version_id:uuid}/unpublish", sync_to_thread=True, status_code=200,
          operation_id="unpublish_agent_version", summary="Unpublish an agent version",
          description="Widgets pinned to it stop serving at once (`widgets:write`). `If-Match` names the agent's version.",
          responses=WRITE_ERRORS, response_headers=COMMAND_HEADERS)
    def unpublish_version(self, caller: NamedDependency[Caller], services: NamedDependency[Services], agent_id: FromPath[UUID], version_id: FromPath[UUID], if_match: IfMatch = None) -> VersionOut:
        return version_out(agent_id, services.agents.unpublish_version(caller, agent_id, version_id, expected_version(if_match)))


class WidgetController(Controller):
    path = "/v1/widgets"
    tags = ["widgets"]
    security = BEARER
    dependencies = {"caller": Provide(caller_from, sync_to_thread=False), "services": Provide(services_from, sync_to_thread=False)}

    @post("/", sync_to_thread=True, status_code=201, operation_id="create_widget", summary="Create a widget",
          description="A widget pinned to one version of one of the organization's agents, with its allowed domains and "
                      "config (`widgets:write`). Not published until `publish_widget`.",
          responses=CREATE_ERRORS, response_headers=WIDGET_HEADERS)
    def create_widget(self, caller: NamedDependency[Caller], services: NamedDependency[Services], data: JSONBody[WidgetCreate], key: IdempotencyKey = None) -> Response[WidgetOut]:
        state = services.widgets.create_widget(
            caller, data.agent_id, data.agent_version_id, data.domains, data.config, idempotency_key(key)
        )
        return with_etag(state, 201)

    @get("/", sync_to_thread=True, operation_id="list_widgets", summary="List the organization's widgets",
         description="Newest first, a page at a time: pass `next_cursor` back as `cursor` (`widgets:read`).",
         responses=problem_responses(400, 401, 403, 503))
    def list_widgets(self, request: Request[Any, Any, Any], cursor: Cursor = None, limit: Limit = 20) -> WidgetPage:
        return list_widgets(request, cursor, limit)

    @get("/{widget_id:uuid}/conversations", sync_to_thread=True, operation_id="list_widget_conversations",
         summary="List a widget's conversations",
         description="Newest first, with their forms and feedback (`widgets:read`); pass `next_cursor` back as `cursor`.",
         responses=READ_ERRORS)
    def list_conversations(
        self, request: Request[Any, Any, Any], widget_id: FromPath[UUID], cursor: Cursor = None, limit: Limit = 20
    ) -> ConversationPage:
        return list_conversations(request, widget_id, cursor, limit)

    @get("/{widget_id:uuid}/history", sync_to_thread=True, operation_id="get_widget_history", summary="A widget's events",
         description="Oldest first, after the version `after` (`audit:read`); `next_after` continues when the page was full.",
         responses=READ_ERRORS)
    def history(self, request: Request[Any, Any, Any], widget_id: FromPath[UUID], after: After = 0, limit: HistoryLimit = 100) -> History:
        return widget_history(request, widget_id, after, limit)

    @get("/{widget_id:uuid}", sync_to_thread=True, operation_id="get_widget", summary="Get a widget",
         description="The widget now (`widgets:read`), or as it stood at `version` or at the time `at` (`audit:read`).",
         responses=READ_ERRORS, response_headers=[ETAG_HEADER])
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

    @put("/{widget_id:uuid}/domains", sync_to_thread=True, operation_id="change_widget_domains", summary="Replace the allowed domains",
         description="`host`, `host:port`, `*.host` or `*.host:port`, optionally with a scheme; stored normalised (`widgets:write`).",
         responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def change_domains(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[DomainsChange], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.change_domains(caller, widget_id, data.domains, expected_version(if_match)))

    @put("/{widget_id:uuid}/retention", sync_to_thread=True, operation_id="change_widget_retention",
         summary="Set how long conversations' personal data is kept",
         description="`days` after a conversation's last activity its personal data is erased (reason `retention`) by the "
                     "projection process within a minute; 0 erases it as soon as the conversation ends; null keeps it until "
                     "erased (`widgets:write`).",
         responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def change_retention(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[RetentionChange], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.change_retention(caller, widget_id, data.days, expected_version(if_match)))

    @put("/{widget_id:uuid}/agent-version", sync_to_thread=True, operation_id="pin_widget_agent_version",
         summary="Pin an agent version",
         description="Pins a version of the widget's agent, or of another agent of the organization when `agent_id` names it "
                     "(`widgets:write`).",
         responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def pin_version(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[VersionPin], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(
            services.widgets.pin_version(caller, widget_id, data.agent_version_id, data.agent_id, expected_version(if_match))
        )

    @put("/{widget_id:uuid}/config", sync_to_thread=True, operation_id="replace_widget_config", summary="Replace the config",
         description="The whole `config` (`{\"v1\": {...}}`); fields left out take their defaults (`widgets:write`). "
                     "A 400 lists every invalid field.",
         responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def replace_config(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[dict[str, Any]], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.replace_config(caller, widget_id, data, expected_version(if_match)))

    @patch("/{widget_id:uuid}/config", sync_to_thread=True, operation_id="patch_widget_config", summary="Change the config",
           description="A JSON merge patch (RFC 7396) of the config: `null` resets a field to its default (`widgets:write`).",
           responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def patch_config(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], data: JSONBody[dict[str, Any]], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.patch_config(caller, widget_id, data, expected_version(if_match)))

    @post("/{widget_id:uuid}/identity-keys", sync_to_thread=True, status_code=201, operation_id="add_identity_key",
          summary="Add a public key that signs visitor tokens",
          description="Adds a site's public JWK (EC P-256 for ES256, OKP Ed25519 for EdDSA, with a kid) with which the site's "
                      "backend signs visitor tokens; the site keeps its private key. At most 5 keys; a private key, another "
                      "curve, RSA or a duplicate kid: 400. Records widget.identity_key_added (`widgets:write`).",
          responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def add_identity_key(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID],
                         data: JSONBody[IdentityKeyAdd], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.add_identity_key(caller, widget_id, data.jwk, expected_version(if_match)), 201)

    @delete("/{widget_id:uuid}/identity-keys/{kid:str}", sync_to_thread=True, status_code=200, operation_id="remove_identity_key",
            summary="Remove a visitor-token key",
            description="Removes the key with this kid: tokens it signed are refused from then on. An unknown kid: 404. "
                        "Records widget.identity_key_removed (`widgets:write`).",
            responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def remove_identity_key(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID],
                            kid: FromPath[str], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.remove_identity_key(caller, widget_id, kid, expected_version(if_match)))

    @post("/{widget_id:uuid}/publish", sync_to_thread=True, status_code=200, operation_id="publish_widget", summary="Publish the widget",
          description="The widget is live once published and its pinned agent version is published; "
                      "409 `agent_version_not_published` otherwise (`widgets:write`).",
          responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def publish(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.publish(caller, widget_id, expected_version(if_match)))

    @post("/{widget_id:uuid}/unpublish", sync_to_thread=True, status_code=200, operation_id="unpublish_widget",
          summary="Unpublish the widget", description="Public calls answer 404 from now on (`widgets:write`).",
          responses=WRITE_ERRORS, response_headers=WIDGET_HEADERS)
    def unpublish(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], if_match: IfMatch = None) -> Response[WidgetOut]:
        return with_etag(services.widgets.unpublish(caller, widget_id, expected_version(if_match)))

    @delete("/{widget_id:uuid}", sync_to_thread=True, status_code=204, operation_id="delete_widget", summary="Delete the widget",
            description="Later commands on it answer 409 `widget_deleted`, public calls 404 (`widgets:write`).",
            responses=WRITE_ERRORS, response_headers=COMMAND_HEADERS)
    def delete_widget(self, caller: NamedDependency[Caller], services: NamedDependency[Services], widget_id: FromPath[UUID], if_match: IfMatch = None) -> None:
        services.widgets.delete(caller, widget_id, expected_version(if_match))

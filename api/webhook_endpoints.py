"""Admin API: the organization's outgoing webhook endpoints. The secret is answered on create and rotation only."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter
from msgspec import UNSET, Meta, Struct, UnsetType

from api.admin import (
    COMMAND_HEADERS,
    CREATE_ERRORS,
    READ_ERRORS,
    WRITE_ERRORS,
    IdempotencyKey,
    IfMatch,
    expected_version,
    idempotency_key,
)
from api.admin_lists import Cursor, Limit, check_cursor
from api.deps import caller_from, services_from
from api.errors import ApiError, ProblemField, problem_responses
from api.openapi import BEARER, ETAG_HEADER, EVENT_POSITION_HEADER
from api.schemas import ONE_LINE
from api.services import Services
from application.agents import READ, WRITE
from application.commands import Caller
from application.webhook_endpoints import EndpointWithSecret
from domain.errors import NotFoundError
from domain.webhook_endpoint import MAX_DESCRIPTION, MAX_EVENT_TYPES, WebhookEndpoint
from domain.webhook_url import MAX_URL_LENGTH
from projections.webhook_endpoints import EndpointRow
from projections.webhook_outbox import MESSAGE_ID_PATTERN, Delivery

Url = Annotated[str, Meta(min_length=1, max_length=MAX_URL_LENGTH, description="https URL that receives the deliveries")]
EventTypes = Annotated[list[Annotated[str, Meta(max_length=100)]], Meta(
    max_length=MAX_EVENT_TYPES, description='Event types to deliver (as the audit feed names them), or `["*"]` for all')]
Description = Annotated[str, Meta(max_length=MAX_DESCRIPTION, pattern=ONE_LINE)]


class EndpointCreate(Struct, forbid_unknown_fields=True):
    url: Url
    events: EventTypes
    description: Description | None = None


class EndpointChange(Struct, forbid_unknown_fields=True):
    url: Url | UnsetType = UNSET
    events: EventTypes | UnsetType = UNSET
    disabled: bool | UnsetType = UNSET


class EndpointOut(Struct):
    id: UUID
    organization_id: str
    url: str
    events: list[str]
    description: str | None
    disabled: bool
    disabled_reason: str | None  # request, gone_410 or failing_5_days
    created_at: datetime
    updated_at: datetime
    version: int


class EndpointWithSecretOut(EndpointOut):
    secret: str  # whsec_ + base64; shown only in this answer


class EndpointList(Struct):
    items: list[EndpointOut]


class DeliveryPage(Struct):
    items: list[Delivery]
    next_cursor: str | None


MessageId = Annotated[str, Parameter(pattern=MESSAGE_ID_PATTERN, min_length=36, max_length=36, description="A delivery's `message_id` (its `webhook-id`)")]


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id, organization_id=endpoint.organization_id, url=endpoint.url, events=list(endpoint.events),
        description=endpoint.description, disabled=endpoint.disabled, disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_on, updated_at=endpoint.modified_on, version=endpoint.version,
    )


def row_out(row: EndpointRow) -> EndpointOut:
    return EndpointOut(
        id=UUID(row.id), organization_id=row.organization_id, url=row.url, events=list(row.events), description=row.description,
        disabled=row.disabled, disabled_reason=row.disabled_reason, created_at=row.created_at, updated_at=row.updated_at,
        version=row.version,
    )


def with_etag(endpoint: WebhookEndpoint) -> Response[EndpointOut]:
    return Response(endpoint_out(endpoint), headers={"ETag": f'"{endpoint.version}"'})


def with_secret(answer: EndpointWithSecret, status: int) -> Response[EndpointWithSecretOut]:
    out = EndpointWithSecretOut(**msgspec.structs.asdict(endpoint_out(answer.endpoint)), secret=answer.secret)
    return Response(out, status_code=status, headers={"ETag": f'"{answer.endpoint.version}"', "Cache-Control": "no-store"})


ENDPOINT_HEADERS = [ETAG_HEADER, EVENT_POSITION_HEADER]


class WebhookEndpointController(Controller):
    path = "/v1/webhook-endpoints"
    tags = ["webhook-endpoints"]
    security = BEARER
    dependencies = {"caller": Provide(caller_from, sync_to_thread=False), "services": Provide(services_from, sync_to_thread=False)}

    @post("/", sync_to_thread=True, status_code=201, operation_id="create_webhook_endpoint", summary="Create a webhook endpoint",
          description="An https URL that receives the organization's events of the listed types (`[\"*\"]`: all), signed "
                      "(Standard Webhooks) with the `secret` of this answer, which is shown only here and on rotation "
                      "(`widgets:write`). A URL that is not https, or that names a loopback, private, link-local or multicast "
                      "address, is a 400 naming `url`. With `Idempotency-Key`, a retry within 24 h answers the first response again.",
          responses=CREATE_ERRORS, response_headers=ENDPOINT_HEADERS)
    def create_endpoint(self, caller: NamedDependency[Caller], services: NamedDependency[Services], data: JSONBody[EndpointCreate],
                        key: IdempotencyKey = None) -> Response[EndpointWithSecretOut]:
        created = services.webhook_endpoints.create_endpoint(caller, data.url, data.events, data.description, idempotency_key(key))
        return with_secret(created, 201)

    @get("/", sync_to_thread=True, operation_id="list_webhook_endpoints", summary="List the organization's webhook endpoints",
         description="Every endpoint that is not deleted, oldest first, without secrets (`widgets:read`).",
         responses=problem_responses(400, 401, 403, 503))
    def list_endpoints(self, caller: NamedDependency[Caller], services: NamedDependency[Services]) -> EndpointList:
        caller.require(READ)
        rows = services.read_models.webhook_endpoints_view.endpoints(caller.organization_id)
        return EndpointList(items=[row_out(r) for r in rows])

    @get("/{endpoint_id:uuid}", sync_to_thread=True, operation_id="get_webhook_endpoint", summary="Get a webhook endpoint",
         description="The endpoint now, without its secret (`widgets:read`). Another organization's endpoint, or a deleted one, is 404.",
         responses=READ_ERRORS, response_headers=[ETAG_HEADER])
    def get_endpoint(self, caller: NamedDependency[Caller], services: NamedDependency[Services],
                     endpoint_id: FromPath[UUID]) -> Response[EndpointOut]:
        return with_etag(services.webhook_endpoints.get_endpoint(caller, endpoint_id))

    @patch("/{endpoint_id:uuid}", sync_to_thread=True, operation_id="change_webhook_endpoint", summary="Change a webhook endpoint",
           description="Any of `url`, `events` and `disabled` (`false` enables an endpoint again, also one disabled after a 410 "
                       "or 5 days of failures) (`widgets:write`). `If-Match` names the endpoint's version.",
           responses=WRITE_ERRORS, response_headers=ENDPOINT_HEADERS)
    def change_endpoint(self, caller: NamedDependency[Caller], services: NamedDependency[Services], endpoint_id: FromPath[UUID],
                        data: JSONBody[EndpointChange], if_match: IfMatch = None) -> Response[EndpointOut]:
        endpoint = services.webhook_endpoints.change_endpoint(
            caller, endpoint_id,
            url=None if data.url is UNSET else data.url,
            events=None if data.events is UNSET else data.events,
            disabled=None if data.disabled is UNSET else data.disabled,
            expected_version=expected_version(if_match),
        )
        return with_etag(endpoint)

    @delete("/{endpoint_id:uuid}", sync_to_thread=True, status_code=204, operation_id="delete_webhook_endpoint",
            summary="Delete a webhook endpoint",
            description="No delivery is made to it from now on, and its secrets are destroyed; it answers 404 afterwards "
                        "(`widgets:write`).",
            responses=WRITE_ERRORS, response_headers=COMMAND_HEADERS)
    def delete_endpoint(self, caller: NamedDependency[Caller], services: NamedDependency[Services], endpoint_id: FromPath[UUID],
                        if_match: IfMatch = None) -> None:
        services.webhook_endpoints.delete_endpoint(caller, endpoint_id, expected_version(if_match))

    @post("/{endpoint_id:uuid}/rotate-secret", sync_to_thread=True, status_code=200, operation_id="rotate_webhook_endpoint_secret",
          summary="Rotate a webhook endpoint's secret",
          description="Answers the new `secret`, shown only here; deliveries carry a signature by each of the new and the old "
                      "secret for 24 hours, then by the new one alone (`widgets:write`).",
          responses=WRITE_ERRORS, response_headers=ENDPOINT_HEADERS)
    def rotate_secret(self, caller: NamedDependency[Caller], services: NamedDependency[Services], endpoint_id: FromPath[UUID],
                      if_match: IfMatch = None) -> Response[EndpointWithSecretOut]:
        return with_secret(services.webhook_endpoints.rotate_secret(caller, endpoint_id, expected_version(if_match)), 200)

    @get("/{endpoint_id:uuid}/deliveries", sync_to_thread=True, operation_id="list_webhook_deliveries",
         summary="List a webhook endpoint's deliveries",
         description="One row per event sent (or to be sent) to the endpoint, newest event first: its `message_id` (the "
                     "`webhook-id` header of every attempt), attempts, status (`pending`, `succeeded` or `failed`), the last "
                     "response's status code (or `last_error` when there was none: `timeout`, `connect_failed`, "
                     "`address_not_allowed`, ...), and when the next attempt is due. No body is kept (`widgets:read`). Pass "
                     "`next_cursor` back as `cursor` for the next page.",
         responses=READ_ERRORS)
    def list_deliveries(self, caller: NamedDependency[Caller], services: NamedDependency[Services], endpoint_id: FromPath[UUID],
                        cursor: Cursor = None, limit: Limit = 20) -> DeliveryPage:
        services.webhook_endpoints.get_endpoint(caller, endpoint_id)  # READ, and 404 for another organization's
        check_cursor(cursor)
        try:
            items, next_cursor = services.read_models.webhook_outbox_view.deliveries(str(endpoint_id), limit, cursor)
        except ValueError:
            raise ApiError(400, "invalid_request", "The request is not valid",
                           errors=[ProblemField("cursor", "is not a cursor this API returned")]) from None
        return DeliveryPage(items=items, next_cursor=next_cursor)

    @post("/{endpoint_id:uuid}/deliveries/{message_id:str}/retry", sync_to_thread=True, status_code=202,
          operation_id="retry_webhook_delivery", summary="Retry one delivery now",
          description="The delivery is attempted again at once, with the same `webhook-id`, whatever its status (a failed one "
                      "gets one more attempt, and the schedule's retries if that fails while attempts remain) (`widgets:write`). "
                      "An unknown message, or another organization's endpoint, is 404.",
          responses=problem_responses(400, 401, 403, 404, 503))
    def retry_delivery(self, caller: NamedDependency[Caller], services: NamedDependency[Services], endpoint_id: FromPath[UUID],
                       message_id: MessageId) -> None:
        caller.require(WRITE)
        services.webhook_endpoints.get_endpoint(caller, endpoint_id)
        if not services.read_models.webhook_outbox_view.retry(str(endpoint_id), message_id, time.time()):
            raise NotFoundError("Webhook delivery", message_id)
        if services.dispatcher is not None:
            services.dispatcher.wake()

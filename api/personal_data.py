"""Erasure of visitors' personal data: one conversation, or every conversation of a verified visitor."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, Parameter

from api.admin_lists import verified_visitor_conversations
from api.deps import caller_from, services_from
from api.errors import ApiError, ProblemField, problem_responses
from api.openapi import BEARER, EVENT_POSITION_HEADER
from api.services import Services
from application.commands import Caller
from application.personal_data import SCOPE
from infrastructure.visitor_tokens import MAX_SUBJECT_LENGTH
from projections.positions import reached

ERASE_ERRORS = problem_responses(400, 401, 403, 404, 503)
LIST_WAIT = 5.0  # how long an erasure by visitor waits for the conversation list to list everything so far
ExternalId = Annotated[str, Parameter(min_length=1, max_length=MAX_SUBJECT_LENGTH,
                                      description="The verified visitor's external id: the `sub` of the site's visitor tokens")]


class PersonalDataController(Controller):
    path = "/v1"
    tags = ["personal-data"]
    security = BEARER
    dependencies = {"caller": Provide(caller_from, sync_to_thread=False), "services": Provide(services_from, sync_to_thread=False)}

    @delete("/widgets/{widget_id:uuid}/conversations/{conversation_id:uuid}/personal-data", sync_to_thread=True,
            status_code=204, operation_id="erase_conversation_personal_data", summary="Erase a conversation's personal data",
            description="Destroys the conversation's data key and records `conversation.personal_data_erased` (`widgets:write`). "
                        "Idempotent. From then on the conversation shows `visitor` `{}`, each form's `values` `{}`, the "
                        "feedback `comment` null and `erased_at` set.",
            responses=ERASE_ERRORS, response_headers=[EVENT_POSITION_HEADER])
    def erase_conversation(self, caller: NamedDependency[Caller], services: NamedDependency[Services],
                           widget_id: FromPath[UUID], conversation_id: FromPath[UUID]) -> None:
        caller.require(SCOPE)
        services.widgets.load(caller, widget_id)  # another organization's widget is not found
        services.personal_data.erase(caller, widget_id, conversation_id, "request")

    @delete("/visitors/{external_id:str}/personal-data", sync_to_thread=True, status_code=204,
            operation_id="erase_visitor_personal_data", summary="Erase a verified visitor's personal data",
            description="Erases every conversation that the verified visitor with this external id (their token's `sub`) "
                        "started in the organization, with reason `visitor_request` (`widgets:write`). Idempotent; a visitor "
                        "with no conversation is answered 204 too. 503 `read_model_behind` (nothing erased) if the "
                        "conversation list has not caught up with the event store within 5 s.",
            responses=ERASE_ERRORS, response_headers=[EVENT_POSITION_HEADER])
    def erase_visitor(self, caller: NamedDependency[Caller], services: NamedDependency[Services], external_id: ExternalId) -> None:
        caller.require(SCOPE)
        if not 1 <= len(external_id) <= MAX_SUBJECT_LENGTH:
            raise ApiError(400, "invalid_request", "The request is not valid",
                           errors=[ProblemField("external_id", f"must be 1 to {MAX_SUBJECT_LENGTH} characters")])
        # Every conversation the visitor started before this request, so the conversation list at least at the log's
        # head: one started a moment ago and not yet listed would escape the erasure.
        head = services.store.recorder.max_notification_id() or 0
        if reached(services.read_models.conversation_view, head, LIST_WAIT) < head:
            raise ApiError(503, "read_model_behind", "The conversation list is behind the event store",
                           "Not every conversation of the visitor is listed yet; nothing was erased. Try again.",
                           headers={"Retry-After": "1"})
        found = verified_visitor_conversations(services, caller.organization_id, external_id)
        services.personal_data.erase_all(caller, found, "visitor_request")

"""Typed domain errors. One place (api/errors.py) turns them into problem responses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One invalid field: a dotted path into the request and what is wrong with it."""

    field: str
    message: str


class DomainError(Exception):
    """A rule of the domain refused a command (HTTP 409 unless a subclass says otherwise)."""

    code = "domain_rule"
    title = "The command was refused"
    status = 409

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


@dataclass
class ValidationError(Exception):
    """Input that is not valid; lists every invalid field, not only the first (HTTP 400)."""

    errors: list[FieldError] = field(default_factory=list)
    detail: str = "The request is not valid."

    code = "invalid_request"

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def prefixed(self, prefix: str) -> ValidationError:
        """The same errors with every field path put under `prefix`."""
        return ValidationError(
            [FieldError(f"{prefix}.{e.field}" if e.field else prefix, e.message) for e in self.errors],
            self.detail,
        )


class NotFoundError(Exception):
    """Unknown id, or one that belongs to another organization (never a 403)."""

    code = "not_found"

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} was not found.")
        self.what = what
        self.ident = ident


class WidgetDeletedError(DomainError):
    code = "widget_deleted"
    title = "Widget is deleted"


class AgentVersionNotPublishedError(DomainError):
    code = "agent_version_not_published"
    title = "Agent version is not published"


class VersionNotInAgentError(DomainError):
    code = "version_not_in_agent"
    title = "Agent version does not belong to the agent"


class ConversationEndedError(DomainError):
    code = "conversation_ended"
    title = "Conversation has ended"


class ConversationErasedError(DomainError):
    """The conversation's personal data was erased: it takes nothing more (HTTP 410)."""

    code = "conversation_erased"
    title = "Conversation has been erased"
    status = 410


class SubmissionLimitError(DomainError):
    """A conversation already holds as many submissions as its bound allows (HTTP 429)."""

    code = "submission_limit"
    title = "Submission limit reached"
    status = 429

"""Who a visitor is, as far as we can tell: a token the site signed (verified), or nothing (anonymous).

The widget's `identity.mode` decides: `off` ignores tokens, `optional` checks one if
sent, `required` refuses a conversation without one. Context comes from the page
(unverified) and from the token (verified); both are checked against the keys the
widget declares, and a key in both is the token's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from domain.config import ContextKey
from domain.errors import ValidationError
from domain.identity import IdentityKey
from domain.visitor_context import validate_context


class VisitorTokenInvalidError(Exception):
    """A visitor token failed a check; which one is never said (HTTP 401)."""

    code = "visitor_token_invalid"

    def __init__(self) -> None:
        super().__init__("The visitor token is not valid.")


class VisitorTokenRequiredError(Exception):
    """The widget requires a verified visitor and no token was sent (HTTP 401)."""

    code = "visitor_token_required"

    def __init__(self) -> None:
        super().__init__("This widget requires a visitor token signed by the site.")


@dataclass(frozen=True)
class VerifiedVisitor:
    """The claims of a token that passed every check."""

    external_id: str
    name: str | None = None
    email: str | None = None
    context: Any = None


class VisitorTokens(Protocol):
    """Checks visitor tokens against a widget's public keys, and derives a verified visitor's lookup values."""

    def verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor: ...

    def refs(self, organization_id: str, external_id: str) -> list[str]: ...


@dataclass(frozen=True)
class Identified:
    """A visitor as a conversation call sees them: verified or not, and the context they bring."""

    verified: VerifiedVisitor | None = None
    ref: str | None = None  # the verified visitor's lookup value under the current deployment key
    refs: tuple[str, ...] = ()  # ... and under the previous one too
    context: dict[str, Any] = field(default_factory=lambda: {"verified": {}, "page": {}})

    def recorded(self, visitor: dict[str, Any]) -> dict[str, Any]:
        """The conversation's `visitor` (personal data, sealed at rest): the page's, and a verified visitor's claims."""
        if self.verified is None:
            return visitor
        claims = {"name": self.verified.name, "email": self.verified.email}
        return {**visitor, **{k: v for k, v in claims.items() if v is not None}, "external_id": self.verified.external_id,
                "verified": True}

    @property
    def stored_context(self) -> dict[str, Any] | None:
        """The context to record (personal data, sealed at rest), or None when neither the page nor the token gave any."""
        return self.context if self.context["verified"] or self.context["page"] else None

    @property
    def metadata(self) -> dict[str, Any]:
        """The dispatch metadata's `visitor`."""
        if self.verified is None:
            return {"verified": False}
        found: dict[str, Any] = {"external_id": self.verified.external_id, "verified": True}
        if self.verified.name is not None:
            found["name"] = self.verified.name
        return found


ANONYMOUS = Identified()


class _NoTokens:
    """Where no verifier is wired (tests of other things): every token is refused."""

    def verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        raise VisitorTokenInvalidError()

    def refs(self, organization_id: str, external_id: str) -> list[str]:
        return []


NO_TOKENS: VisitorTokens = _NoTokens()


def identify(
    tokens: VisitorTokens, widget_id: str, organization_id: str, config: dict[str, Any], keys: tuple[IdentityKey, ...],
    token: str | None, page_context: Any,
) -> Identified:
    """Check a call's token and context against the widget; raises the 401s or a `ValidationError` naming the key."""
    v1 = config.get("v1", {})
    mode = v1.get("identity", {}).get("mode", "off")
    verified = None
    if mode != "off" and token is not None:
        verified = tokens.verify(token, widget_id, keys)
    elif mode == "required":
        raise VisitorTokenRequiredError()
    token_context = verified.context if verified is not None else None
    if verified is None and page_context is None:
        return ANONYMOUS
    if page_context is None and token_context is None:
        context: dict[str, Any] = {"verified": {}, "page": {}}
    else:
        declared = msgspec.convert(v1.get("context", []), tuple[ContextKey, ...])
        checked, errors = {}, []
        for path, values in (("context", page_context), ("visitor_token.context", token_context)):
            try:
                checked[path] = validate_context(declared, values, path)
            except ValidationError as e:
                errors += e.errors
        if errors:
            raise ValidationError(errors, "The context is not valid.")
        from_token = checked["visitor_token.context"]
        context = {"verified": from_token, "page": {k: v for k, v in checked["context"].items() if k not in from_token}}
    if verified is None:
        return Identified(context=context)
    refs = tuple(tokens.refs(organization_id, verified.external_id))
    return Identified(verified=verified, ref=refs[0], refs=refs, context=context)

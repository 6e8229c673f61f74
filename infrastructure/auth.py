"""Admin bearer tokens: HS256 JWTs with `sub`, `org_id`, `scope` and `exp`."""

from __future__ import annotations

import time

import jwt

from application.commands import Caller

ALGORITHM = "HS256"
KNOWN_SCOPES = ("widgets:write", "widgets:read", "audit:read")
MIN_SECRET_BYTES = 16


class InvalidTokenError(Exception):
    """Missing, expired, badly signed or malformed admin token (HTTP 401)."""

    code = "invalid_token"


class TokenLifetimeTooLongError(InvalidTokenError):
    """A well-signed admin token that would live longer than WIDGETS_AUTH_MAX_TTL, or does not say how long (HTTP 401)."""

    code = "token_lifetime_too_long"


class TokenAuthority:
    """Mints and verifies admin tokens with one shared secret; none lives longer than `max_ttl` seconds."""

    def __init__(self, secret: str, max_ttl: int = 86400) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise SystemExit(f"WIDGETS_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
        self._secret = secret
        self.max_ttl = max_ttl

    def mint(self, organization_id: str, subject: str, scopes: list[str], ttl: int = 3600) -> str:
        now = int(time.time())
        claims = {"sub": subject, "org_id": organization_id, "scope": " ".join(scopes), "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, authorization: str | None) -> Caller:
        if not authorization:
            raise InvalidTokenError("An Authorization: Bearer token is required.")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise InvalidTokenError("The Authorization header must be 'Bearer <token>'.")
        try:
            claims = jwt.decode(
                token.strip(),
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub", "org_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("The token has expired.") from None
        except jwt.InvalidTokenError:
            raise InvalidTokenError("The token is not valid.") from None
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):  # RFC 7519: a JSON number
            raise InvalidTokenError("The token's exp must be a number.")
        subject, organization, scope = claims.get("sub"), claims.get("org_id"), claims.get("scope", "")
        if not (isinstance(subject, str) and subject and isinstance(organization, str) and organization):
            raise InvalidTokenError("The token's sub and org_id must be non-empty strings.")
        if not isinstance(scope, str):
            raise InvalidTokenError("The token's scope must be a space-separated string.")
        # Last, so that a token broken in another way says that: a stolen token is good for max_ttl at most.
        issued = claims.get("iat")
        if issued is None:
            raise TokenLifetimeTooLongError(f"The token must carry iat and exp at most {self.max_ttl} seconds apart.")
        if not isinstance(issued, int | float) or isinstance(issued, bool):
            raise InvalidTokenError("The token's iat must be a number.")
        if expires - issued > self.max_ttl:
            raise TokenLifetimeTooLongError(f"The token lives {int(expires - issued)} seconds (exp - iat); "
                                            f"at most {self.max_ttl} are accepted.")
        return Caller(organization_id=organization, actor=subject, scopes=frozenset(scope.split()))

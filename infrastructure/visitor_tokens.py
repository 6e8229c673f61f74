"""Visitor tokens: JWTs a site's backend signs with its own private key, checked here with PyJWT.

The key is the one the token's `kid` names among the widget's keys, and the algorithm
is the one that key's type fixes (ES256 for P-256, EdDSA for Ed25519): the header's
`alg` never chooses it, so `none`, HS256 keyed with the public key, or another curve
cannot pass. Keys are parsed once per widget and key and kept in a bounded cache, so a
conversation start pays for the signature check only. Every failure is the same
`VisitorTokenInvalidError`, whose message says nothing of the token; the token itself
is never logged or kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import jwt

from application.visitors import VerifiedVisitor, VisitorTokenInvalidError
from domain.identity import IdentityKey

LEEWAY_SECONDS = 60
MAX_LIFETIME_SECONDS = 24 * 3600
MAX_SUBJECT_LENGTH = 128
MAX_TOKEN_LENGTH = 8 * 1024
KEY_CACHE_SIZE = 4096
_OPTIONS: Any = {"require": ["aud", "sub", "iat", "exp"], "strict_aud": True, "verify_signature": True}


class VisitorTokenVerifier:
    """Checks visitor tokens against a widget's public keys; derives the stored lookup of a verified visitor."""

    def __init__(self, data_key: str, data_key_previous: str = "") -> None:
        self._loaded: dict[tuple[str, str, str, str], Any] = {}
        self._ref_keys = [_ref_key(k) for k in (data_key, data_key_previous) if k]

    def verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        try:
            return self._verify(token, widget_id, keys)
        except VisitorTokenInvalidError:
            raise
        except Exception:  # PyJWT's errors and anything a hostile token provokes: one answer, no detail
            raise VisitorTokenInvalidError() from None

    def _verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise VisitorTokenInvalidError()
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in keys if k.kid == kid), None) if isinstance(kid, str) else None
        if key is None:
            raise VisitorTokenInvalidError()
        claims = jwt.decode(token, self._public_key(widget_id, key), algorithms=[key.alg], audience=widget_id,
                            leeway=LEEWAY_SECONDS, options=_OPTIONS)
        sub, iat, exp = claims["sub"], claims["iat"], claims["exp"]
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUBJECT_LENGTH:
            raise VisitorTokenInvalidError()
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (iat, exp)) or exp - iat > MAX_LIFETIME_SECONDS:
            raise VisitorTokenInvalidError()
        name, email, context = claims.get("name"), claims.get("email"), claims.get("context")
        if not all(v is None or isinstance(v, str) for v in (name, email)) or not (context is None or isinstance(context, dict)):
            raise VisitorTokenInvalidError()
        return VerifiedVisitor(external_id=sub, name=name, email=email, context=context)

    def _public_key(self, widget_id: str, key: IdentityKey) -> Any:
        cache_key = (widget_id, key.kid, key.jwk["x"], key.jwk.get("y", ""))
        loaded = self._loaded.get(cache_key)
        if loaded is None:
            loaded = jwt.PyJWK(key.jwk, algorithm=key.alg).key
            if len(self._loaded) >= KEY_CACHE_SIZE:
                self._loaded.clear()
            self._loaded[cache_key] = loaded
        return loaded

    def refs(self, organization_id: str, external_id: str) -> list[str]:
        """The lookup values of a verified visitor: the one new conversations store first, then the one under the
        previous deployment key (conversations recorded before the last rotation)."""
        message = f"{organization_id}\x00{external_id}".encode()
        return [hmac.new(key, message, hashlib.sha256).hexdigest() for key in self._ref_keys]


def _ref_key(data_key: str) -> bytes:
    # A key of its own, derived from the deployment key: a visitor's lookup value says nothing without it.
    return hmac.new(base64.b64decode(data_key), b"anyreach visitor lookup v1", hashlib.sha256).digest()

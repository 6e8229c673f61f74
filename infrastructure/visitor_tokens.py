"""Visitor tokens: JWTs a site's backend signs with its own private key, checked here.

The key is the one the token's `kid` names among the widget's keys, and the algorithm
is the one that key's type fixes (ES256 for P-256, EdDSA for Ed25519): a header whose
`alg` says anything else is refused, so `none`, HS256 keyed with the public key, or
another curve cannot pass. The signature is checked by PyJWT's algorithm for that key
type (which turns ES256's raw r||s into DER and checks the curve), on keys PyJWT's
`PyJWK` loaded once per widget and key and kept in a bounded cache.

The compact form is parsed here rather than by `jwt.decode`: PyJWT 2.15 parses a token
twice when the `kid` is read first (`get_unverified_header`, then `decode`) and checks
every base64 character in a Python loop, which cost a conversation start more than the
signature check itself (tests/bench/bench_visitor_tokens.py). The parse is as strict as
PyJWT's (canonical unpadded base64url, a JSON object header, no `crit` or `b64`), and
the claims are checked as `jwt.decode` checks them with `require` aud, sub, iat, exp,
`strict_aud` and 60 s of leeway, plus our own rules: `sub` 1-128 characters and `exp` at
most 24 h after `iat`. tests/properties/test_visitor_tokens.py holds the two to the same
answers. Every failure is the same `VisitorTokenInvalidError`, whose message says
nothing of the token; the token itself is never logged or kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from typing import Any

import jwt
import msgspec
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from application.visitors import VerifiedVisitor, VisitorTokenInvalidError
from domain.identity import IdentityKey
from infrastructure.personal_data import VISITOR_LOOKUP_KEYS_ID, PersonalDataVault

LEEWAY_SECONDS = 60
MAX_LIFETIME_SECONDS = 24 * 3600
MAX_SUBJECT_LENGTH = 128
MAX_TOKEN_LENGTH = 8 * 1024
KEY_CACHE_SIZE = 4096
_COMPACT = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_VERIFIERS = {"ES256": ECAlgorithm(ECAlgorithm.SHA256), "EdDSA": OKPAlgorithm()}
_decode_json = msgspec.json.Decoder().decode


def _segment(segment: bytes) -> bytes:
    """A base64url segment without padding, decoded; only its canonical spelling is accepted (as PyJWT does)."""
    if len(segment) % 4 == 1:
        raise VisitorTokenInvalidError()
    try:
        data = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise VisitorTokenInvalidError() from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment:
        raise VisitorTokenInvalidError()
    return data


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class VisitorTokenVerifier:
    """Checks visitor tokens against a widget's public keys; derives the stored lookup of a verified visitor."""

    def __init__(self, data_key: str, data_key_previous: str = "", stored: Sequence[bytes] = ()) -> None:
        """`stored`: the lookup keys kept in the key table (`lookup_keys`), which stay when the deployment key is
        rotated; the first of them makes new conversations' lookup values. Without them (tests, benchmarks) the keys
        derived from the configured deployment keys serve."""
        self._loaded: dict[tuple[str, str, str, str], Any] = {}
        derived = [_ref_key(k) for k in (data_key, data_key_previous) if k]
        self._ref_keys = list(dict.fromkeys([*stored, *derived]))

    def verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        try:
            return self._verify(token, widget_id, keys)
        except VisitorTokenInvalidError:
            raise
        except Exception:  # PyJWT's errors and anything a hostile token provokes: one answer, no detail
            raise VisitorTokenInvalidError() from None

    def _verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise VisitorTokenInvalidError()
        raw = token.encode("ascii")
        parts = _COMPACT.fullmatch(raw)
        if parts is None:
            raise VisitorTokenInvalidError()
        header = _decode_json(_segment(parts.group(1)))
        if not isinstance(header, dict) or "crit" in header or "b64" in header:
            raise VisitorTokenInvalidError()
        kid = header.get("kid")
        key = next((k for k in keys if k.kid == kid), None) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.alg:  # the key's type fixes the algorithm, never the header
            raise VisitorTokenInvalidError()
        signature = _segment(parts.group(3))
        signing_input = raw[: parts.end(2)]
        if not _VERIFIERS[key.alg].verify(signing_input, self._public_key(widget_id, key), signature):
            raise VisitorTokenInvalidError()
        claims = _decode_json(_segment(parts.group(2)))
        if not isinstance(claims, dict):
            raise VisitorTokenInvalidError()
        return _checked_claims(claims, widget_id, time.time())

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


def lookup_keys(vault: PersonalDataVault, data_key: str, data_key_previous: str = "") -> list[bytes]:
    """The visitor lookup keys, kept wrapped in the key table so that a visitor's conversations stay found when the
    deployment key is rotated away (the lookup values are stored in events and rows, and cannot be recomputed
    without the external ids). Made once, from the keys earlier versions derived from the deployment key, so the
    values they stored match: the previous one first when a rotation is under way (it made the older values)."""
    derived = [_ref_key(k) for k in (data_key_previous, data_key) if k]
    raw = vault.stored_secret(VISITOR_LOOKUP_KEYS_ID, lambda: b"".join(dict.fromkeys(derived)))
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def _ref_key(data_key: str) -> bytes:
    # A key of its own, derived from the deployment key: a visitor's lookup value says nothing without it.
    return hmac.new(base64.b64decode(data_key), b"anyreach visitor lookup v1", hashlib.sha256).digest()


def _checked_claims(claims: dict[str, Any], widget_id: str, now: float) -> VerifiedVisitor:
    """The claims `jwt.decode` would accept (aud, sub, iat, exp required; strict aud; 60 s leeway), within our rules."""
    sub, iat, exp, nbf = claims.get("sub"), claims.get("iat"), claims.get("exp"), claims.get("nbf", 0)
    if claims.get("aud") != widget_id or not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUBJECT_LENGTH:
        raise VisitorTokenInvalidError()
    if not (_number(iat) and _number(exp) and _number(nbf)):
        raise VisitorTokenInvalidError()
    if exp <= now - LEEWAY_SECONDS or iat > now + LEEWAY_SECONDS or nbf > now + LEEWAY_SECONDS or exp - iat > MAX_LIFETIME_SECONDS:
        raise VisitorTokenInvalidError()
    name, email, context = claims.get("name"), claims.get("email"), claims.get("context")
    if not all(v is None or isinstance(v, str) for v in (name, email)) or not (context is None or isinstance(context, dict)):
        raise VisitorTokenInvalidError()
    return VerifiedVisitor(external_id=sub, name=name, email=email, context=context)

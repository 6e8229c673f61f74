"""Visitor tokens: JWTs a site's backend signs with its own private key, checked here.

The key is the one the token's `kid` names among the widget's keys, and the algorithm
is the one that key's type fixes (ES256 for P-256, EdDSA for Ed25519): a header whose
`alg` says anything else is refused, so `none`, HS256 keyed with the public key, or
another curve cannot pass. The keys are loaded by PyJWT's `PyJWK` once per widget and
set of keys, kept in a bounded cache, and the signature is checked by `cryptography`
on that key object: ES256 with one prebuilt `ECDSA(SHA256)`, its raw r||s (64 bytes,
as JWS has it) turned into DER as PyJWT does. EdDSA signatures are checked by libsodium
(PyNaCl) on the key's raw 32 bytes: OpenSSL 3's Ed25519 verify costs about twice
libsodium's here (106-128 µs against 60-65), more than the rest of a conversation's
start would allow (tests/bench/bench_visitor_tokens.py). libsodium is the stricter of
the two (it also refuses small-order keys and points), so nothing OpenSSL refuses passes.

The compact form is parsed here rather than by `jwt.decode`: PyJWT 2.15 parses a token
twice when the `kid` is read first (`get_unverified_header`, then `decode`) and checks
every base64 character in a Python loop, which cost a conversation start more than the
signature check itself (tests/bench/bench_visitor_tokens.py). The parse is as strict as
PyJWT's (canonical unpadded base64url, a JSON object header, no `crit` or `b64`), and
a site's tokens share a header, so a header segment is parsed once and kept (bounded).
The claims are checked as `jwt.decode` checks them with `require` aud, sub, iat, exp,
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from application.visitors import VerifiedVisitor, VisitorTokenInvalidError
from domain.identity import IdentityKey
from infrastructure.personal_data import VISITOR_LOOKUP_KEYS_ID, PersonalDataVault

LEEWAY_SECONDS = 60
MAX_LIFETIME_SECONDS = 24 * 3600
MAX_SUBJECT_LENGTH = 128
MAX_TOKEN_LENGTH = 8 * 1024
KEY_CACHE_SIZE = 4096  # widgets whose parsed keys are kept
HEADER_CACHE_SIZE = 1024  # distinct header segments kept parsed (a site's tokens share one)
_COMPACT = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_decode_json = msgspec.json.Decoder().decode
_STANDARD_ALPHABET = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
# The last character of an unpadded segment carries bits that must be zero: 4 of them when the segment's length
# is 2 mod 4, 2 when it is 3 mod 4. Only these spellings are canonical (the ones encoding gives back).
_CANONICAL_LAST = (frozenset(), frozenset(), frozenset(b"AQgw"), frozenset(b"AEIMQUYcgkosw048"))
_NUMBERS = (int, float)  # msgspec decodes JSON numbers to exactly these (and true/false to bool, which is refused)


def _segment(segment: bytes) -> bytes:
    """A base64url segment without padding, decoded; only its canonical spelling is accepted (as PyJWT does).
    `segment` is made of base64url characters only (the compact form's pattern says so)."""
    rest = len(segment) & 3
    if rest == 1 or (rest and segment[-1] not in _CANONICAL_LAST[rest]):
        raise VisitorTokenInvalidError()
    return binascii.a2b_base64(segment.translate(_STANDARD_ALPHABET) + _PADDING[rest])


class _Keyring:
    """A widget's keys as the verifier uses them: by `kid`, the algorithm and the loaded public key. `keys` is the
    tuple it was built from, and `fingerprint` what it says of the keys (a new tuple with the same keys reuses it)."""

    __slots__ = ("by_kid", "fingerprint", "keys")

    def __init__(self, keys: tuple[IdentityKey, ...], fingerprint: tuple[tuple[str, ...], ...]) -> None:
        self.keys, self.fingerprint = keys, fingerprint
        self.by_kid: dict[str, tuple[str, Any]] = {}
        for key in keys:
            if key.kid not in self.by_kid:  # the first key of a kid, as a lookup by kid finds it
                self.by_kid[key.kid] = (key.alg, _load(key))


def _load(key: IdentityKey) -> Any:
    """The verifying key of a JWK (loaded by PyJWT; for EdDSA, libsodium's on its raw bytes), or None if it is not the
    type its algorithm needs."""
    try:
        loaded = jwt.PyJWK(key.jwk, algorithm=key.alg).key
    except Exception:
        return None
    if key.alg == "ES256":
        return loaded if isinstance(loaded, ec.EllipticCurvePublicKey) and isinstance(loaded.curve, ec.SECP256R1) else None
    if key.alg == "EdDSA" and isinstance(loaded, ed25519.Ed25519PublicKey):
        return VerifyKey(loaded.public_bytes(Encoding.Raw, PublicFormat.Raw))
    return None


def _fingerprint(keys: tuple[IdentityKey, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple((k.kid, k.alg, k.jwk.get("x", ""), k.jwk.get("y", "")) for k in keys)


class VisitorTokenVerifier:
    """Checks visitor tokens against a widget's public keys; derives the stored lookup of a verified visitor."""

    def __init__(self, data_key: str, data_key_previous: str = "", stored: Sequence[bytes] = ()) -> None:
        """`stored`: the lookup keys kept in the key table (`lookup_keys`), which stay when the deployment key is
        rotated; the first of them makes new conversations' lookup values. Without them (tests, benchmarks) the keys
        derived from the configured deployment keys serve."""
        self._keyrings: dict[str, _Keyring] = {}
        self._headers: dict[bytes, tuple[str, Any]] = {}
        derived = [_ref_key(k) for k in (data_key, data_key_previous) if k]
        self._ref_keys = list(dict.fromkeys([*stored, *derived]))

    def verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        try:
            return self._verify(token, widget_id, keys)
        except VisitorTokenInvalidError:
            raise
        except Exception:  # anything a hostile token provokes: one answer, no detail
            raise VisitorTokenInvalidError() from None

    def _verify(self, token: str, widget_id: str, keys: tuple[IdentityKey, ...]) -> VerifiedVisitor:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise VisitorTokenInvalidError()
        raw = token.encode("ascii")
        parts = _COMPACT.fullmatch(raw)
        if parts is None:
            raise VisitorTokenInvalidError()
        kid, alg = self._header(parts.group(1))
        found = self._keyring(widget_id, keys).by_kid.get(kid)
        if found is None or alg != found[0]:  # the key's type fixes the algorithm, never the header
            raise VisitorTokenInvalidError()
        key_alg, public_key = found
        signature = _segment(parts.group(3))
        signing_input = raw[: parts.end(2)]
        try:
            if key_alg == "ES256":
                if len(signature) != 64:  # JWS's raw r || s, 32 bytes each
                    raise VisitorTokenInvalidError()
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
                public_key.verify(der, signing_input, _ECDSA_SHA256)
            else:
                public_key.verify(signing_input, signature)
        except (InvalidSignature, BadSignatureError):
            raise VisitorTokenInvalidError() from None
        claims = _decode_json(_segment(parts.group(2)))
        if type(claims) is not dict:
            raise VisitorTokenInvalidError()
        return _checked_claims(claims, widget_id, time.time())

    def _header(self, segment: bytes) -> tuple[str, Any]:
        """The `kid` and `alg` of a header segment that passes the checks; a site's tokens share one, kept parsed."""
        found = self._headers.get(segment)
        if found is None:
            header = _decode_json(_segment(segment))
            if type(header) is not dict or "crit" in header or "b64" in header or type(header.get("kid")) is not str:
                raise VisitorTokenInvalidError()
            found = (header["kid"], header.get("alg"))
            if len(self._headers) >= HEADER_CACHE_SIZE:
                self._headers.clear()
            self._headers[segment] = found
        return found

    def _keyring(self, widget_id: str, keys: tuple[IdentityKey, ...]) -> _Keyring:
        """The widget's keys, parsed once per widget and set of keys (the read model hands in a new tuple each call)."""
        ring = self._keyrings.get(widget_id)
        if ring is not None and ring.keys is keys:
            return ring
        fingerprint = _fingerprint(keys)
        if ring is None or ring.fingerprint != fingerprint:
            if len(self._keyrings) >= KEY_CACHE_SIZE:
                self._keyrings.clear()
            ring = self._keyrings[widget_id] = _Keyring(keys, fingerprint)
        return ring

    def refs(self, organization_id: str, external_id: str) -> list[str]:
        """The lookup values of a verified visitor: the one new conversations store first, then the one under the
        previous deployment key (conversations recorded before the last rotation)."""
        message = f"{organization_id}\x00{external_id}".encode()
        return [hmac.digest(key, message, "sha256").hex() for key in self._ref_keys]


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
    if not (type(iat) in _NUMBERS and type(exp) in _NUMBERS and type(nbf) in _NUMBERS):
        raise VisitorTokenInvalidError()
    if exp <= now - LEEWAY_SECONDS or iat > now + LEEWAY_SECONDS or nbf > now + LEEWAY_SECONDS or exp - iat > MAX_LIFETIME_SECONDS:
        raise VisitorTokenInvalidError()
    name, email, context = claims.get("name"), claims.get("email"), claims.get("context")
    if not all(v is None or isinstance(v, str) for v in (name, email)) or not (context is None or isinstance(context, dict)):
        raise VisitorTokenInvalidError()
    return VerifiedVisitor(external_id=sub, name=name, email=email, context=context)

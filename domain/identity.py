"""Identity keys: the public JWKs with which a site signs its visitors' tokens.

A widget holds only public keys, at most five, each named by its `kid`. The key's
type fixes the algorithm a token must be signed with (`EC` `P-256`: ES256,
`OKP` `Ed25519`: EdDSA), so a token's own header never chooses it. A P-256 point is
checked to lie on the curve here, with integer arithmetic, so that a key that no
verifier could load is refused when it is added rather than at a visitor's login.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from domain.errors import FieldError, ValidationError

MAX_IDENTITY_KEYS = 5
KID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,63}\Z")
KID_MESSAGE = "must be 1 to 64 letters, digits, '.', '_', '~' or '-', starting with a letter or digit"
ALGORITHMS = {("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}
PUBLIC_MEMBERS = {"kty", "crv", "x", "y", "kid", "alg", "use", "key_ops"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
_B64URL = re.compile(r"^[A-Za-z0-9_-]+\Z")

# P-256 (FIPS 186-4, D.1.2.3): y^2 = x^3 - 3x + b over the prime field p.
_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


@dataclass(frozen=True)
class IdentityKey:
    """A checked public key: its `kid`, the one algorithm it verifies, and the JWK with public members only."""

    kid: str
    alg: str
    jwk: dict[str, str]


def parse_identity_key(raw: object) -> IdentityKey:
    """Check a JWK from a request; `ValidationError` lists every problem under `jwk`."""
    if not isinstance(raw, dict):
        raise ValidationError([FieldError("jwk", "must be an object")], "The identity key is not valid.")
    errors: list[FieldError] = []
    private = sorted(PRIVATE_MEMBERS & raw.keys())
    if private:
        errors.append(FieldError("jwk", "must be a public key: remove the private members " + ", ".join(private)))
    errors += [FieldError(f"jwk.{name}", "unknown member") for name in sorted(raw.keys() - PUBLIC_MEMBERS - PRIVATE_MEMBERS)]
    kid = raw.get("kid")
    if not isinstance(kid, str) or not KID.match(kid):
        errors.append(FieldError("jwk.kid", "required" if kid is None else KID_MESSAGE))
    kty, crv = raw.get("kty"), raw.get("crv")
    alg = ALGORITHMS.get((kty, crv)) if isinstance(kty, str) and isinstance(crv, str) else None
    if alg is None:
        if kty not in ("EC", "OKP"):
            errors.append(FieldError("jwk.kty", "must be EC (P-256, ES256) or OKP (Ed25519, EdDSA)"))
        else:
            errors.append(FieldError("jwk.crv", "must be P-256" if kty == "EC" else "must be Ed25519"))
    else:
        errors += _point_errors(kty, raw)
        if "alg" in raw and raw["alg"] != alg:
            errors.append(FieldError("jwk.alg", f"must be {alg} for this key type, or absent"))
    if "use" in raw and raw["use"] != "sig":
        errors.append(FieldError("jwk.use", "must be sig, or absent"))
    if "key_ops" in raw and raw["key_ops"] != ["verify"]:
        errors.append(FieldError("jwk.key_ops", 'must be ["verify"], or absent'))
    if errors or alg is None:
        raise ValidationError(errors, "The identity key is not valid.")
    jwk = {name: raw[name] for name in ("kty", "crv", "x", "y") if name in raw}
    return IdentityKey(kid=kid, alg=alg, jwk={**jwk, "kid": kid})  # type: ignore[arg-type]


def _point_errors(kty: str, raw: dict[str, Any]) -> list[FieldError]:
    members = ("x", "y") if kty == "EC" else ("x",)
    errors: list[FieldError] = []
    if kty == "OKP" and "y" in raw:
        errors.append(FieldError("jwk.y", "unknown member for an OKP key"))
    coordinates: list[int] = []
    for name in members:
        value = _coordinate(raw.get(name))
        if value is None:
            errors.append(FieldError(f"jwk.{name}", "required" if name not in raw else "must be 32 bytes, base64url without padding"))
        else:
            coordinates.append(value)
    if kty == "EC" and len(coordinates) == 2 and not _on_p256(*coordinates):
        errors.append(FieldError("jwk", "x and y are not a point on P-256"))
    return errors


def _coordinate(value: object) -> int | None:
    """A 32-byte base64url value (no padding), as an integer."""
    if not isinstance(value, str) or len(value) != 43 or not _B64URL.match(value):
        return None
    try:
        data = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(data, "big") if len(data) == 32 else None


def _on_p256(x: int, y: int) -> bool:
    p = _P256_P
    return x < p and y < p and (y * y - (x * x * x - 3 * x + _P256_B)) % p == 0

"""Visitor tokens: a valid one passes; any single-field change, and every forged class, is refused the same way."""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.utils import base64url_decode, base64url_encode

from application.visitors import VisitorTokenInvalidError
from domain.identity import IdentityKey, parse_identity_key
from infrastructure.visitor_tokens import VisitorTokenVerifier
from tests.visitors import SiteKey

WIDGET = str(uuid.uuid4())
OTHER_WIDGET = str(uuid.uuid4())
ES = SiteKey.generate("ES256", "es")
ED = SiteKey.generate("EdDSA", "ed")
KEYS: tuple[IdentityKey, ...] = (parse_identity_key(ES.public_jwk), parse_identity_key(ED.public_jwk))
DATA_KEY = base64.b64encode(os.urandom(32)).decode()
VERIFIER = VisitorTokenVerifier(DATA_KEY)
sites = st.sampled_from([ES, ED])
json_values = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20)


def pyjwt_accepts(token: str, keys: tuple[IdentityKey, ...], widget: str) -> bool:
    """What `jwt.decode` says of the token with the key its kid names and the rules we add: our parse must agree."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = next(k for k in keys if k.kid == kid)
        claims = jwt.decode(token, jwt.PyJWK(key.jwk, algorithm=key.alg).key, algorithms=[key.alg], audience=widget, leeway=60,
                            options={"require": ["aud", "sub", "iat", "exp"], "strict_aud": True})
    except Exception:
        return False
    sub, name, email, context = claims["sub"], claims.get("name"), claims.get("email"), claims.get("context")
    # Our rules beyond PyJWT's: times are JSON numbers (PyJWT also takes "1" and true), at most 24 h apart.
    times = [claims[c] for c in ("iat", "exp", "nbf") if c in claims]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in times):
        return False
    return (isinstance(sub, str) and 1 <= len(sub) <= 128 and claims["exp"] - claims["iat"] <= 24 * 3600
            and all(v is None or isinstance(v, str) for v in (name, email)) and (context is None or isinstance(context, dict)))


def refused(token: str, keys: tuple[IdentityKey, ...] = KEYS, widget: str = WIDGET) -> bool:
    try:
        VERIFIER.verify(token, widget, keys)
    except VisitorTokenInvalidError as error:
        assert "token" not in str(error).lower().replace("the visitor token is not valid", "")
        assert not pyjwt_accepts(token, keys, widget), "PyJWT accepts what we refuse"
        return True
    assert pyjwt_accepts(token, keys, widget), "we accept what PyJWT refuses"
    return False


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return json.loads(base64url_decode(header)), json.loads(base64url_decode(payload)), base64url_decode(signature)


def assemble(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    def encode(value: dict[str, Any]) -> str:
        return base64url_encode(json.dumps(value, separators=(",", ":")).encode()).decode()

    return f"{encode(header)}.{encode(payload)}.{base64url_encode(signature).decode()}"


def valid_token(site: SiteKey, **claims: Any) -> str:
    return site.token(WIDGET, sub="user_42", name="Ada", email="ada@example.com", context={"plan": "pro"}, **claims)


@pytest.mark.parametrize("site", [ES, ED], ids=["ES256", "EdDSA"])
def test_a_valid_token_gives_its_claims(site: SiteKey) -> None:
    visitor = VERIFIER.verify(valid_token(site), WIDGET, KEYS)
    assert (visitor.external_id, visitor.name, visitor.email, visitor.context) == ("user_42", "Ada", "ada@example.com", {"plan": "pro"})


@settings(max_examples=150)
@given(site=sites, data=st.data())
def test_changing_any_one_claim_is_refused(site: SiteKey, data: st.DataObject) -> None:
    header, payload, signature = parts(valid_token(site))
    name = data.draw(st.sampled_from([*sorted(payload), "extra"]))
    value = data.draw(json_values.filter(lambda v: v != payload.get(name)))
    assert refused(assemble(header, {**payload, name: value}, signature))


@settings(max_examples=150)
@given(site=sites, data=st.data())
def test_changing_any_one_header_field_is_refused(site: SiteKey, data: st.DataObject) -> None:
    header, payload, signature = parts(valid_token(site))
    name = data.draw(st.sampled_from([*sorted(header), "jku", "x5u", "crit"]))
    value = data.draw((json_values | st.sampled_from(["ES256", "EdDSA", "HS256", "none", "es", "ed"])).filter(
        lambda v: v != header.get(name)))
    assert refused(assemble({**header, name: value}, payload, signature))


@settings(max_examples=150)
@given(site=sites, data=st.data())
def test_changing_the_signature_is_refused(site: SiteKey, data: st.DataObject) -> None:
    header, payload, signature = parts(valid_token(site))
    index = data.draw(st.integers(0, len(signature) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = signature[:index] + bytes([signature[index] ^ flip]) + signature[index + 1:]
    assert refused(assemble(header, payload, changed))
    assert refused(assemble(header, payload, signature[:-1]))


@settings(max_examples=60)
@given(garbage=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_garbage_is_refused(garbage: str) -> None:
    assert refused(garbage)


def now() -> int:
    return int(time.time())


@pytest.mark.parametrize("site", [ES, ED], ids=["ES256", "EdDSA"])
def test_every_forged_class_is_refused(site: SiteKey) -> None:
    t = now()
    claims = {"aud": WIDGET, "sub": "user_42", "iat": t, "exp": t + 600}
    assert not refused(site.sign(claims))
    assert refused(site.token(OTHER_WIDGET)), "another widget's audience"
    assert refused(site.sign({**claims, "aud": [OTHER_WIDGET]})), "an audience list"
    assert refused(site.sign({**claims, "iat": t - 7200, "exp": t - 3600})), "expired"
    assert refused(site.sign({**claims, "exp": t + 24 * 3600 + 1})), "a lifetime over 24 h"
    assert refused(site.sign({k: v for k, v in claims.items() if k != "exp"})), "no exp"
    assert refused(site.sign({k: v for k, v in claims.items() if k != "iat"})), "no iat"
    assert refused(site.sign({k: v for k, v in claims.items() if k != "sub"})), "no subject"
    assert refused(site.sign({**claims, "sub": ""})), "an empty subject"
    assert refused(site.sign({**claims, "sub": "x" * 129})), "a subject over 128 characters"
    assert refused(site.sign({**claims, "sub": 42})), "a subject that is not a string"
    assert refused(site.sign({**claims, "iat": t + 3600, "exp": t + 4000})), "issued in the future"
    assert refused(site.sign({**claims, "name": ["Ada"]})), "a name that is not a string"
    assert refused(site.sign({**claims, "context": "pro"})), "a context that is not an object"
    assert refused(site.sign(claims, headers={"kid": "unknown"})), "an unknown kid"
    removed = tuple(k for k in KEYS if k.kid != site.kid)
    assert refused(site.sign(claims), keys=removed), "a removed kid"
    stranger = SiteKey.generate(site.alg, site.kid)
    assert refused(stranger.sign(claims)), "a stranger's key under a known kid"
    other = ED if site is ES else ES
    assert refused(other.sign(claims, headers={"kid": site.kid})), "the other key type under this kid"


def test_the_skew_allowed_is_60_seconds() -> None:
    t = now()
    assert not refused(ES.sign({"aud": WIDGET, "sub": "u", "iat": t - 3600, "exp": t - 50}))
    assert refused(ES.sign({"aud": WIDGET, "sub": "u", "iat": t - 3600, "exp": t - 70}))
    assert not refused(ES.sign({"aud": WIDGET, "sub": "u", "iat": t + 50, "exp": t + 600}))


def test_alg_none_and_hs256_keyed_with_the_public_key_are_refused() -> None:
    t = now()
    claims = {"aud": WIDGET, "sub": "user_42", "iat": t, "exp": t + 600}
    unsigned = assemble({"alg": "none", "kid": "es", "typ": "JWT"}, claims, b"")
    assert refused(unsigned) and refused(unsigned.rstrip("."))
    for site in (ES, ED):
        public = site.private.public_key()
        # The public key in every form an attacker might use as an HMAC secret.
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for secret in (pem, json.dumps(site.public_jwk).encode(), site.public_jwk["x"].encode()):
            header, payload = assemble({"alg": "HS256", "kid": site.kid, "typ": "JWT"}, claims, b"").split(".")[:2]
            signature = hmac.digest(secret, f"{header}.{payload}".encode(), "sha256")
            assert refused(f"{header}.{payload}.{base64url_encode(signature).decode()}")


def test_a_token_checked_by_pyjwt_alone_would_pass_so_the_refusals_are_ours() -> None:
    """The forged audience is refused because we check it, not because the signature is bad."""
    token = ES.token(OTHER_WIDGET)
    assert jwt.decode(token, ES.private.public_key(), algorithms=["ES256"], audience=OTHER_WIDGET)["sub"] == "user_42"
    assert refused(token)


@settings(max_examples=400)
@given(site=sites, data=st.data())
def test_on_signed_tokens_of_any_claims_we_answer_as_pyjwt_with_our_rules(site: SiteKey, data: st.DataObject) -> None:
    """Signed correctly, with claims drawn around every boundary: our check and `jwt.decode`'s agree (`refused` asserts it)."""
    t = now()
    offsets = st.sampled_from([-86_500, -3600, -61, -59, 0, 59, 61, 3600, 86_340, 86_400, 86_401, 90_000])
    claims: dict[str, Any] = {
        "aud": data.draw(st.sampled_from([WIDGET, OTHER_WIDGET, [WIDGET], "", None])),
        "sub": data.draw(st.sampled_from(["u", "x" * 128, "x" * 129, "", 7, None]) | st.text(max_size=140)),
        "iat": data.draw(offsets.map(lambda o: t + o) | st.sampled_from([None, True, "1", 1.5])),
        "exp": data.draw(offsets.map(lambda o: t + o) | st.sampled_from([None, False, "9"])),
    }
    for name in ("name", "email", "context", "nbf"):
        if data.draw(st.booleans()):
            claims[name] = data.draw(json_values | st.just({"plan": "pro"}) | offsets.map(lambda o: t + o))
    refused(site.sign({k: v for k, v in claims.items() if v is not None}))


def test_an_eddsa_token_under_a_small_order_key_is_refused_where_openssl_would_pass_it() -> None:
    """Under the neutral point as public key, [S]B = R holds for any message, so R = [S]B with any S is a signature
    of anything that a cofactorless check without a small-order test accepts (OpenSSL's, as PyJWT checks it).
    libsodium refuses small-order keys: no such key verifies a token here, even if a widget registered one."""
    from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

    neutral = b"\x01" + bytes(31)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64url_encode(neutral).decode(), "kid": "neutral"}
    now = int(time.time())
    signing_input = b".".join(base64url_encode(json.dumps(part, separators=(",", ":")).encode()) for part in (
        {"alg": "EdDSA", "kid": "neutral"}, {"aud": WIDGET, "sub": "anyone", "iat": now, "exp": now + 600}))
    scalar = (12345).to_bytes(32, "little")
    token = (signing_input + b"." + base64url_encode(crypto_scalarmult_ed25519_base_noclamp(scalar) + scalar)).decode()
    keys = (parse_identity_key(jwk),)
    assert pyjwt_accepts(token, keys, WIDGET)  # the forgery is real: OpenSSL's check passes it
    with pytest.raises(VisitorTokenInvalidError):
        VisitorTokenVerifier(DATA_KEY).verify(token, WIDGET, keys)

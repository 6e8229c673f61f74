"""Identity keys: only public ES256 / EdDSA JWKs with a kid, at most five per widget, as Widget events."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from domain import event_types as t
from domain.config import parse_config
from domain.domains import AllowedDomains
from domain.errors import NotFoundError, ValidationError, WidgetDeletedError
from domain.identity import MAX_IDENTITY_KEYS, parse_identity_key
from domain.records import describe
from domain.widget import Widget
from tests.visitors import SiteKey


def fields_of(raw: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse_identity_key(raw)
    return {e.field: e.message for e in caught.value.errors}


def new_widget() -> Widget:
    return Widget.start("org_a", uuid.uuid4(), uuid.uuid4(), AllowedDomains.parse(["example.com"]), parse_config({}), "alice")


@pytest.mark.parametrize(("alg", "kty", "crv"), [("ES256", "EC", "P-256"), ("EdDSA", "OKP", "Ed25519")])
def test_a_public_key_is_accepted_and_its_type_fixes_the_algorithm(alg: str, kty: str, crv: str) -> None:
    site = SiteKey.generate(alg, "k-1")
    key = parse_identity_key({**site.public_jwk, "use": "sig"})
    assert (key.kid, key.alg) == ("k-1", alg)
    assert key.jwk["kty"] == kty and key.jwk["crv"] == crv
    assert set(key.jwk) <= {"kty", "crv", "x", "y", "kid"}  # only the public members are kept


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_private_key_is_refused(alg: str) -> None:
    errors = fields_of(SiteKey.generate(alg, "k").private_jwk)
    assert "private" in errors["jwk"]


def test_another_curve_rsa_and_a_shared_secret_are_refused() -> None:
    p384 = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()))
    assert "jwk.crv" in fields_of({**p384, "kid": "k"})
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()))
    assert "jwk.kty" in fields_of({**rsa_jwk, "kid": "k"})
    assert "jwk.kty" in fields_of({"kty": "oct", "k": "c2VjcmV0", "kid": "k"})
    x448 = {"kty": "OKP", "crv": "X25519", "x": SiteKey.generate("EdDSA").public_jwk["x"], "kid": "k"}
    assert "jwk.crv" in fields_of(x448)


def test_a_point_off_the_curve_and_malformed_coordinates_are_refused() -> None:
    jwk = SiteKey.generate("ES256", "k").public_jwk
    y = int.from_bytes(base64.urlsafe_b64decode(jwk["y"] + "="), "big")
    off_curve = base64.urlsafe_b64encode((y ^ 1).to_bytes(32, "big")).rstrip(b"=").decode()
    assert "jwk" in fields_of({**jwk, "y": off_curve})
    assert "jwk.x" in fields_of({**jwk, "x": jwk["x"][:-2]})
    assert "jwk.y" in fields_of({k: v for k, v in jwk.items() if k != "y"})
    assert "jwk.x" in fields_of({**jwk, "x": "!" * 43})


def test_every_problem_is_listed_at_once() -> None:
    errors = fields_of({"kty": "EC", "crv": "P-256", "x": "short", "d": "secret", "x5c": ["..."], "kid": "bad kid!"})
    assert {"jwk", "jwk.x5c", "jwk.kid", "jwk.x", "jwk.y"} <= set(errors)


@pytest.mark.parametrize("kid", [None, "", "a b", "ü", "-lead", "x" * 65, 7])
def test_a_kid_is_required_and_url_safe(kid: Any) -> None:
    jwk = SiteKey.generate("EdDSA").public_jwk
    raw = {k: v for k, v in jwk.items() if k != "kid"} | ({} if kid is None else {"kid": kid})
    assert "jwk.kid" in fields_of(raw)


def test_an_alg_member_must_match_the_key_type() -> None:
    assert "jwk.alg" in fields_of({**SiteKey.generate("ES256").public_jwk, "alg": "HS256"})
    assert parse_identity_key({**SiteKey.generate("EdDSA").public_jwk, "alg": "EdDSA"}).alg == "EdDSA"


def test_a_widget_records_added_and_removed_keys_with_the_actor() -> None:
    widget = new_widget()
    widget.add_identity_key(parse_identity_key(SiteKey.generate("ES256", "a").public_jwk), "alice")
    widget.add_identity_key(parse_identity_key(SiteKey.generate("EdDSA", "b").public_jwk), "bob")
    widget.remove_identity_key("a", "carol")
    records = [describe(e) for e in widget.collect_events()[1:]]
    assert [(r.type, r.actor, r.data["kid"]) for r in records] == [
        (t.WIDGET_IDENTITY_KEY_ADDED, "alice", "a"), (t.WIDGET_IDENTITY_KEY_ADDED, "bob", "b"),
        (t.WIDGET_IDENTITY_KEY_REMOVED, "carol", "a")]
    assert "d" not in records[0].data["jwk"]
    assert list(widget.identity_keys) == ["b"]
    assert widget.identity_keys["b"]["added_at"] == records[1].occurred_at


def test_a_duplicate_kid_and_a_sixth_key_are_refused_and_record_nothing() -> None:
    widget = new_widget()
    for i in range(MAX_IDENTITY_KEYS):
        widget.add_identity_key(parse_identity_key(SiteKey.generate("EdDSA", f"k{i}").public_jwk), "alice")
    before = widget.version
    with pytest.raises(ValidationError) as duplicate:
        widget.add_identity_key(parse_identity_key(SiteKey.generate("ES256", "k0").public_jwk), "alice")
    assert duplicate.value.errors[0].field == "jwk.kid"
    with pytest.raises(ValidationError) as sixth:
        widget.add_identity_key(parse_identity_key(SiteKey.generate("ES256", "k9").public_jwk), "alice")
    assert sixth.value.errors[0].field == "jwk"
    assert widget.version == before


def test_removing_an_unknown_kid_is_not_found_and_a_deleted_widget_takes_no_keys() -> None:
    widget = new_widget()
    with pytest.raises(NotFoundError):
        widget.remove_identity_key("nope", "alice")
    widget.delete("alice")
    with pytest.raises(WidgetDeletedError):
        widget.add_identity_key(parse_identity_key(SiteKey.generate("ES256", "k").public_jwk), "alice")


def test_a_widget_from_before_identity_keys_has_none_and_they_are_not_shared() -> None:
    first, second = new_widget(), new_widget()
    first.add_identity_key(parse_identity_key(SiteKey.generate("ES256", "k").public_jwk), "alice")
    assert list(first.identity_keys) == ["k"]
    assert dict(second.identity_keys) == {}
    assert dict(Widget.identity_keys) == {}

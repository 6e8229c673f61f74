"""Secrets stay secret, and only a well-formed HS256 admin token signed with our secret gets in.

The LiveKit API secret, the admin signing secret, admin tokens (valid or not),
resume tokens, the LiveKit participant tokens handed to visitors and webhook endpoints' signing secrets never
appear in the logs (JSON, as production writes them), in error answers, in
stored events, in the SQL read models or in Redis, on either wiring. Tokens
forged every way a JWT library has been fooled (alg `none`, RS256/HS256 key
confusion, other algorithms, expired, missing or non-string claims) are 401.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import random
import sqlite3
import time
import uuid
from math import gcd
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from tests.api.conftest import Admin
from tests.api.public_helpers import CONFIG, live_widget, room_finished_body, sync, webhook_headers
from tests.reliability.conftest import record, stored_events
from tests.visitors import SiteKey

# ---- stored state, whole ------------------------------------------------------------------------


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def sql_rows(settings: Settings) -> list[bytes]:
    """Every value of every table the service keeps in SQL: the event store and the read models."""
    found: list[bytes] = []
    if settings.embedded:
        for path in Path(settings.data_dir).rglob("*.sqlite3"):
            with sqlite3.connect(path) as conn:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    found += [as_bytes(v) for row in conn.execute(f'SELECT * FROM "{table}"') for v in row]
        return found
    with psycopg.connect(settings.database_url) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                             [settings.database_schema])]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{settings.database_schema}"."{table}"').fetchall()
            found += [as_bytes(v) for row in rows for v in row]
    return found


def redis_values(settings: Settings) -> list[bytes]:
    if not settings.redis_url:
        return []
    client = sync_client(settings.redis_url)  # one Redis or the cluster
    found: list[bytes] = []
    try:
        for key in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
            kind = client.type(key)
            found.append(key)
            if kind == b"string":
                found.append(client.get(key) or b"")
            elif kind == b"set":
                found += list(client.smembers(key))
            elif kind == b"hash":
                found += [k + b"=" + v for k, v in client.hgetall(key).items()]
            elif kind == b"list":
                found += list(client.lrange(key, 0, -1))
            elif kind == b"zset":
                found += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    finally:
        client.close()
    return found


def leaked(secrets: dict[str, str], haystack: bytes) -> list[str]:
    return [name for name, secret in secrets.items() if secret and secret.encode() in haystack]


# ---- secrets never leak ---------------------------------------------------------------------------


def test_secrets_never_reach_logs_errors_events_or_read_models(
    settings: Settings, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    wiring = request.node.callspec.params["settings"]
    marker = uuid.uuid4().hex
    settings = dataclasses.replace(settings, auth_secret=f"auth-secret-{marker}", livekit_api_secret=f"livekit-secret-{marker}",
                                   log_format="json", log_level="debug")
    secrets: dict[str, str] = {"auth secret": settings.auth_secret, "LiveKit API secret": settings.livekit_api_secret}
    answers: list[httpx.Response] = []
    app = create_app(settings)
    with TestClient(app) as client:
        client.event_hooks = {"request": [], "response": [answers.append]}
        admin = Admin(client, settings, "org_a", "alice")
        secrets["admin token"] = admin.headers["Authorization"].removeprefix("Bearer ")
        widget = live_widget(admin, app, config=CONFIG)
        origin = {"Origin": "https://example.com"}
        grants = [client.post(f"/public/v1/widgets/{widget['id']}/conversations", json={"visitor": {"name": "Ada"}}, headers=origin).json()
                  for _ in range(2)]
        for n, grant in enumerate(grants):
            secrets[f"resume token {n}"] = grant["resume_token"]
            secrets[f"LiveKit token {n}"] = grant["livekit"]["token"]
        first, second = grants
        path = f"/public/v1/widgets/{widget['id']}/conversations/{first['conversation_id']}"
        resumed = client.post(f"{path}/resume", json={"resume_token": first["resume_token"]}, headers=origin).json()
        secrets["LiveKit token, resumed"] = resumed["livekit"]["token"]
        secrets["resume token, resumed"] = current = resumed["resume_token"]  # the first one is retired
        assert client.post(f"{path}/forms/pre", json={"resume_token": current, "values": {"email": "ada@example.com"}},
                           headers=origin).status_code == 202
        assert client.post(f"{path}/feedback", json={"resume_token": current, "rating": 5, "comment": "ok"}, headers=origin).status_code == 202
        assert client.post(f"{path}/end", json={"resume_token": first["resume_token"]}, headers=origin).status_code == 404  # retired
        assert client.post(f"{path}/end", json={"resume_token": current}, headers=origin).status_code == 202
        # Visitor tokens the site signed, valid and not: used, never written down.
        site = SiteKey.generate("ES256", "site")
        assert admin.call("POST", f"/v1/widgets/{widget['id']}/identity-keys", json={"jwk": site.public_jwk}).status_code == 201
        assert admin.call("PATCH", f"/v1/widgets/{widget['id']}/config", json={"v1": {"identity": {"mode": "optional"}}}).status_code == 200
        sync(app)
        visitor_token, forged_visitor = site.token(widget["id"], sub=f"visitor-{marker}"), SiteKey.generate("ES256", "site").token(widget["id"])
        secrets.update({"visitor token": visitor_token, "forged visitor token": forged_visitor})
        verified = client.post(f"/public/v1/widgets/{widget['id']}/conversations", json={"visitor_token": visitor_token}, headers=origin)
        assert verified.status_code == 201, verified.text
        secrets.update({"verified resume token": verified.json()["resume_token"], "verified LiveKit token": verified.json()["livekit"]["token"]})
        mine = f"/public/v1/widgets/{widget['id']}/visitor/conversations"
        assert client.get(mine, headers={**origin, "Authorization": f"Bearer {visitor_token}"}).status_code == 200
        assert client.get(mine, headers={**origin, "Authorization": f"Bearer {forged_visitor}"}).status_code == 401
        assert client.post(f"/public/v1/widgets/{widget['id']}/conversations", json={"visitor_token": forged_visitor},
                           headers=origin).status_code == 401
        # Wrong tokens, refused: they must not be logged or echoed either.
        wrong = f"wrong-resume-{marker}"
        secrets["wrong resume token"] = wrong
        assert client.post(f"{path}/resume", json={"resume_token": wrong}, headers=origin).status_code == 404
        other = f"/public/v1/widgets/{widget['id']}/conversations/{second['conversation_id']}"
        assert client.post(f"{other}/end", json={"resume_token": first["resume_token"]}, headers=origin).status_code == 404
        # LiveKit's webhook, signed with the API secret; and a forged one.
        body = room_finished_body(resumed["livekit"]["room"])
        signed = webhook_headers(body, settings.livekit_api_key, settings.livekit_api_secret)
        secrets["webhook signature"] = signed["Authorization"]
        assert client.post("/webhooks/livekit", content=body, headers=signed).status_code == 200
        forged = webhook_headers(body, settings.livekit_api_key, f"guess-{marker}")
        secrets["forged webhook signature"] = forged["Authorization"]
        assert client.post("/webhooks/livekit", content=body, headers=forged).status_code == 401
        # Admin calls that fail for every reason, with tokens that must never be written down.
        bad_tokens = {
            "expired admin token": jwt.encode({"sub": "alice", "org_id": "org_a", "exp": int(time.time()) - 60}, settings.auth_secret),
            "foreign admin token": jwt.encode({"sub": "eve", "org_id": "org_a", "exp": int(time.time()) + 60}, f"other-{marker}-secret"),
            "read-only admin token": admin.with_scopes("widgets:read")["Authorization"].removeprefix("Bearer "),
        }
        secrets.update(bad_tokens)
        for token in bad_tokens.values():
            client.put(f"/v1/widgets/{widget['id']}/domains", json={"domains": ["x.example.com"]}, headers={"Authorization": f"Bearer {token}"})
            client.get(f"/v1/widgets/{widget['id']}?token={token}", headers={"Authorization": f"Bearer {token}"})
        for call in (("GET", f"/v1/widgets/{uuid.uuid4()}", None), ("PUT", f"/v1/widgets/{widget['id']}/domains", {"domains": ["*"]}),
                     ("POST", f"/v1/widgets/{widget['id']}/publish", None), ("GET", f"/v1/widgets/{widget['id']}?at=nope", None)):
            admin.call(call[0], call[1], json=call[2], headers={"If-Match": '"999"'})
        # Outgoing webhook endpoints' signing secrets: answered on create and rotation only, stored only sealed.
        created = admin.call("POST", "/v1/webhook-endpoints", json={"url": "https://hooks.example.com/", "events": ["*"]})
        assert created.status_code == 201, created.text
        rotated = admin.call("POST", f"/v1/webhook-endpoints/{created.json()['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        for name, answer in (("webhook endpoint secret", created), ("rotated webhook endpoint secret", rotated)):
            secrets[name] = answer.json()["secret"]
            secrets[f"{name}, base64"] = answer.json()["secret"].removeprefix("whsec_")
        # What admins and auditors read back.
        sync(app)
        for read in (f"/v1/widgets/{widget['id']}/conversations", f"/v1/widgets/{widget['id']}/history", "/v1/audit/events?limit=1000",
                     "/v1/widgets", f"/v1/widgets/{widget['id']}", "/readyz", "/metrics", "/v1/webhook-endpoints",
                     f"/v1/webhook-endpoints/{created.json()['id']}"):
            assert admin.call("GET", read).status_code == 200, read
        events = stored_events(app.state.services.store)

    out, err = capfd.readouterr()
    logs = (out + err + "\n".join(r.getMessage() for r in caplog.records)).encode()
    assert b'"event": "request"' in logs and widget["id"].encode() in logs, "the access log was not captured: nothing was checked"
    json_lines = [line for line in (out + err).splitlines() if line.startswith("{")]
    assert all(json.loads(line) for line in json_lines)
    assert not leaked(secrets, logs), f"in the logs: {leaked(secrets, logs)}"

    visitor_grants = {id(a) for a in answers if a.request.url.path.startswith("/public/") and a.status_code < 300}
    visitor_grants |= {id(created), id(rotated)}  # the one answer each that hands its endpoint secret to the admin
    for answer in answers:
        # Only the visitor who started or resumed a conversation is handed its tokens; nothing else answers one.
        if id(answer) in visitor_grants:
            continue
        text = answer.content + str(answer.headers).encode()
        assert not leaked(secrets, text), f"{answer.request.method} {answer.request.url.path} answered {leaked(secrets, text)}"

    # Positive controls: what is stored is searchable as plain text, so finding no secret there means something.
    stored = b"\n".join(sql_rows(settings))
    assert widget["id"].encode() in stored, "the stored rows are not plain text"
    assert b"ada@example.com" not in stored, "a visitor's form value is stored in the clear"
    assert not leaked(secrets, stored), f"in the event store or SQL read models: {leaked(secrets, stored)}"
    in_redis = b"\n".join(redis_values(settings))
    assert settings.embedded or widget["id"].encode() in in_redis, "nothing was read from Redis"
    assert not leaked(secrets, in_redis), f"in Redis: {leaked(secrets, in_redis)}"
    record(f"secrets.{wiring}.secrets_checked", len(secrets))
    record(f"secrets.{wiring}.answers_checked", len(answers))
    record(f"secrets.{wiring}.events_checked", events)


# ---- forged tokens ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def _probably_prime(n: int, rng: random.Random) -> bool:
    if n % 2 == 0:
        return n == 2
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(24):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if _probably_prime(candidate, rng):
            return candidate


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    encoded = bytes([length]) if length < 0x80 else bytes([0x80 | ((length.bit_length() + 7) // 8)]) + length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag]) + encoded + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


@dataclasses.dataclass(frozen=True)
class RsaKey:
    """A freshly generated RSA key (no crypto library here: textbook RSA with PKCS #1 v1.5 signatures)."""

    n: int
    e: int
    d: int

    @classmethod
    def generate(cls, bits: int = 1024) -> RsaKey:
        rng, e = random.SystemRandom(), 65537
        while True:
            p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
            phi = (p - 1) * (q - 1)
            if p != q and gcd(e, phi) == 1:
                return cls(p * q, e, pow(e, -1, phi))

    def public_pem(self) -> bytes:
        algorithm = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
        key = _der(0x30, _der_int(self.n) + _der_int(self.e))
        info = _der(0x30, algorithm + _der(0x03, b"\x00" + key))
        body = base64.encodebytes(info).decode().replace("\n", "")
        lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n".encode()

    def sign_rs256(self, message: bytes) -> bytes:
        size = (self.n.bit_length() + 7) // 8
        digest = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(message).digest()
        padded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
        return pow(int.from_bytes(padded, "big"), self.d, self.n).to_bytes(size, "big")


def forged_tokens(settings: Settings) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "mallory", "org_id": "org_a", "scope": "widgets:write widgets:read audit:read", "exp": now + 600}
    secret = settings.auth_secret.encode()
    key = RsaKey.generate()
    pem = key.public_pem()

    def hs(alg: str, digest: Any, signing_key: bytes = secret) -> Any:
        return lambda message: hmac.new(signing_key, message, digest).digest()

    def ours(**claims: Any) -> str:  # correctly signed with our secret, with these claims changed (None: left out)
        merged = {k: v for k, v in (good | claims).items() if v is not None}
        return forge({"alg": "HS256", "typ": "JWT"}, merged, hs("HS256", hashlib.sha256))

    def with_null(name: str) -> str:
        return forge({"alg": "HS256", "typ": "JWT"}, good | {name: None}, hs("HS256", hashlib.sha256))

    return {
        "wrong signature": forge({"alg": "HS256", "typ": "JWT"}, good, hs("HS256", hashlib.sha256, b"not-the-secret-at-all-0123456789")),
        "signature of another token": ours()[: ours().rindex(".")] + ours(sub="someone")[ours(sub="someone").rindex("."):],
        "alg none, no signature": forge({"alg": "none", "typ": "JWT"}, good, lambda m: b""),
        "alg None, no signature": forge({"alg": "None", "typ": "JWT"}, good, lambda m: b""),
        "alg NONE, our signature": forge({"alg": "NONE", "typ": "JWT"}, good, hs("HS256", hashlib.sha256)),
        "RS256/HS256 confusion: HMAC keyed with the RSA public key": forge({"alg": "HS256", "typ": "JWT"}, good, hs("HS256", hashlib.sha256, pem)),
        "RS256 signed with the RSA private key": forge({"alg": "RS256", "typ": "JWT"}, good, key.sign_rs256),
        "RS256 header, HMAC with our secret": forge({"alg": "RS256", "typ": "JWT"}, good, hs("HS256", hashlib.sha256)),
        "HS512 with our secret": forge({"alg": "HS512", "typ": "JWT"}, good, hs("HS512", hashlib.sha512)),
        "HS384 with our secret": forge({"alg": "HS384", "typ": "JWT"}, good, hs("HS384", hashlib.sha384)),
        "jku pointing elsewhere": forge({"alg": "HS256", "typ": "JWT", "jku": "https://evil.example/jwks.json", "kid": "../../dev/null"},
                                        good, hs("HS256", hashlib.sha256, b"")),
        "expired": ours(exp=now - 3600),
        "expired a second ago": ours(exp=now - 1),
        "not valid yet (nbf)": ours(nbf=now + 3600),
        "issued in the future (iat)": ours(iat=now + 3600),
        "no org_id": ours(org_id=None),
        "no sub": ours(sub=None),
        "no exp": ours(exp=None),
        "org_id null": with_null("org_id"),
        "sub null": with_null("sub"),
        "exp null": with_null("exp"),
        "org_id a number": ours(org_id=42),
        "org_id a list": ours(org_id=["org_a"]),
        "org_id an object": ours(org_id={"id": "org_a"}),
        "org_id true": ours(org_id=True),
        "org_id empty": ours(org_id=""),
        "sub a number": ours(sub=7),
        "sub a list": ours(sub=["mallory"]),
        "exp a numeric string": ours(exp=str(now + 600)),  # RFC 7519: a JSON number; PyJWT alone would int() it
        "exp a word": ours(exp="tomorrow"),
        "exp true": ours(exp=True),
        "scope a list": ours(scope=["widgets:write"]),
        "scope a number": ours(scope=1),
        "claims not an object": forge({"alg": "HS256", "typ": "JWT"}, ["org_a"], hs("HS256", hashlib.sha256)),  # type: ignore[arg-type]
        "two tokens": f"{ours()} {ours()}",
        "extra segment": f"{ours()}.AAAA",
    }


def test_forged_admin_tokens_are_401_and_change_nothing(settings: Settings) -> None:
    tokens = forged_tokens(settings)
    assert_refused_everywhere(settings, tokens)
    record("secrets.forged_tokens_refused", len(tokens))


def assert_refused_everywhere(settings: Settings, tokens: dict[str, str]) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        admin = Admin(client, settings, "org_a", "alice")
        widget = admin.widget(published=False, domains=["example.com"])
        store = app.state.services.store
        before = stored_events(store)
        for name, token in tokens.items():
            for method, path, body in (("GET", f"/v1/widgets/{widget['id']}", None),
                                       ("PUT", f"/v1/widgets/{widget['id']}/domains", {"domains": ["forged.example.com"]}),
                                       ("POST", "/v1/agents", {"name": "forged"})):
                response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 401, f"{name}: {method} {path} answered {response.status_code} {response.text}"
                problem = response.json()
                assert problem["code"] == "invalid_token" and response.headers["www-authenticate"].startswith("Bearer"), name
                assert token not in response.text and "mallory" not in response.text, name
        assert stored_events(store) == before
        assert admin.get_widget(widget["id"]) == widget

"""Secure by default (issue 29): no secret from the source opens a fresh install, admin tokens are short-lived,
/metrics names no widget and may need a token, and LiveKit's development secret signs nothing we accept."""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from api.cli import main
from infrastructure.auth import InvalidTokenError
from infrastructure.settings import LIVEKIT_DEVELOPMENT_SECRET, Settings
from tests.api.conftest import Admin, assert_problem, client_for
from tests.api.public_helpers import ALLOWED_HEADERS, live_widget, room_finished_body, started, webhook_headers, widget_path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("domain", "application", "infrastructure", "projections", "api")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(key: bytes, **claims: object) -> str:
    """An HS256 admin token signed with `key`, by hand: whatever the key, as anyone holding it could."""
    now = int(time.time())
    body = {"sub": "mallory", "org_id": "org_a", "scope": "widgets:write widgets:read audit:read", "iat": now, "exp": now + 600}
    body.update(claims)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def source_constants() -> set[bytes]:
    """Every string literal in the service's source, as written and, where it is base64, decoded."""
    found: set[bytes] = set()
    for package in SOURCE:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and node.value:
                    raw = node.value.encode() if isinstance(node.value, str) else node.value
                    found.add(raw)
                    try:
                        found.add(base64.b64decode(raw, validate=True))
                    except (binascii.Error, ValueError):
                        pass
    return found


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Litestar, TestClient[Litestar], Settings]]:
    """A first start on an empty data folder, settings as a newcomer has them: none."""
    settings = Settings(data_dir=str(tmp_path / "var"), log_format="json", log_level="warning")
    app = create_app(settings)
    with client_for(app) as client:
        yield app, client, settings


def test_no_constant_of_the_source_signs_an_admin_token_a_fresh_install_accepts(
    fresh: tuple[Litestar, TestClient[Litestar], Settings],
) -> None:
    app, client, settings = fresh
    tokens = app.state.services.tokens
    constants = source_constants()
    assert b"dev-only-insecure-auth-secret-change-me" in constants and b"secret" in constants  # the scan sees them
    assert settings.auth_secret.encode() not in constants

    accepted = []
    for key in constants:
        try:
            tokens.verify(f"Bearer {signed(key)}")
            accepted.append(key)
        except InvalidTokenError:
            pass
    assert accepted == []
    assert tokens.verify(f"Bearer {signed(settings.auth_secret.encode())}").organization_id == "org_a"  # not vacuous
    for key in (b"dev-only-insecure-auth-secret-change-me", b"secret", b"ZGV2LW9ubHktaW5zZWN1cmUtZGF0YS1rZXktMzJCeSE="):
        assert_problem(client.get("/v1/widgets", headers={"Authorization": f"Bearer {signed(key)}"}), 401, "invalid_token")


# ---- admin token lifetime ----


def test_an_admin_token_living_longer_than_the_maximum_is_refused_naming_why(client: TestClient[Litestar], settings: Settings) -> None:
    key = settings.auth_secret.encode()
    now = int(time.time())
    for token in (signed(key, iat=now, exp=now + 86401), signed(key, iat=now - 86400, exp=now + 60), signed_without(key, "iat")):
        body = assert_problem(client.get("/v1/widgets", headers={"Authorization": f"Bearer {token}"}), 401, "token_lifetime_too_long")
        assert "86400" in body["detail"]
    ok = client.get("/v1/widgets", headers={"Authorization": f"Bearer {signed(key, iat=now, exp=now + 86400)}"})
    assert ok.status_code == 200, ok.text


def signed_without(key: bytes, claim: str) -> str:
    now = int(time.time())
    body = {"sub": "mallory", "org_id": "org_a", "scope": "widgets:read", "iat": now, "exp": now + 600}
    del body[claim]
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def test_the_maximum_lifetime_is_a_setting(settings: Settings) -> None:
    short = replace(settings, auth_max_ttl=60)
    now = int(time.time())
    with client_for(create_app(short)) as client:
        too_long = client.get("/v1/widgets", headers={"Authorization": f"Bearer {signed(short.auth_secret.encode(), iat=now, exp=now + 61)}"})
        assert_problem(too_long, 401, "token_lifetime_too_long")
        fine = client.get("/v1/widgets", headers={"Authorization": f"Bearer {signed(short.auth_secret.encode(), iat=now, exp=now + 60)}"})
        assert fine.status_code == 200, fine.text


def test_widgets_token_refuses_a_ttl_above_the_maximum_and_mints_within_it(tmp_path: Path) -> None:
    env = {"WIDGETS_DATA_DIR": str(tmp_path / "var"), "WIDGETS_AUTH_MAX_TTL": "3600"}
    refused = CliRunner().invoke(main, ["token", "--org", "org_a", "--ttl", "3601"], env=env)
    assert refused.exit_code != 0 and "WIDGETS_AUTH_MAX_TTL" in refused.output and "3601" in refused.output
    minted = CliRunner().invoke(main, ["token", "--org", "org_a", "--ttl", "3600"], env=env)
    assert minted.exit_code == 0, minted.output
    settings = Settings.from_env(env)  # the data folder's own secret, made by the first command
    caller = create_app(settings).state.services.tokens.verify(f"Bearer {minted.output.strip()}")
    assert caller.organization_id == "org_a"


# ---- /metrics ----


def test_metrics_carry_no_widget_id(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app, domains=["example.com"])
    refused = client.get(widget_path(widget["id"]), headers={**ALLOWED_HEADERS, "Origin": "https://not-allowed.example.org"})
    assert refused.status_code == 403
    text = client.get("/metrics").text
    assert 'widgets_origin_refusals_total{reason="origin_not_allowed"}' in text
    assert widget["id"] not in text and 'widget_id="' not in text  # route templates say {widget_id}, no label does


def test_a_metrics_token_is_required_as_a_bearer_token_when_set(settings: Settings) -> None:
    token = uuid.uuid4().hex
    with client_for(create_app(replace(settings, metrics_token=token))) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                        {"Authorization": f"Bearer {token}x"}):
            response = client.get("/metrics", headers=headers)
            assert_problem(response, 401, "invalid_token")
            assert "widgets_http_requests_total" not in response.text
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and "widgets_http_requests_total" in answer.text


def test_without_a_metrics_token_metrics_are_open(client: TestClient[Litestar]) -> None:
    assert client.get("/metrics").status_code == 200


# ---- LiveKit ----


def test_a_livekit_webhook_signed_with_the_development_secret_is_refused_when_ours_is_another(settings: Settings) -> None:
    ours = replace(settings, livekit_api_secret="a-livekit-secret-of-our-own-0123456789")
    app = create_app(ours)
    with client_for(app) as client:
        admin = Admin(client, ours, "org_a")
        widget = live_widget(admin, app)
        room = started(client, widget["id"])["livekit"]["room"]
        body = room_finished_body(room)
        forged = client.post("/webhooks/livekit", content=body,
                             headers=webhook_headers(body, ours.livekit_api_key, LIVEKIT_DEVELOPMENT_SECRET))
        assert forged.status_code == 401
        genuine = client.post("/webhooks/livekit", content=body,
                              headers=webhook_headers(body, ours.livekit_api_key, ours.livekit_api_secret))
        assert genuine.status_code == 200, genuine.text

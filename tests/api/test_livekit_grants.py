"""The LiveKit grant a visitor gets: one fresh room, microphone only, nothing admin, the agent dispatched."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime

import jwt
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from livekit import api as livekit

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin, client_for
from tests.api.public_helpers import (
    ALLOWED_HEADERS,
    conversation_call,
    dispatch_metadata,
    live_widget,
    started,
    verify_grant,
)
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

ADMIN_GRANTS = ("room_admin", "room_create", "room_list", "room_record", "ingress_admin", "recorder", "agent", "hidden",
                "can_manage_agent_session", "can_subscribe_metrics")


def resumed(client: TestClient[Litestar], widget_id: str, grant: dict) -> dict:
    response = conversation_call(client, widget_id, grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_grant_names_the_configured_livekit_url_and_the_room_it_signs(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    assert set(grant) == {"conversation_id", "resume_token", "channel", "livekit"}
    assert grant["channel"] == "webrtc"
    assert set(grant["livekit"]) == {"url", "room", "token", "expires_at"}
    assert grant["livekit"]["url"] == settings.livekit_url
    claims = verify_grant(settings, grant["livekit"]["token"])
    assert claims.video is not None
    assert claims.video.room == grant["livekit"]["room"]
    assert grant["conversation_id"].replace("-", "") in claims.video.room


def test_the_token_grants_joining_one_room_with_the_microphone_only_and_nothing_admin(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    video = livekit.TokenVerifier("devkey", "secret").verify(grant["livekit"]["token"]).video
    assert video is not None
    assert video.room_join is True
    assert video.room == grant["livekit"]["room"]
    assert video.can_publish is True
    assert video.can_publish_sources == ["microphone"]
    assert video.can_subscribe is True
    assert video.can_publish_data is True
    assert video.can_update_own_metadata is False
    for name in ADMIN_GRANTS:
        assert not getattr(video, name), name
    assert video.destination_room in (None, "")


def test_the_token_carries_no_grant_outside_the_video_room(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    token = started(client, widget["id"])["livekit"]["token"]
    raw = jwt.decode(token, "secret", algorithms=["HS256"], issuer="devkey", options={"verify_nbf": False})
    for other in ("sip", "inference", "observability", "agent", "agentEndpoint", "agentThread"):
        assert not raw.get(other), other
    video = raw["video"]
    assert {k for k, v in video.items() if v is True} == {"roomJoin", "canPublish", "canSubscribe", "canPublishData"}
    assert raw["iss"] == settings.livekit_api_key


def test_the_token_lives_exactly_the_configured_ttl_and_expires_at_says_when(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    before = time.time()
    grant = started(client, widget["id"])
    after = time.time()
    raw = jwt.decode(grant["livekit"]["token"], "secret", algorithms=["HS256"], issuer="devkey")
    ttl = settings.livekit_token_ttl
    assert abs((raw["exp"] - raw["nbf"]) - ttl) <= 1
    assert before - 1 + ttl <= raw["exp"] <= after + 1 + ttl
    expires_at = datetime.fromisoformat(grant["livekit"]["expires_at"].replace("Z", "+00:00"))
    assert expires_at.tzinfo is not None
    assert abs(expires_at.timestamp() - raw["exp"]) <= 1


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_the_ttl_agent_name_key_and_secret_come_from_the_settings(org_a: Admin, settings: Settings) -> None:
    custom = dataclasses.replace(settings, livekit_token_ttl=90, livekit_agent_name="night-shift", livekit_api_key="k2",
                                 livekit_api_secret="another-secret-of-enough-length", livekit_url="wss://lk.example.test")
    app = create_app(custom)
    with client_for(app) as client:
        admin = Admin(client, custom, "org_a", "alice")
        widget = live_widget(admin, app)
        grant = started(client, widget["id"])
    assert grant["livekit"]["url"] == "wss://lk.example.test"
    claims = livekit.TokenVerifier("k2", "another-secret-of-enough-length").verify(grant["livekit"]["token"])
    assert claims.room_config.agents[0].agent_name == "night-shift"
    raw = jwt.decode(grant["livekit"]["token"], "another-secret-of-enough-length", algorithms=["HS256"], issuer="k2")
    assert abs((raw["exp"] - raw["nbf"]) - 90) <= 1
    with pytest.raises(Exception):
        livekit.TokenVerifier("devkey", "secret").verify(grant["livekit"]["token"])


def test_the_room_dispatches_the_configured_agent_with_metadata_naming_the_conversation(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    claims = verify_grant(settings, grant["livekit"]["token"])
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == [settings.livekit_agent_name]
    metadata = dispatch_metadata(claims)
    assert metadata["organization_id"] == "org_a"
    assert metadata["widget_id"] == widget["id"]
    assert metadata["agent_id"] == widget["agent_id"]
    assert metadata["agent_version_id"] == widget["agent_version_id"]
    assert metadata["conversation_id"] == grant["conversation_id"]
    assert metadata["resumed"] is False
    assert grant["resume_token"] not in grant["livekit"]["token"]
    assert grant["resume_token"] not in claims.room_config.agents[0].metadata


def test_every_start_gets_a_fresh_room_and_an_opaque_unique_identity(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grants = [started(client, widget["id"], name="Ann") for _ in range(5)]
    claims = [verify_grant(settings, g["livekit"]["token"]) for g in grants]
    rooms = {c.video.room for c in claims}
    identities = {c.identity for c in claims}
    assert len(rooms) == 5 and len(identities) == 5
    assert len({g["conversation_id"] for g in grants}) == 5
    for grant, claim in zip(grants, claims):
        assert claim.identity, "a participant needs an identity"
        assert "Ann" not in claim.identity and grant["conversation_id"] not in claim.identity
        assert grant["resume_token"] not in claim.identity
        assert claim.name == "Ann"


def test_every_resume_gets_a_fresh_room_and_identity_with_the_same_dispatch(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    resumes: list[dict] = []
    for _ in range(3):  # each resume with the token the previous answer gave
        resumes.append(resumed(client, widget["id"], resumes[-1] if resumes else grant))
    assert len({g["resume_token"] for g in [grant, *resumes]}) == 4
    all_claims = [verify_grant(settings, g["livekit"]["token"]) for g in [grant, *resumes]]
    assert len({c.video.room for c in all_claims}) == 4
    assert len({c.identity for c in all_claims}) == 4
    for answer, claims in zip(resumes, all_claims[1:]):
        assert answer["conversation_id"] == grant["conversation_id"]
        assert answer["livekit"]["room"] == claims.video.room
        assert claims.video.can_publish_sources == ["microphone"]
        assert dispatch_metadata(claims)["conversation_id"] == grant["conversation_id"]
        assert dispatch_metadata(claims)["resumed"] is True, "the agent in a resume's fresh room knows it is a resume"


def test_a_token_signed_with_another_secret_or_key_fails_verification(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    token = started(client, widget["id"])["livekit"]["token"]
    verify_grant(settings, token)
    forged = (livekit.AccessToken("devkey", "not-the-secret").with_identity("x")
              .with_grants(livekit.VideoGrants(room_join=True, room="conv_x", room_admin=True)).to_jwt())
    with pytest.raises(Exception):
        livekit.TokenVerifier("devkey", "secret").verify(forged)
    with pytest.raises(Exception):
        livekit.TokenVerifier("devkey", "not-the-secret").verify(token)
    with pytest.raises(Exception):
        livekit.TokenVerifier("otherkey", "secret").verify(token)
    header, payload, signature = token.split(".")
    with pytest.raises(Exception):
        livekit.TokenVerifier("devkey", "secret").verify(f"{header}.{payload}.{signature[:-4]}AAAA")


def test_refused_origins_get_no_grant(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    response = client.post(f"/public/v1/widgets/{widget['id']}/conversations", json={}, headers={"Origin": "https://evil.example.net"})
    assert response.status_code == 403
    assert "token" not in response.text
    response = client.post(f"/public/v1/widgets/{widget['id']}/conversations", json={}, headers=ALLOWED_HEADERS)
    assert response.status_code == 201

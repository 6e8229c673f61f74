"""LiveKit participant tokens for visitors, and the check of LiveKit's signed webhooks."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgspec
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_encode
from livekit import api

from application.conversations import Grant, RoomTicket

_PLACEHOLDER = "-"  # stands for each grant's own value in the claims built once
# `json.dumps` with livekit-api's separators builds a new encoder on every call; the metadata's bytes are the same.
_METADATA_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class LiveKitIssuer:
    """Signs one-room, short-lived tokens that dispatch the agent worker into a fresh room.

    The claims are livekit-api's own (`Claims.asdict()`, as `AccessToken.to_jwt` makes them), built once
    with placeholders; each grant fills in its room, identity, name, dispatch metadata and times. The
    token is the JWS that `to_jwt` makes through PyJWT (HS256, the same header), with a key that PyJWT's
    HMAC algorithm has checked once, signed by `hmac.digest` (PyJWT's own `sign` is `hmac.new(...).digest()`).
    Going through `AccessToken` and `jwt.encode` on every call cost about 120 µs a token, spent mostly by
    PyJWT re-checking the same key and by livekit-api building the same claims
    (tests/bench/bench_conversations.py); this takes about 20.
    """

    url: str
    api_key: str
    api_secret: str
    agent_name: str
    ttl_seconds: int

    @cached_property
    def _claims(self) -> dict[str, Any]:
        claims = api.access_token.Claims(
            name=_PLACEHOLDER,
            video=api.VideoGrants(
                room_join=True,
                room=_PLACEHOLDER,
                can_subscribe=True,
                can_publish=True,
                can_publish_sources=["microphone"],
                can_publish_data=True,
                can_update_own_metadata=False,
                room_create=False,
                room_list=False,
                room_record=False,
                room_admin=False,
                ingress_admin=False,
                hidden=False,
                recorder=False,
                agent=False,
            ),
            room_config=api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=self.agent_name, metadata=_PLACEHOLDER)]
            ),
        ).asdict()
        return {**claims, "iss": self.api_key}

    @cached_property
    def _signer(self) -> tuple[bytes, bytes]:
        key = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(self.api_secret)  # refuses an empty key, or a public key
        header = msgspec.json.encode({"alg": "HS256", "typ": "JWT"})  # PyJWT's header for HS256, keys sorted
        return key, base64url_encode(header)

    def _sign(self, payload: bytes) -> str:
        key, header = self._signer
        signing_input = header + b"." + base64url_encode(payload)
        return (signing_input + b"." + base64url_encode(hmac.digest(key, signing_input, "sha256"))).decode("ascii")

    def grant(self, ticket: RoomTicket) -> Grant:
        if not ticket.identity or not ticket.room:
            raise ValueError("identity and room must be set when joining a room")
        now = int(time.time())
        metadata = _METADATA_JSON.encode(
            {
                "organization_id": ticket.organization_id,
                "widget_id": ticket.widget_id,
                "agent_id": ticket.agent_id,
                "agent_version_id": ticket.agent_version_id,
                "conversation_id": ticket.conversation_id,
                "channel": "webrtc",
                "visitor": ticket.visitor,
                "context": ticket.context,
                "resumed": ticket.resumed,
            }
        )
        template = self._claims
        (dispatch,) = template["roomConfig"]["agents"]
        claims = {
            **template,
            "name": ticket.visitor_name or "Visitor",
            "video": {**template["video"], "room": ticket.room},
            "roomConfig": {**template["roomConfig"], "agents": [{**dispatch, "metadata": metadata}]},
            "sub": ticket.identity,
            "nbf": now,
            "exp": now + self.ttl_seconds,
        }
        token = self._sign(msgspec.json.encode(claims))
        expires_at = dt.datetime.fromtimestamp(now + self.ttl_seconds, dt.UTC)
        return Grant(url=self.url, room=ticket.room, token=token, expires_at=expires_at)


class WebhookRejectedError(Exception):
    """Unsigned, badly signed or tampered LiveKit webhook (HTTP 401)."""

    code = "invalid_signature"


@dataclass(frozen=True)
class LiveKitWebhooks:
    api_key: str
    api_secret: str

    def verify(self, body: bytes, authorization: str | None) -> tuple[str, str]:
        """The event name and room name of a correctly signed webhook."""
        if not authorization:
            raise WebhookRejectedError("The webhook carries no Authorization header.")
        receiver = api.WebhookReceiver(api.TokenVerifier(self.api_key, self.api_secret))
        try:
            event = receiver.receive(body.decode("utf-8"), authorization.removeprefix("Bearer ").strip())
        except Exception:
            raise WebhookRejectedError("The webhook signature does not match its body.") from None
        return event.event, event.room.name

"""LiveKit participant tokens for visitors, and the check of LiveKit's signed webhooks."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from livekit import api

from application.conversations import Grant, RoomTicket


@dataclass(frozen=True)
class LiveKitIssuer:
    """Signs one-room, short-lived tokens that dispatch the agent worker into a fresh room."""

    url: str
    api_key: str
    api_secret: str
    agent_name: str
    ttl_seconds: int

    def grant(self, ticket: RoomTicket) -> Grant:
        now = dt.datetime.now(dt.UTC)
        expires_at = now + dt.timedelta(seconds=self.ttl_seconds)
        metadata = json.dumps(
            {
                "organization_id": ticket.organization_id,
                "widget_id": ticket.widget_id,
                "agent_id": ticket.agent_id,
                "agent_version_id": ticket.agent_version_id,
                "conversation_id": ticket.conversation_id,
                "channel": "webrtc",
            },
            separators=(",", ":"),
        )
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(ticket.identity)
            .with_name(ticket.visitor_name or "Visitor")
            .with_ttl(dt.timedelta(seconds=self.ttl_seconds))
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=ticket.room,
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
                )
            )
            .with_room_config(
                api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=self.agent_name, metadata=metadata)])
            )
            .to_jwt()
        )
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

"""Helpers for the public API tests: a live widget, read-your-writes, public calls, LiveKit webhooks."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import TestClient
from livekit import api as livekit

from application.store import EventStore
from infrastructure.settings import Settings
from tests.api.conftest import Admin

ALLOWED = "https://example.com"
REFUSED = "https://evil.example.net"
ALLOWED_HEADERS = {"Origin": ALLOWED}
REFUSED_HEADERS = {"Origin": REFUSED}

PRE_CHAT = {
    "id": "pre",
    "title": "About you",
    "trigger": "pre_chat",
    "fields": [
        {"name": "email", "label": "Email", "type": "email", "required": True},
        {"name": "topic", "label": "Topic", "type": "select", "options": ["Sales", "Support"]},
        {"name": "note", "label": "Note", "type": "text"},
    ],
}
CONFIG = {"v1": {"forms": [PRE_CHAT], "feedback": {"enabled": True, "type": "stars"}}}


def sync(app: Litestar) -> None:
    """Read-your-writes: wait until every read model has caught up with the event store."""
    services = app.state.services
    position = services.store.recorder.max_notification_id() or 0
    assert services.read_models.wait(position, 5), f"read models did not reach {position}"


def position(app: Litestar) -> int:
    """The event store's last notification id: unchanged means nothing was written."""
    return app.state.services.store.recorder.max_notification_id() or 0


def store_of(app: Litestar) -> EventStore:
    return app.state.services.store


def live_widget(admin: Admin, app: Litestar, *, domains: list[str] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A published widget on a published agent version, projected and ready to serve."""
    widget = admin.widget(published=True, domains=domains or ["example.com"], config=config or CONFIG)
    sync(app)
    return widget


def widget_path(widget_id: str, *rest: str) -> str:
    return "/".join([f"/public/v1/widgets/{widget_id}", *rest])


def start(client: TestClient[Litestar], widget_id: str, origin: str | None = ALLOWED, body: Any = None) -> httpx.Response:
    headers = {"Origin": origin} if origin is not None else {}
    return client.post(widget_path(widget_id, "conversations"), json=body, headers=headers)


def started(client: TestClient[Litestar], widget_id: str, **visitor: str) -> dict[str, Any]:
    """A started conversation's grant (201 asserted)."""
    response = start(client, widget_id, body={"visitor": visitor} if visitor else None)
    assert response.status_code == 201, response.text
    return response.json()


def conversation_call(
    client: TestClient[Litestar], widget_id: str, conversation_id: str, action: str, body: Any, origin: str | None = ALLOWED
) -> httpx.Response:
    headers = {"Origin": origin} if origin is not None else {}
    return client.post(widget_path(widget_id, "conversations", conversation_id, action), json=body, headers=headers)


def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll until `check()` holds: for the production reader's cache, invalidated asynchronously."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        time.sleep(0.02)


def until_dark(client: TestClient[Litestar], widget_id: str) -> None:
    """Wait until the public config read says 404 (the production cache is evicted by pub/sub)."""
    eventually(lambda: client.get(widget_path(widget_id), headers=ALLOWED_HEADERS).status_code == 404, what="widget dark")


def room_finished_body(room: str, event: str = "room_finished") -> bytes:
    return json.dumps({"event": event, "room": {"name": room}, "id": f"EV_{uuid.uuid4().hex[:12]}"}).encode()


def webhook_headers(body: bytes, key: str = "devkey", secret: str = "secret") -> dict[str, str]:
    """The Authorization LiveKit puts on a webhook: a JWT signed with the API secret naming the body's sha256."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = livekit.AccessToken(key, secret).with_sha256(digest).to_jwt()
    return {"Authorization": token, "Content-Type": "application/webhook+json"}


def verify_grant(settings: Settings, token: str) -> livekit.Claims:
    return livekit.TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret).verify(token)


def dispatch_metadata(claims: livekit.Claims) -> dict[str, Any]:
    assert claims.room_config is not None and len(claims.room_config.agents) == 1
    return json.loads(claims.room_config.agents[0].metadata)


def conversations_of(admin: Admin, app: Litestar, widget_id: str) -> dict[str, dict[str, Any]]:
    """The admin list of a widget's conversations, by id, after the read models caught up."""
    sync(app)
    response = admin.call("GET", f"/v1/widgets/{widget_id}/conversations")
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["items"]}


def event_data(app: Litestar, aggregate_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(class name, attributes) of every stored event of one aggregate, oldest first."""
    found = []
    for event in store_of(app).events.get(uuid.UUID(aggregate_id)):
        found.append((type(event).__name__, dict(event.__dict__)))
    return found

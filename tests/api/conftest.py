"""HTTP fixtures: the app on either wiring, a client that fails any 500, and admins of two organizations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from application.store import EventStore
from infrastructure.settings import Settings
from tests.conftest import admin_headers

PROBLEM_JSON = "application/problem+json"


def refuse_server_errors(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url} answered {response.status_code}"


def client_for(app: Litestar) -> TestClient[Litestar]:
    """A client on `app` that fails the test on any 5xx: bad input is never a server error."""
    client = TestClient(app)
    client.event_hooks = {"request": [], "response": [refuse_server_errors]}
    return client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://docs.anyreach.dev/errors/{code.replace('_', '-')}"
    assert isinstance(body["title"], str) and body["title"]
    text = response.text.lower()
    assert "traceback" not in text and "select " not in text and "insert " not in text
    return body


def etag(version: int) -> str:
    return f'"{version}"'


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


async def _started(app: Litestar) -> None:
    """Wait (briefly) until the public cache listener has subscribed, so the app is fully started.

    Workaround: cancelling RedisPublicReader's listener while it is still subscribing can be
    swallowed, and the app's shutdown then waits on it forever (projections/public_reader.py).
    """
    listening = getattr(app.state.services.reader, "listening", None)
    if listening is not None:
        with anyio.move_on_after(5):
            await listening.wait()


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with client_for(app) as client:
        client.blocking_portal.call(_started, app)
        yield client


@pytest.fixture
def store(app: Litestar) -> EventStore:
    return app.state.services.store


@dataclass
class Admin:
    """An admin of one organization, calling the API with a token that has every scope unless told otherwise."""

    client: TestClient[Litestar]
    settings: Settings
    org: str
    sub: str = "user_1"
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = admin_headers(self.settings, self.org, self.sub)

    def with_scopes(self, *scopes: str) -> dict[str, str]:
        return admin_headers(self.settings, self.org, self.sub, list(scopes))

    def call(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, headers={**self.headers, **(headers or {})}, **kwargs)

    def agent(self, name: str = "Support bot") -> dict[str, Any]:
        response = self.call("POST", "/v1/agents", json={"name": name})
        assert response.status_code == 201, response.text
        return response.json()

    def version(self, agent_id: str, *, published: bool = False, label: str | None = None) -> dict[str, Any]:
        response = self.call("POST", f"/v1/agents/{agent_id}/versions", json={"label": label} if label else None)
        assert response.status_code == 201, response.text
        version = response.json()
        if published:
            response = self.call("POST", f"/v1/agents/{agent_id}/versions/{version['id']}/publish")
            assert response.status_code == 200, response.text
            version = response.json()
        return version

    def widget(self, *, published: bool = False, domains: list[str] | None = None, **body: Any) -> dict[str, Any]:
        """A widget on a fresh agent whose version is published when the widget is."""
        agent = self.agent()
        version = self.version(agent["id"], published=published)
        payload = {"agent_id": agent["id"], "agent_version_id": version["id"], "domains": domains or ["example.com"], **body}
        response = self.call("POST", "/v1/widgets", json=payload)
        assert response.status_code == 201, response.text
        widget = response.json()
        if published:
            response = self.call("POST", f"/v1/widgets/{widget['id']}/publish")
            assert response.status_code == 200, response.text
            widget = response.json()
        return widget

    def get_widget(self, widget_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/widgets/{widget_id}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def org_a(client: TestClient[Litestar], settings: Settings) -> Admin:
    return Admin(client, settings, "org_a", "alice")


@pytest.fixture
def org_b(client: TestClient[Litestar], settings: Settings) -> Admin:
    return Admin(client, settings, "org_b", "bob")

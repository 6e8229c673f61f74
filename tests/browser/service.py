"""The real service on a loopback port, for the browser tests and the embed benchmark.

`create_app` on the embedded wiring, served by uvicorn in a thread. Unless a test hands it a real LiveKit
server (infrastructure/livekit_dev.py), LiveKit points at a loopback port where nothing listens: joining a
room fails at once, as it does wherever no LiveKit server runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from infrastructure.livekit_dev import LocalLiveKit
from infrastructure.settings import Settings
from tests.conftest import admin_headers
from tests.servers import free_port


@dataclass
class ApiServer:
    """The service running for real on a loopback port, and an admin of one organization calling it."""

    base: str
    settings: Settings
    http: httpx.Client = field(repr=False)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def _ok(self, response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        return response.json()

    def create_live_widget(self, domains: list[str], config: dict[str, Any]) -> dict[str, Any]:
        """A published widget pinned to a published agent version, allowed on `domains` only."""
        agent = self._ok(self.call("POST", "/v1/agents", json={"name": "Browser test agent"}), 201)
        version = self._ok(self.call("POST", f"/v1/agents/{agent['id']}/versions", json={"label": "v1"}), 201)
        self._ok(self.call("POST", f"/v1/agents/{agent['id']}/versions/{version['id']}/publish"), 200)
        body = {"agent_id": agent["id"], "agent_version_id": version["id"], "domains": domains, "config": config}
        widget = self._ok(self.call("POST", "/v1/widgets", json=body), 201)
        widget = self._ok(self.call("POST", f"/v1/widgets/{widget['id']}/publish"), 200)
        assert widget["live"] is True
        return widget

    def wait_public(self, widget_id: str, origin: str, timeout: float = 10.0) -> dict[str, Any]:
        """Waits until the public read model serves the widget to `origin` (read-your-writes)."""
        deadline = time.monotonic() + timeout
        while True:
            response = httpx.get(f"{self.base}/public/v1/widgets/{widget_id}", headers={"Origin": origin}, timeout=5)
            if response.status_code == 200:
                return response.json()
            assert time.monotonic() < deadline, f"widget {widget_id} not public for {origin}: {response.status_code} {response.text}"
            time.sleep(0.05)

    def conversations(self, widget_id: str) -> list[dict[str, Any]]:
        return self._ok(self.call("GET", f"/v1/widgets/{widget_id}/conversations"), 200)["items"]

    def wait_conversation(
        self, widget_id: str, conversation_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The admin view of one conversation once `until` holds for it (the list is a projection)."""
        deadline = time.monotonic() + timeout
        row: dict[str, Any] | None = None
        while True:
            row = next((c for c in self.conversations(widget_id) if c["id"] == conversation_id), None)
            if row is not None and until(row):
                return row
            assert time.monotonic() < deadline, f"conversation {conversation_id} never reached the expected state: {row}"
            time.sleep(0.1)


@contextmanager
def running_api(data_dir: Path, org: str, livekit: LocalLiveKit | None = None, port: int = 0,
                agent_name: str = "anyreach-agent", **overrides: Any) -> Iterator[ApiServer]:
    """The service on a loopback port (free unless given) until the block ends, with an admin of `org` calling it;
    its LiveKit is `livekit` when given."""
    settings = Settings(
        data_dir=str(data_dir),
        log_format="json",
        log_level="warning",
        livekit_url=livekit.url if livekit else f"ws://127.0.0.1:{free_port()}",
        livekit_api_key=livekit.api_key if livekit else "devkey",
        livekit_api_secret=livekit.api_secret if livekit else "browser-tests-livekit-secret-0123456789abcdef",
        livekit_agent_name=agent_name,
        **overrides,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="widgets-api", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the API server thread died while starting"
            assert time.monotonic() < deadline, "the API server did not start within 30 s"
            time.sleep(0.05)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/embed.js", timeout=5).status_code == 200, "GET /embed.js does not serve the loader"
        with httpx.Client(base_url=base, headers=admin_headers(settings, org, "browser_admin"), timeout=10) as client:
            yield ApiServer(base, settings, client)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

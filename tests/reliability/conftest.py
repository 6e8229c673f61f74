"""Reliability tests: the app on either wiring, two organizations with real resources, and the run's figures.

Every reliability test adds what it did to `FIGURES` (requests fuzzed, faults
injected, events checked, failures); the terminal summary prints them, and
`WIDGETS_RELIABILITY_REPORT=<file>` also writes them as JSON for
docs/reliability.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from application.store import EventStore
from infrastructure.settings import Settings
from tests.api import conftest as api_fixtures
from tests.api.conftest import Admin
from tests.api.public_helpers import ALLOWED_HEADERS, CONFIG, live_widget, started, sync
from tests.live_server import Served, served  # noqa: F401 - the reliability tests import them from here

FIGURES: Counter[str] = Counter()

# The app on either wiring, its client (which fails any 5xx) and its store: the API tests' own fixtures.
app, client, store = api_fixtures.app, api_fixtures.client, api_fixtures.store


def record(name: str, amount: int = 1) -> None:
    """Add to one of the run's figures (e.g. `fuzz.embedded.requests`)."""
    FIGURES[name] += amount


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
    target = os.environ.get("WIDGETS_RELIABILITY_REPORT")
    if target:
        with open(target, "w") as out:
            json.dump(dict(sorted(FIGURES.items())), out, indent=2)


def stored_events(store: EventStore) -> int:
    """How many events the store holds: unchanged means nothing was written."""
    return store.recorder.max_notification_id() or 0


@pytest.fixture(autouse=True)
def quiet_http_client_log() -> Iterator[None]:
    """Thousands of requests: httpx's line per request would drown a failure's report."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@dataclass
class Tenant:
    """One organization's real resources: an agent with a published and an unpublished version,
    a live widget with a form and feedback, a widget that is not published, and a conversation."""

    admin: Admin
    agent: dict[str, Any]
    published_version: dict[str, Any]
    draft_version: dict[str, Any]
    live: dict[str, Any]
    draft: dict[str, Any]
    conversation: dict[str, Any]
    endpoint: dict[str, Any]

    @property
    def org(self) -> str:
        return self.admin.org

    @property
    def ids(self) -> dict[str, str]:
        return {
            "agent_id": self.agent["id"],
            "version_id": self.published_version["id"],
            "draft_version_id": self.draft_version["id"],
            "widget_id": self.live["id"],
            "draft_widget_id": self.draft["id"],
            "cid": self.conversation["conversation_id"],
            "resume_token": self.conversation["resume_token"],
            "form_id": "pre",
            "endpoint_id": self.endpoint["id"],
        }


def make_tenant(app: Litestar, client: TestClient[Litestar], settings: Settings, org: str, sub: str) -> Tenant:
    admin = Admin(client, settings, org, sub)
    live = live_widget(admin, app, domains=["example.com", "localhost:3000"], config=CONFIG)
    agent = admin.call("GET", f"/v1/agents/{live['agent_id']}").json()
    published = next(v for v in agent["versions"] if v["published"])
    draft = admin.version(agent["id"], label="draft")
    body = {"agent_id": agent["id"], "agent_version_id": draft["id"], "domains": ["example.com"]}
    response = admin.call("POST", "/v1/widgets", json=body)
    assert response.status_code == 201, response.text
    conversation = started(client, live["id"], name="Ada")
    endpoint = admin.call("POST", "/v1/webhook-endpoints", json={"url": "https://hooks.example.com/", "events": ["*"]})
    assert endpoint.status_code == 201, endpoint.text
    sync(app)
    assert client.get(f"/public/v1/widgets/{live['id']}", headers=ALLOWED_HEADERS).status_code == 200
    return Tenant(admin, admin.call("GET", f"/v1/agents/{agent['id']}").json(), published, draft, live, response.json(), conversation,
                  endpoint.json())


@pytest.fixture
def tenants(app: Litestar, client: TestClient[Litestar], settings: Settings) -> tuple[Tenant, Tenant]:
    return make_tenant(app, client, settings, "org_a", "alice"), make_tenant(app, client, settings, "org_b", "bob")

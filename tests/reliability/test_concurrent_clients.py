"""50 clients at once against a real server (`widgets serve`, PostgreSQL + Redis), issuing conflicting commands.

For about ten seconds, 50 threads each with their own HTTP connection change
the domains, config, pinned version and published flag of the same three
widgets, and publish and unpublish the agent version they share, half the time
naming the version they last saw in If-Match. Every answer is a 200, a 409 or a
412. Afterwards every stored event was acknowledged to exactly one client (the
answers that saved something carry `X-Event-Position`), and every widget equals
the fold of its history, its replay from the event store, its row in the admin
list and its entry in the public lookup.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from infrastructure.eventstore import open_event_store
from infrastructure.settings import Settings
from tests.conftest import admin_headers
from tests.reliability.conftest import Served, record, served

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CLIENTS = 50
SECONDS = 10.0
WIDGETS = 3
DOMAIN_SETS = [["example.com"], ["example.com", "shop.example.org"], ["localhost:3000", "example.com"], ["*.example.net"]]
NAMES = ["Concierge", "Help desk", "Ada", "Support"]


@dataclass(frozen=True)
class Answer:
    target: str  # a widget id, or "agent"
    method: str
    path: str
    status: int
    version: int | None  # the widget's version in the body (200 on a widget)
    saved: bool  # the answer carries X-Event-Position: this request stored an event
    body: dict[str, Any]


def seed(client: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    agent = client.post("/v1/agents", json={"name": "Race"}).json()
    first = client.post(f"/v1/agents/{agent['id']}/versions", json={"label": "first"}).json()
    second = client.post(f"/v1/agents/{agent['id']}/versions", json={"label": "second"}).json()
    assert client.post(f"/v1/agents/{agent['id']}/versions/{first['id']}/publish").status_code == 200
    widgets = []
    for _ in range(WIDGETS):
        response = client.post("/v1/widgets", json={"agent_id": agent["id"], "agent_version_id": first["id"], "domains": ["example.com"]})
        assert response.status_code == 201, response.text
        widgets.append(response.json())
    return agent, first, second, widgets


def commands(rng: random.Random, agent: dict[str, Any], first: dict[str, Any], second: dict[str, Any],
             widget_id: str) -> tuple[str, str, str, Any]:
    """(target, method, path, body) of one command, chosen at random."""
    if rng.random() < 0.05:
        action = rng.choice(["publish", "unpublish"])
        return "agent", "POST", f"/v1/agents/{agent['id']}/versions/{second['id']}/{action}", None
    path = f"/v1/widgets/{widget_id}"
    return rng.choice([
        (widget_id, "PUT", f"{path}/domains", {"domains": rng.choice(DOMAIN_SETS)}),
        (widget_id, "PATCH", f"{path}/config", {"v1": {"branding": {"display_name": rng.choice(NAMES)}}}),
        (widget_id, "PATCH", f"{path}/config", {"v1": {"appearance": {"theme": rng.choice(["light", "dark", "auto"])}}}),
        (widget_id, "POST", f"{path}/publish", None),
        (widget_id, "POST", f"{path}/unpublish", None),
        (widget_id, "PUT", f"{path}/agent-version", {"agent_version_id": rng.choice([first["id"], second["id"]])}),
    ])


def fold(history: list[dict[str, Any]]) -> dict[str, Any]:
    """A widget rebuilt from its history as auditors read it: the public event types and their data."""
    state: dict[str, Any] = {}
    for event in history:
        data = event["data"]
        match event["type"]:
            case "widget.created":
                state = {"agent_id": data["agent_id"], "agent_version_id": data["agent_version_id"],
                         "domains": data["domains"], "config": data["config"], "published": False, "deleted": False}
            case "widget.domains_changed":
                state["domains"] = data["domains"]
            case "widget.version_pinned":
                state["agent_id"], state["agent_version_id"] = data["agent_id"], data["agent_version_id"]
            case "widget.config_changed":
                state["config"] = data["config"]
            case "widget.published":
                state["published"] = True
            case "widget.unpublished":
                state["published"] = False
            case "widget.deleted":
                state["deleted"] = True
        state["version"] = event["version"]
    return state


def events_after(store: Any, position: int) -> int:
    """How many events were stored after this notification id."""
    count = 0
    while True:
        page = store.recorder.select_notifications(start=position + 1, limit=1000)
        if not page:
            return count
        count += len(page)
        position = page[-1].id


def full_history(client: httpx.Client, widget_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(f"/v1/widgets/{widget_id}/history", params={"after": after, "limit": 1000}).json()
        items += page["items"]
        if page["next_after"] is None:
            return items
        after = page["next_after"]


@pytest.fixture
def server(production_settings: Settings, tmp_path: Path) -> Any:
    with served(production_settings, tmp_path / "serve.log", WIDGETS_PG_POOL_SIZE="20") as running:
        yield running


def test_fifty_clients_with_conflicting_commands_lose_no_change_and_store_no_extra_event(
    server: Served, production_settings: Settings
) -> None:
    headers = admin_headers(production_settings, "org_race", "racer")
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as admin:
        agent, first, second, widgets = seed(admin)
    store = open_event_store(production_settings)
    try:
        start_versions = {w["id"]: w["version"] for w in widgets}
        agent_events_before = len(list(store.events.get(UUID(agent["id"]))))
        events_before = store.recorder.max_notification_id() or 0

        answers: list[Answer] = []
        lock = threading.Lock()
        barrier = threading.Barrier(CLIENTS)
        deadline: list[float] = []

        def client_loop(number: int) -> None:
            rng = random.Random(number)
            seen = dict(start_versions)  # the last version this client saw of each widget
            mine: list[Answer] = []
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
                barrier.wait(timeout=60)
                with lock:
                    if not deadline:
                        deadline.append(time.monotonic() + SECONDS)
                while time.monotonic() < deadline[0]:
                    widget_id = rng.choice(widgets)["id"]
                    target, method, path, body = commands(rng, agent, first, second, widget_id)
                    extra = {"If-Match": f'"{seen[target]}"'} if target != "agent" and rng.random() < 0.5 else {}
                    response = http.request(method, path, json=body, headers=extra)
                    payload = response.json() if response.content else {}
                    version = payload.get("version") if target != "agent" and response.status_code == 200 else None
                    if version is not None:
                        seen[target] = version
                    mine.append(Answer(target, method, path, response.status_code, version,
                                       "x-event-position" in response.headers, payload))
            with lock:
                answers.extend(mine)

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 120)
        assert not any(t.is_alive() for t in threads), "a client hung"

        statuses = Counter(a.status for a in answers)
        unexpected = [a for a in answers if a.status not in (200, 409, 412)]
        assert not unexpected, f"{statuses}: {[(a.method, a.path, a.status, a.body) for a in unexpected[:5]]}"
        for a in answers:
            if a.status in (409, 412):
                assert a.body["status"] == a.status and a.body["code"], a.body
        assert statuses[200] > CLIENTS, statuses  # the race was real: many commands succeeded, and many lost

        # Every stored event was acknowledged to exactly one client, and nothing else was stored.
        saved = [a for a in answers if a.saved]
        assert all(a.status == 200 for a in saved)
        assert events_after(store, events_before) == len(saved)  # counted: a refused insert leaves a gap in the ids
        assert len(list(store.events.get(UUID(agent["id"])))) - agent_events_before == sum(a.target == "agent" for a in saved)
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as admin:
            position = store.recorder.max_notification_id()
            assert admin.get("/v1/read-models/wait", params={"position": position, "timeout": 30}).status_code == 200
            listed = {w["id"]: w for w in admin.get("/v1/widgets", params={"limit": 100}).json()["items"]}
            for widget in widgets:
                wid = widget["id"]
                changes = sorted(a.version for a in saved if a.target == wid)
                stored = len(list(store.events.get(UUID(wid))))
                final = admin.get(f"/v1/widgets/{wid}").json()
                assert changes == list(range(start_versions[wid] + 1, final["version"] + 1)), "a version acknowledged twice, or never"
                assert stored == final["version"] == start_versions[wid] + len(changes)
                assert all(a.version <= final["version"] for a in answers if a.target == wid and a.version is not None)

                history = full_history(admin, wid)
                assert [e["version"] for e in history] == list(range(1, stored + 1))
                folded = fold(history)
                for key in ("agent_id", "agent_version_id", "domains", "config", "published", "deleted", "version"):
                    assert folded[key] == final[key], (key, folded[key], final[key])
                replayed = store.repository.get(UUID(wid))
                assert (replayed.domains, replayed.config, replayed.published, replayed.version) == (
                    final["domains"], final["config"], final["published"], final["version"])
                assert listed[wid] == final  # the admin list's row equals the aggregate

                public = httpx.get(f"{server.url}/public/v1/widgets/{wid}", headers={"Origin": "https://example.com"})
                if final["live"] and "example.com" in final["domains"]:
                    assert public.status_code == 200 and public.json()["config"] == final["config"]
                elif not final["live"]:
                    assert public.status_code == 404
    finally:
        store.close()

    assert "internal_error" not in server.output() and '"level": "error"' not in server.output()
    record("concurrency.clients", CLIENTS)
    record("concurrency.requests", len(answers))
    record("concurrency.answers_200", statuses[200])
    record("concurrency.answers_409", statuses[409])
    record("concurrency.answers_412", statuses[412])
    record("concurrency.events_checked", len(saved))

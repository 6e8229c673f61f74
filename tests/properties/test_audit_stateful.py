"""The audit trail tells the truth: random admin sessions of two organizations, checked through the HTTP API.

A stateful machine drives agents and widgets of `org_a` and `org_b` through
the admin API of an embedded app (SQLite, in-process projections), refusals
included, and keeps its own model of what each step should have recorded.
After every step:

- each widget's history folds back into exactly what `GET /v1/widgets/{id}`
  answers, and `?version=N` answers the state after the N-th event, both of
  which also equal the model;
- each organization's audit feed holds exactly the events the model expects
  of it, in strictly increasing position order, and nothing of the other one.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from litestar.testing import TestClient

from api.app import create_app
from domain import event_types as t
from infrastructure.settings import Settings
from tests.conftest import admin_headers

ORGS = {"org_a": "alice", "org_b": "bob"}
DOMAIN_POOL = ["example.com", "a.example.com", "*.shop.example.org", "localhost:3000", "http://example.com"]
# Config leaves a patch may set, each with a few valid values (the first is the default).
LEAVES: dict[tuple[str, str], list[str]] = {
    ("appearance", "theme"): ["auto", "dark", "light"],
    ("appearance", "primary_color"): ["#2563EB", "#000000"],
    ("branding", "display_name"): ["Assistant", "Ada"],
}
DEFAULT_LEAVES = {leaf: values[0] for leaf, values in LEAVES.items()}

domain_lists = st.lists(st.sampled_from(DOMAIN_POOL), unique=True, max_size=3)
patches = st.sampled_from(sorted(LEAVES)).flatmap(lambda leaf: st.tuples(st.just(leaf), st.sampled_from(LEAVES[leaf])))
picks = st.integers(min_value=0, max_value=1_000)


@dataclass
class VersionModel:
    id: str
    number: int
    published: bool = False


@dataclass
class AgentModel:
    id: str
    org: str
    versions: list[VersionModel] = field(default_factory=list)
    version: int = 1  # the aggregate's version


@dataclass
class WidgetModel:
    id: str
    org: str
    agent_id: str
    agent_version_id: str
    domains: list[str]
    leaves: dict[tuple[str, str], str] = field(default_factory=lambda: dict(DEFAULT_LEAVES))
    published: bool = False
    deleted: bool = False
    types: list[str] = field(default_factory=list)  # the event types it recorded, oldest first
    states: list[dict[str, Any]] = field(default_factory=list)  # states[n - 1]: after its n-th event

    def snapshot(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "agent_version_id": self.agent_version_id, "domains": list(self.domains),
                "leaves": dict(self.leaves), "published": self.published, "deleted": self.deleted}


def leaves_of(config: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(section, key): config["v1"][section][key] for section, key in LEAVES}


def observed(widget: dict[str, Any]) -> dict[str, Any]:
    """A widget answer in the model's terms."""
    return {"agent_id": widget["agent_id"], "agent_version_id": widget["agent_version_id"], "domains": widget["domains"],
            "leaves": leaves_of(widget["config"]), "published": widget["published"], "deleted": widget["deleted"]}


FOLDED = ("agent_id", "agent_version_id", "domains", "config", "published", "deleted")


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A widget's state rebuilt from its history alone, as an auditor would."""
    state: dict[str, Any] = {}
    for e in events:
        data = e["data"]
        match e["type"]:
            case t.WIDGET_CREATED:
                state = {"agent_id": data["agent_id"], "agent_version_id": data["agent_version_id"],
                         "domains": data["domains"], "config": data["config"], "published": False, "deleted": False}
            case t.WIDGET_DOMAINS_CHANGED:
                state["domains"] = data["domains"]
            case t.WIDGET_VERSION_PINNED:
                state["agent_id"], state["agent_version_id"] = data["agent_id"], data["agent_version_id"]
            case t.WIDGET_CONFIG_CHANGED:
                state["config"] = data["config"]
            case t.WIDGET_PUBLISHED:
                state["published"] = True
            case t.WIDGET_UNPUBLISHED:
                state["published"] = False
            case t.WIDGET_DELETED:
                state["deleted"], state["published"] = True, False
            case other:
                raise AssertionError(f"unexpected event type {other} in a widget's history")
    return state


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class AuditTrail(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="audit-stateful-"))
        self.settings = Settings(data_dir=str(self.folder / "var"), log_format="json", log_level="warning")
        self.app = create_app(self.settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        self.headers = {org: admin_headers(self.settings, org, sub) for org, sub in ORGS.items()}
        self.agents: list[AgentModel] = []
        self.widgets: list[WidgetModel] = []
        self.feeds: dict[str, list[tuple[str, str, int]]] = {org: [] for org in ORGS}

    def teardown(self) -> None:
        try:
            self.client.__exit__(None, None, None)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- talking to the API, and recording what the model expects -------------------------

    def call(self, org: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, headers=self.headers[org], **kwargs)
        assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def expect(self, response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
        assert response.status_code == status, f"expected {status} {code or ''}, got {response.status_code}: {response.text}"
        body = response.json() if response.content else {}
        if code is not None:
            assert body["code"] == code, body
        return body

    def recorded(self, org: str, aggregate_id: str, event_type: str, version: int) -> None:
        self.feeds[org].append((aggregate_id, event_type, version))

    def widget_event(self, widget: WidgetModel, event_type: str) -> None:
        widget.types.append(event_type)
        widget.states.append(widget.snapshot())
        self.recorded(widget.org, widget.id, event_type, len(widget.types))

    def agent_event(self, agent: AgentModel, event_type: str) -> None:
        agent.version += 1
        self.recorded(agent.org, agent.id, event_type, agent.version)

    def pick_widget(self, i: int) -> WidgetModel:
        return self.widgets[i % len(self.widgets)]

    def pick_version(self, org: str, i: int) -> tuple[AgentModel, VersionModel]:
        choices = [(a, v) for a in self.agents if a.org == org for v in a.versions]
        return choices[i % len(choices)]

    def version_of(self, version_id: str) -> VersionModel:
        return next(v for a in self.agents for v in a.versions if v.id == version_id)

    def widget_answer(self, widget: WidgetModel, body: dict[str, Any]) -> None:
        assert body["version"] == len(widget.types)
        assert observed(body) == widget.snapshot()

    # --- agents -----------------------------------------------------------------------------

    @rule(org=st.sampled_from(sorted(ORGS)))
    def create_agent(self, org: str) -> None:
        self.new_agent(org)

    def new_agent(self, org: str) -> AgentModel:
        body = self.expect(self.call(org, "POST", "/v1/agents", json={"name": f"Agent of {org}"}), 201)
        agent = AgentModel(body["id"], org)
        self.agents.append(agent)
        self.recorded(org, agent.id, t.AGENT_CREATED, 1)
        return agent

    @rule(i=picks)
    def create_version(self, i: int) -> None:
        agent = self.agents[i % len(self.agents)]
        body = self.expect(self.call(agent.org, "POST", f"/v1/agents/{agent.id}/versions"), 201)
        assert body["number"] == len(agent.versions) + 1 and body["published"] is False
        agent.versions.append(VersionModel(body["id"], body["number"]))
        self.agent_event(agent, t.AGENT_VERSION_CREATED)

    @rule(org=st.sampled_from(sorted(ORGS)), i=picks, publish=st.booleans())
    def publish_or_unpublish_version(self, org: str, i: int, publish: bool) -> None:
        agent, version = self.pick_version(org, i)
        action = "publish" if publish else "unpublish"
        body = self.expect(self.call(org, "POST", f"/v1/agents/{agent.id}/versions/{version.id}/{action}"), 200)
        assert body["published"] is publish
        if version.published != publish:
            version.published = publish
            self.agent_event(agent, t.AGENT_VERSION_PUBLISHED if publish else t.AGENT_VERSION_UNPUBLISHED)

    # --- widgets ----------------------------------------------------------------------------

    @initialize()
    def two_organizations_with_an_agent_version_and_a_widget(self) -> None:
        for org in sorted(ORGS):
            agent = self.new_agent(org)
            self.create_version(len(self.agents) - 1)
            self.create_widget(org, 0, [DOMAIN_POOL[0]])
            assert self.widgets[-1].agent_id == agent.id

    @rule(org=st.sampled_from(sorted(ORGS)), i=picks, domains=domain_lists)
    def create_widget(self, org: str, i: int, domains: list[str]) -> None:
        agent, version = self.pick_version(org, i)
        body = self.expect(self.call(org, "POST", "/v1/widgets", json={
            "agent_id": agent.id, "agent_version_id": version.id, "domains": domains}), 201)
        widget = WidgetModel(body["id"], org, agent.id, version.id, list(domains))
        self.widgets.append(widget)
        self.widget_event(widget, t.WIDGET_CREATED)
        self.widget_answer(widget, body)

    def refused_if_deleted(self, widget: WidgetModel, response: httpx.Response) -> bool:
        if widget.deleted:
            self.expect(response, 409, "widget_deleted")
        return widget.deleted

    @rule(w=picks, domains=domain_lists)
    def change_domains(self, w: int, domains: list[str]) -> None:
        widget = self.pick_widget(w)
        response = self.call(widget.org, "PUT", f"/v1/widgets/{widget.id}/domains", json={"domains": domains})
        if self.refused_if_deleted(widget, response):
            return
        body = self.expect(response, 200)
        if set(domains) != set(widget.domains):  # another order of the same sites changes nothing
            widget.domains = list(domains)
            self.widget_event(widget, t.WIDGET_DOMAINS_CHANGED)
        self.widget_answer(widget, body)

    @rule(w=picks, patch=patches)
    def patch_config(self, w: int, patch: tuple[tuple[str, str], str]) -> None:
        widget = self.pick_widget(w)
        (section, key), value = patch
        response = self.call(widget.org, "PATCH", f"/v1/widgets/{widget.id}/config", json={"v1": {section: {key: value}}})
        if self.refused_if_deleted(widget, response):
            return
        body = self.expect(response, 200)
        if widget.leaves[(section, key)] != value:
            widget.leaves[(section, key)] = value
            self.widget_event(widget, t.WIDGET_CONFIG_CHANGED)
        self.widget_answer(widget, body)

    @rule(w=picks, i=picks)
    def pin_version(self, w: int, i: int) -> None:
        widget = self.pick_widget(w)
        agent, version = self.pick_version(widget.org, i)
        response = self.call(widget.org, "PUT", f"/v1/widgets/{widget.id}/agent-version",
                             json={"agent_id": agent.id, "agent_version_id": version.id})
        if self.refused_if_deleted(widget, response):
            return
        if (agent.id, version.id) == (widget.agent_id, widget.agent_version_id):
            self.widget_answer(widget, self.expect(response, 200))
        elif widget.published and not version.published:
            self.expect(response, 409, "agent_version_not_published")
        else:
            body = self.expect(response, 200)
            widget.agent_id, widget.agent_version_id = agent.id, version.id
            self.widget_event(widget, t.WIDGET_VERSION_PINNED)
            self.widget_answer(widget, body)

    @rule(w=picks, publish=st.booleans())
    def publish_or_unpublish_widget(self, w: int, publish: bool) -> None:
        widget = self.pick_widget(w)
        response = self.call(widget.org, "POST", f"/v1/widgets/{widget.id}/{'publish' if publish else 'unpublish'}")
        if self.refused_if_deleted(widget, response):
            return
        if publish and not self.version_of(widget.agent_version_id).published:
            self.expect(response, 409, "agent_version_not_published")
            return
        body = self.expect(response, 200)
        if widget.published != publish:
            widget.published = publish
            self.widget_event(widget, t.WIDGET_PUBLISHED if publish else t.WIDGET_UNPUBLISHED)
        self.widget_answer(widget, body)

    @rule(w=picks)
    def delete_widget(self, w: int) -> None:
        widget = self.pick_widget(w)
        response = self.call(widget.org, "DELETE", f"/v1/widgets/{widget.id}")
        if self.refused_if_deleted(widget, response):
            return
        self.expect(response, 204)
        widget.deleted, widget.published = True, False
        self.widget_event(widget, t.WIDGET_DELETED)

    @rule(w=picks, action=st.sampled_from(["read", "history", "version", "publish", "patch", "delete"]))
    def the_other_organization_sees_and_changes_nothing(self, w: int, action: str) -> None:
        widget = self.pick_widget(w)
        stranger = next(org for org in ORGS if org != widget.org)
        method, suffix, kwargs = {
            "read": ("GET", "", {}),
            "history": ("GET", "/history", {}),
            "version": ("GET", "", {"params": {"version": 1}}),
            "publish": ("POST", "/publish", {}),
            "patch": ("PATCH", "/config", {"json": {"v1": {"appearance": {"theme": "dark"}}}}),
            "delete": ("DELETE", "", {}),
        }[action]
        self.expect(self.call(stranger, method, f"/v1/widgets/{widget.id}{suffix}", **kwargs), 404, "not_found")

    # --- what every step must leave true ----------------------------------------------------

    @invariant()
    def every_widget_is_what_its_history_says(self) -> None:
        for widget in self.widgets:
            base = f"/v1/widgets/{widget.id}"
            history = self.expect(self.call(widget.org, "GET", f"{base}/history", params={"limit": 1000}), 200)
            events = history["items"]
            assert [(e["type"], e["version"]) for e in events] == [(ty, n) for n, ty in enumerate(widget.types, 1)]
            assert all(e["widget_id"] == widget.id and e["actor"] == ORGS[widget.org] for e in events)

            current = self.call(widget.org, "GET", base)
            if widget.deleted:
                self.expect(current, 404, "not_found")
            else:
                body = self.expect(current, 200)
                assert {k: body[k] for k in FOLDED} == fold(events)
                assert observed(body) == widget.snapshot()
                assert body["version"] == len(events) and current.headers["etag"] == f'"{len(events)}"'
                assert body["live"] == (widget.published and self.version_of(widget.agent_version_id).published)
                assert when(body["created_at"]) == when(events[0]["occurred_at"])
                assert when(body["updated_at"]) == when(events[-1]["occurred_at"])

            for n in range(1, len(events) + 1):
                then = self.expect(self.call(widget.org, "GET", base, params={"version": n}), 200)
                assert then["version"] == n
                assert {k: then[k] for k in FOLDED} == fold(events[:n]), f"version {n}"
                assert observed(then) == widget.states[n - 1], f"version {n}"
                assert when(then["updated_at"]) == when(events[n - 1]["occurred_at"])
            self.expect(self.call(widget.org, "GET", base, params={"version": len(events) + 1}), 404, "not_found")

    @invariant()
    def each_organization_reads_exactly_its_own_feed(self) -> None:
        head = self.app.state.services.store.recorder.max_notification_id() or 0
        self.expect(self.call("org_a", "GET", "/v1/read-models/wait", params={"position": head}), 200)
        for org in ORGS:
            feed = self.expect(self.call(org, "GET", "/v1/audit/events", params={"limit": 1000}), 200)["items"]
            assert [(e["aggregate_id"], e["type"], e["version"]) for e in feed] == self.feeds[org]
            positions = [e["position"] for e in feed]
            assert positions == sorted(set(positions)), "positions must strictly increase"
            assert all(0 < p <= head for p in positions)
            foreign = {aggregate_id for other, events in self.feeds.items() if other != org for aggregate_id, _, _ in events}
            assert not foreign & {e["aggregate_id"] for e in feed}
            assert all(e["actor"] == ORGS[org] for e in feed)
            assert all(e["aggregate_type"] == e["type"].partition(".")[0] for e in feed)


AuditTrail.TestCase.settings = settings(
    max_examples=15, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestAuditTrail = AuditTrail.TestCase

"""Each event's effect on each read model, on the real stores; the projection process; failures; the wiring.

Read models: the public lookup (in-process, and Redis over a PostgreSQL event
store) and the admin list (SQLite, and PostgreSQL). Commands go through the real
application services; each check first lets a runner catch up.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from litestar.testing import TestClient

from api.app import create_app
from application.store import EventStore
from domain.origin import parse_origin
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_entry import PublicEntry
from projections.public_reader import RedisPublicReader
from projections.public_views import InProcessPublicView, RedisPublicView, current_generation
from projections.runner import ProjectionFailedError, ProjectionRunner
from projections.widget_list import WidgetListView
from projections.widget_rows import WidgetRow
from tests.conftest import admin_headers
from tests.unit.test_widget_rows import Admin, config_named, random_history

ROOT = Path(__file__).resolve().parents[2]
# Each read model on each of its stores, by the fixtures below: together they are the three wirings' stores, and a
# runner writes one model to one store, so a wiring would only repeat one of them.
SKIPPED_WIRINGS = {
    "embedded": "its stores (the in-process lookup over SQLite, the SQLite list) are parameters of every case here, and "
                "the embedded app is test_the_embedded_app_lists_a_widget_once_its_position_is_reached_and_reports_no_lag",
    "production": "its stores (Redis, PostgreSQL) are parameters of every case here, and widgets project runs on it",
    "managed": "its stores (the Redis Cluster, PostgreSQL through PgBouncer) are parameters of every case here; the API "
               "suites run the managed wiring whole",
}


@dataclass
class ReadModel:
    """One read model on its store, with the runner that keeps it and a way to read a widget's row."""

    kind: str
    store: EventStore
    view: Any
    admin: Admin

    def __post_init__(self) -> None:
        self.runner = ProjectionRunner(self.kind, self.store, self.view)

    def sync(self) -> None:
        self.runner.catch_up()
        assert self.view.position() == self.store.recorder.max_notification_id()

    def row(self, widget_id: Any) -> WidgetRow | None:
        """The widget as readers see it; None when it is not shown at all."""
        if isinstance(self.view, WidgetListView):
            rows, _ = self.view.page(self.admin.organization_id, 100, None)
            return next((r for r in rows if r.id == str(widget_id)), None)
        entry = self.view.get(str(widget_id))
        return entry.row if entry is not None else None

    def entry(self, widget_id: Any) -> PublicEntry | None:
        return self.view.get(str(widget_id))

    def live(self, widget_id: Any) -> bool:
        row = self.row(widget_id)
        assert row is not None, f"widget {widget_id} is not in the {self.kind} read model"
        return row.live


PUBLIC_MODELS = ["public lookup, in-process", "public lookup, Redis", "public lookup, Redis Cluster"]
LIST_MODELS = ["admin list, SQLite", "admin list, PostgreSQL", "admin list, PostgreSQL through PgBouncer"]


def build_model(kind: str, request: pytest.FixtureRequest) -> ReadModel:
    fixture = request.getfixturevalue
    if kind == "public lookup, in-process":
        store, view = fixture("sqlite_store"), InProcessPublicView()
    elif kind.startswith("public lookup, Redis"):
        cluster = kind.endswith("Cluster")
        client, prefix = (fixture("cluster_client"), fixture("cluster_prefix")) if cluster else (fixture("redis_client"), fixture("redis_prefix"))
        store, view = fixture("pg_store"), RedisPublicView(client, prefix, current_generation(client, prefix))
    elif kind == "admin list, SQLite":
        store, view = fixture("sqlite_store"), WidgetListView(fixture("sqlite_db"))
    elif kind.endswith("PgBouncer"):
        store, view = fixture("pooled_pg_store"), WidgetListView(fixture("pooled_pg_db"))
    else:
        store, view = fixture("pg_store"), WidgetListView(fixture("pg_db"))
    return ReadModel(kind, store, view, Admin(store))


@pytest.fixture(params=PUBLIC_MODELS + LIST_MODELS)
def model(request: pytest.FixtureRequest) -> ReadModel:
    return build_model(request.param, request)


@pytest.fixture(params=PUBLIC_MODELS)
def public(request: pytest.FixtureRequest) -> ReadModel:
    return build_model(request.param, request)


@pytest.fixture(params=LIST_MODELS)
def admin_list(request: pytest.FixtureRequest) -> ReadModel:
    return build_model(request.param, request)


def eventually(check: Callable[[], Any], timeout: float = 15.0, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(every)


def allows(entry: PublicEntry, origin: str) -> bool:
    parsed = parse_origin(origin)
    assert parsed is not None, origin
    return entry.matcher.allows(parsed)


# ---- each event on every read model ---------------------------------------------------


def test_a_created_widget_is_shown_with_its_agent_version_domains_and_config_and_is_not_live(model: ReadModel) -> None:
    agent_id, version_id = model.admin.version()
    widget_id = model.admin.widget((agent_id, version_id), domains=["Example.COM"], config=config_named("Ada"))
    model.sync()

    row = model.row(widget_id)
    assert row is not None
    assert (row.id, row.organization_id, row.agent_id, row.agent_version_id) == (
        str(widget_id), "org_a", str(agent_id), str(version_id))
    assert row.domains == ["example.com"]
    assert row.config["v1"]["branding"]["display_name"] == "Ada"
    assert (row.published, row.live, row.deleted, row.version) == (False, False, False, 1)


def test_publishing_makes_a_widget_live_and_unpublishing_takes_it_down(model: ReadModel) -> None:
    widget_id = model.admin.widget()
    model.sync()
    model.admin.publish(widget_id)
    model.sync()
    assert model.live(widget_id)
    assert model.row(widget_id).published  # type: ignore[union-attr]

    model.admin.unpublish(widget_id)
    model.sync()
    assert not model.live(widget_id)
    assert model.row(widget_id).version == 3  # type: ignore[union-attr]


def test_changed_domains_replace_the_stored_ones(model: ReadModel) -> None:
    widget_id = model.admin.widget(domains=["old.example.com"])
    model.sync()
    model.admin.change_domains(widget_id, ["new.example.com", "*.shop.example.org"])
    model.sync()
    assert model.row(widget_id).domains == ["new.example.com", "*.shop.example.org"]  # type: ignore[union-attr]


def test_a_changed_config_is_stored_and_the_row_moves_to_the_new_version(model: ReadModel) -> None:
    widget_id = model.admin.widget(config=config_named("Before"))
    model.sync()
    model.admin.configure(widget_id, config_named("After"))
    model.sync()
    row = model.row(widget_id)
    assert row is not None
    assert row.config["v1"]["branding"]["display_name"] == "After"
    assert row.version == 2
    assert row.updated_at > row.created_at


def test_a_deleted_widget_is_no_longer_shown(model: ReadModel) -> None:
    widget_id = model.admin.widget(published=True)
    kept = model.admin.widget(published=True)
    model.sync()
    model.admin.delete(widget_id)
    model.sync()
    assert model.row(widget_id) is None
    assert model.live(kept)


def test_pinning_another_version_moves_the_widget_to_that_versions_fate(model: ReadModel) -> None:
    old = model.admin.version()
    new = model.admin.version(old[0])
    widget_id = model.admin.widget(old, published=True)
    model.sync()
    model.admin.pin(widget_id, new[1])
    model.sync()
    assert model.row(widget_id).agent_version_id == str(new[1])  # type: ignore[union-attr]

    model.admin.unpublish_version(old)
    model.sync()
    assert model.live(widget_id), "unpublishing the version it left must not affect the widget"

    model.admin.unpublish_version(new)
    model.sync()
    assert not model.live(widget_id)


def test_unpublishing_the_agent_version_takes_a_published_widget_down_and_republishing_brings_it_back(
    model: ReadModel,
) -> None:
    agent_version = model.admin.version()
    widget_id = model.admin.widget(agent_version, published=True)
    model.sync()
    assert model.live(widget_id)

    model.admin.unpublish_version(agent_version)
    model.sync()
    assert not model.live(widget_id)
    assert model.row(widget_id).published  # type: ignore[union-attr]

    model.admin.publish_version(agent_version)
    model.sync()
    assert model.live(widget_id)


def test_every_widget_pinned_to_a_version_flips_with_it_and_no_other(model: ReadModel) -> None:
    shared = model.admin.version()
    first = model.admin.widget(shared, published=True)
    second = model.admin.widget(shared, published=True)
    unpublished = model.admin.widget(shared)
    elsewhere = model.admin.widget(model.admin.version(shared[0]), published=True)
    model.sync()

    model.admin.unpublish_version(shared)
    model.sync()
    assert (model.live(first), model.live(second), model.live(unpublished), model.live(elsewhere)) == (
        False, False, False, True)

    model.admin.publish_version(shared)
    model.sync()
    assert (model.live(first), model.live(second), model.live(unpublished), model.live(elsewhere)) == (
        True, True, False, True)


def test_after_a_random_history_every_row_agrees_with_the_aggregates(model: ReadModel) -> None:
    rng = random.Random(11)
    random_history(model.admin, rng, 150, widgets=10, agents=2, versions=2)
    model.sync()
    random_history(model.admin, rng, 150, widgets=3, agents=1, versions=2)
    model.sync()

    for widget_id in model.admin.created:
        expected = model.admin.expected_row(widget_id)
        assert model.row(widget_id) == (None if expected.deleted else expected)


# ---- what only the public lookup keeps ----------------------------------------------------


def test_the_public_matcher_allows_exactly_the_current_domains(public: ReadModel) -> None:
    widget_id = public.admin.widget(domains=["old.example.com"])
    public.sync()
    entry = public.entry(widget_id)
    assert entry is not None
    assert allows(entry, "https://old.example.com")
    assert not allows(entry, "https://new.example.com")

    public.admin.change_domains(widget_id, ["new.example.com", "*.shop.example.org"])
    public.sync()
    entry = public.entry(widget_id)
    assert entry is not None
    assert allows(entry, "https://new.example.com")
    assert allows(entry, "https://eu.shop.example.org")
    assert not allows(entry, "https://old.example.com")
    assert not allows(entry, "https://shop.example.org")
    assert not allows(entry, "http://new.example.com")


def test_the_public_body_is_the_current_config_with_nothing_of_the_organization(public: ReadModel) -> None:
    widget_id = public.admin.widget(config=config_named("Before"))
    public.sync()
    before = public.entry(widget_id)
    public.admin.configure(widget_id, config_named("After"))
    public.sync()
    after = public.entry(widget_id)

    assert before is not None and after is not None
    body = msgspec.json.decode(after.body)
    assert body == {"id": str(widget_id), "config": public.admin.expected_row(widget_id).config, "channel": "webrtc"}
    assert body["config"]["v1"]["branding"]["display_name"] == "After"
    assert b"org_a" not in after.body and b"Before" not in after.body
    assert (before.etag, after.etag) == ('"1"', '"2"')


def test_a_deleted_widget_leaves_no_public_entry_and_no_pin(public: ReadModel) -> None:
    agent_version = public.admin.version()
    widget_id = public.admin.widget(agent_version, published=True)
    public.sync()
    public.admin.delete(widget_id)
    public.sync()
    assert public.entry(widget_id) is None
    assert public.view.pinned_widgets(str(agent_version[1])) == set()


# ---- what only the admin list keeps -----------------------------------------------------------


def test_the_admin_list_shows_one_organizations_widgets_newest_first(admin_list: ReadModel) -> None:
    made = [admin_list.admin.widget() for _ in range(3)]
    stranger = Admin(admin_list.store, organization_id="org_b", actor="bob")
    theirs = stranger.widget()
    admin_list.sync()

    rows, cursor = admin_list.view.page("org_a", 2, None)
    more, end = admin_list.view.page("org_a", 2, cursor)
    assert [r.id for r in rows + more] == [str(w) for w in reversed(made)]
    assert end is None
    assert [r.id for r in admin_list.view.page("org_b", 10, None)[0]] == [str(theirs)]


def test_a_deleted_widget_stays_stored_marked_deleted_but_is_not_listed(admin_list: ReadModel) -> None:
    widget_id = admin_list.admin.widget(published=True)
    admin_list.sync()
    admin_list.admin.delete(widget_id)
    admin_list.sync()

    assert admin_list.view.page("org_a", 10, None) == ([], None)
    stored = admin_list.view.load({str(widget_id)}, set())[0][str(widget_id)]
    assert (stored.deleted, stored.published, stored.live, stored.version) == (True, False, False, 3)


# ---- the projection process ---------------------------------------------------------------------


def test_widgets_project_follows_commands_of_another_process_and_stops_cleanly_on_sigterm(
    production_settings: Settings, pg_store: EventStore, pg_db: Database, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = production_settings
    WidgetListView(pg_db)  # the tables exist before two processes race to create them
    admin = Admin(pg_store)
    before = admin.widget(published=True)
    env = {
        **os.environ,
        "WIDGETS_DATABASE_URL": settings.database_url, "WIDGETS_DATABASE_SCHEMA": settings.database_schema,
        "WIDGETS_REDIS_URL": settings.redis_url, "WIDGETS_REDIS_PREFIX": settings.redis_prefix,
        "WIDGETS_LOG_FORMAT": "json", "WIDGETS_LOG_LEVEL": "info",
        "WIDGETS_AUTH_SECRET": settings.auth_secret, "WIDGETS_DATA_KEY": settings.data_key,
    }
    log = (tmp_path / "project.log").open("w+")
    process = subprocess.Popen(["uv", "run", "widgets", "project"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        public = RedisPublicView(redis_client, settings.redis_prefix, current_generation(redis_client, settings.redis_prefix))
        listed = WidgetListView(pg_db, create=False)

        def shown(widget_id: Any) -> bool:
            entry = public.get(str(widget_id))
            rows, _ = listed.page("org_a", 100, None)
            return entry is not None and entry.row.live and str(widget_id) in {r.id for r in rows}

        assert eventually(lambda: shown(before), timeout=30), _output(log)

        started = time.monotonic()
        after = admin.widget(published=True)
        assert eventually(lambda: shown(after), timeout=8), _output(log)
        # The safety timer wakes it every 10 s; much sooner means LISTEN/NOTIFY woke it.
        assert time.monotonic() - started < 5

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, _output(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert public.position() == listed.position() == pg_store.recorder.max_notification_id()


def _output(log: Any) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


# ---- a runner that meets a bad event stops there --------------------------------------------------


def insert_undecodable_notification(settings: Settings) -> int:
    """A widget event whose stored state is not JSON, written behind the application's back."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        found = conn.execute(
            f'INSERT INTO "{settings.database_schema}".widgets_events (originator_id, originator_version, topic, state) '
            "VALUES (gen_random_uuid(), 1, 'widget.created', %s) RETURNING notification_id",
            [b"\x00 not json"],
        ).fetchone()
    assert found is not None
    return int(found[0])


@pytest.mark.parametrize("kind", ["public lookup, Redis", "admin list, PostgreSQL"])
def test_a_runner_stops_at_an_undecodable_notification_naming_it_and_never_passes_it(
    kind: str, request: pytest.FixtureRequest, production_settings: Settings
) -> None:
    model = build_model(kind, request)
    good = model.admin.widget(published=True)
    model.sync()
    bad = insert_undecodable_notification(production_settings)
    after = model.admin.widget(published=True)

    for _ in range(2):  # a retry meets it again: it is never skipped
        with pytest.raises(ProjectionFailedError, match=rf"stopped at notification {bad} \(notification {bad} cannot"):
            model.runner.catch_up()
        assert model.runner.position == model.view.position() == bad - 1
    assert model.row(good) is not None
    assert model.row(after) is None

    restarted = ProjectionRunner(kind, model.store, model.view)
    with pytest.raises(ProjectionFailedError, match=rf"notification {bad}\b"):
        restarted.catch_up()
    assert model.view.position() == bad - 1


def test_a_runner_whose_view_refuses_the_commit_stops_at_the_page_and_keeps_its_position(
    pg_store: EventStore, pg_db: Database
) -> None:
    view = WidgetListView(pg_db)
    admin = Admin(pg_store)
    widget_id = admin.widget(config=config_named("Before"))
    runner = ProjectionRunner("widget_list", pg_store, view)
    runner.catch_up()
    reached = view.position()
    with pg_db.transaction() as tx:  # the database itself refuses the next write
        tx.execute("ALTER TABLE widget_list ADD CONSTRAINT refuse_after CHECK (strpos(row_json, 'After') = 0)")
    admin.configure(widget_id, config_named("After"))

    with pytest.raises(ProjectionFailedError, match=rf"stopped at notification {reached + 1}\b"):
        runner.catch_up()
    assert runner.position == view.position() == reached
    stored = view.load({str(widget_id)}, set())[0][str(widget_id)]
    assert stored.version == 1
    assert stored.config["v1"]["branding"]["display_name"] == "Before"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its thread ends by raising
def test_a_background_runner_that_fails_records_why_and_stops_answering_waits(
    production_settings: Settings, pg_store: EventStore, pg_db: Database
) -> None:
    view = WidgetListView(pg_db)
    admin = Admin(pg_store)
    admin.widget()
    bad = insert_undecodable_notification(production_settings)
    runner = ProjectionRunner("widget_list", pg_store, view).start()
    try:
        assert not runner.wait(bad, timeout=10)
        assert eventually(lambda: runner.failure is not None, timeout=5)
        assert isinstance(runner.failure, ProjectionFailedError)
        assert f"notification {bad} cannot be decoded" in str(runner.failure)
        assert runner.position == view.position() == 0  # the page holding it is not applied at all
    finally:
        runner.stop()


# ---- the embedded wiring ------------------------------------------------------------------------------


def test_the_embedded_app_lists_a_widget_once_its_position_is_reached_and_reports_no_lag(
    embedded_settings: Settings,
) -> None:
    headers = admin_headers(embedded_settings, "org_a")
    with TestClient(create_app(embedded_settings)) as client:
        agent = client.post("/v1/agents", json={"name": "Support bot"}, headers=headers).json()
        version = client.post(f"/v1/agents/{agent['id']}/versions", json={"label": "v1"}, headers=headers).json()
        published = client.post(f"/v1/agents/{agent['id']}/versions/{version['id']}/publish", headers=headers)
        assert published.status_code == 200, published.text
        created = client.post(
            "/v1/widgets", headers=headers,
            json={"agent_id": agent["id"], "agent_version_id": version["id"], "domains": ["example.com"]},
        )
        assert created.status_code == 201, created.text
        widget_id = created.json()["id"]
        assert client.post(f"/v1/widgets/{widget_id}/publish", headers=headers).status_code == 200
        position = client.app.state.services.store.recorder.max_notification_id()

        waited = client.get("/v1/read-models/wait", params={"position": position}, headers=headers)
        assert waited.status_code == 200, waited.text
        listed = client.get("/v1/widgets", headers=headers)
        assert listed.status_code == 200, listed.text
        assert [(w["id"], w["published"], w["live"]) for w in listed.json()["items"]] == [(widget_id, True, True)]

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        projections = ready.json()["projections"]
        assert {"public_lookup", "widget_list"} <= set(projections)
        assert all(p == {"position": position, "lag": 0} for p in projections.values()), projections


# ---- the cache in front of Redis -------------------------------------------------------------------------


@pytest.fixture
def redis_model(request: pytest.FixtureRequest) -> ReadModel:
    return build_model("public lookup, Redis", request)


async def _listening_reader(url: str, prefix: str) -> RedisPublicReader:
    reader = RedisPublicReader(aioredis.Redis.from_url(url), prefix, cache_size=100, ttl=600)
    await reader.start()
    await asyncio.wait_for(reader.listening.wait(), 5)
    return reader


async def _until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await check()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return found


def test_the_redis_reader_drops_a_cached_entry_as_soon_as_the_projection_changes_it(
    redis_model: ReadModel, redis_server_url: str, redis_prefix: str
) -> None:
    admin = redis_model.admin
    changed = admin.widget(config=config_named("Before"), published=True)
    deleted = admin.widget(published=True)
    untouched = admin.widget(config=config_named("Same"))
    redis_model.sync()

    async def scenario() -> None:
        reader = await _listening_reader(redis_server_url, redis_prefix)
        try:
            for widget_id in (changed, deleted, untouched):
                assert await reader.get(str(widget_id)) is not None
                assert reader.cache.get(str(widget_id))[0], "read entries are cached"

            await asyncio.to_thread(admin.configure, changed, config_named("After"))
            await asyncio.to_thread(admin.delete, deleted)
            await asyncio.to_thread(redis_model.sync)

            async def fresh() -> bool:
                entry = await reader.get(str(changed))
                return entry is not None and b"After" in entry.body and await reader.get(str(deleted)) is None

            assert await _until(fresh), "the cache kept a changed entry (the TTL is 600 s)"
            assert reader.cache.get(str(untouched))[0], "an entry the projection did not change stays cached"
        finally:
            await reader.close()

    asyncio.run(scenario())

"""Each event counts exactly once in every read model: however often a page is delivered,
however a runner is restarted, and whenever its process is killed.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from application.store import EventStore
from infrastructure.eventstore import store_env
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_views import APPLIED, NOT_OWNER, STALE, InProcessPublicView, RedisPublicView, current_generation
from projections.rebuild import rebuild_redis, rebuild_sql
from infrastructure.redis_clients import sync_client
from projections.runner import ProjectionRunner
from projections.widget_list import WidgetListView
from projections.widget_rows import Changes, RowSource, WidgetRowsProjection
from tests.integration.conftest import dump_in_process, dump_redis_generation, dump_sql
from tests.unit.test_widget_rows import Admin, config_named, random_history

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_WIRINGS = {
    "embedded": "its stores (the in-process lookup, the SQLite list) are targets of every case but the SIGKILL loop, which "
                "needs a projection process of its own (embedded runs its projections in the server)",
}
VIEWS = ["public lookup, in-process", "public lookup, Redis", "public lookup, Redis Cluster", "admin list, SQLite",
         "admin list, PostgreSQL", "admin list, PostgreSQL through PgBouncer"]


@dataclass
class Target:
    """A view on its store, and how to open it afresh and dump it whole."""

    kind: str
    store: EventStore
    view: Any

    def reopen(self) -> Any:
        """The same stored view, as a restarted process would open it."""
        if isinstance(self.view, RedisPublicView):
            return RedisPublicView(self.view.client, self.view.keys.prefix, self.view.generation)
        if isinstance(self.view, WidgetListView):
            return WidgetListView(self.view.db, create=False)
        return self.view  # in-process: its state is this object

    def dump(self) -> dict[str, Any]:
        if isinstance(self.view, RedisPublicView):
            return dump_redis_generation(self.view.client, self.view.keys.prefix, self.view.generation)
        if isinstance(self.view, WidgetListView):
            return dump_sql(self.view.db)
        return dump_in_process(self.view)


@pytest.fixture(params=VIEWS)
def target(request: pytest.FixtureRequest) -> Target:
    fixture = request.getfixturevalue
    if request.param == "public lookup, in-process":
        store, view = fixture("sqlite_store"), InProcessPublicView()
    elif request.param.startswith("public lookup, Redis"):
        cluster = request.param.endswith("Cluster")
        client, prefix = (fixture("cluster_client"), fixture("cluster_prefix")) if cluster else (fixture("redis_client"), fixture("redis_prefix"))
        store, view = fixture("pg_store"), RedisPublicView(client, prefix, current_generation(client, prefix))
    elif request.param == "admin list, SQLite":
        store, view = fixture("sqlite_store"), WidgetListView(fixture("sqlite_db"))
    elif request.param.endswith("PgBouncer"):
        store, view = fixture("pooled_pg_store"), WidgetListView(fixture("pooled_pg_db"))
    else:
        store, view = fixture("pg_store"), WidgetListView(fixture("pg_db"))
    return Target(request.param, store, view)


def page(store: EventStore, source: RowSource, first: int, last: int) -> Changes:
    notifications = store.recorder.select_notifications(
        start=first, limit=10_000, stop=last, topics=tuple(WidgetRowsProjection.topics)
    )
    return WidgetRowsProjection().apply([store.mapper.to_domain_event(n) for n in notifications], source)


def head(store: EventStore) -> int:
    return store.recorder.max_notification_id() or 0


# ---- (a) the same page twice ------------------------------------------------------------------------


def test_a_page_delivered_twice_is_applied_once(target: Target) -> None:
    admin = Admin(target.store)
    shared = admin.version()
    widgets = [admin.widget(shared, published=True) for _ in range(3)]
    admin.unpublish_version(shared)
    first_head = head(target.store)
    changes = page(target.store, target.view, 1, first_head)

    assert target.view.commit(changes, 1, first_head) == APPLIED
    applied = target.dump()
    assert target.view.commit(changes, 1, first_head) == STALE
    assert target.dump() == applied
    assert target.view.position() == first_head

    admin.publish_version(shared)
    admin.delete(widgets[0])
    second_head = head(target.store)
    later = page(target.store, target.view, first_head + 1, second_head)
    # A page that overlaps what is already applied is refused whole.
    assert target.view.commit(later, first_head, second_head) == STALE
    assert target.dump() == applied
    assert target.view.commit(later, first_head + 1, second_head) == APPLIED
    assert target.view.position() == second_head
    assert target.dump() != applied


def test_a_redis_page_delivered_twice_tells_readers_nothing_the_second_time(
    pg_store: EventStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    view = RedisPublicView(redis_client, redis_prefix, current_generation(redis_client, redis_prefix))
    Admin(pg_store).widget(published=True)
    changes = page(pg_store, view, 1, head(pg_store))
    pubsub = redis_client.pubsub()
    pubsub.subscribe(view.keys.channel)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    try:
        assert view.commit(changes, 1, head(pg_store)) == APPLIED
        assert pubsub.get_message(timeout=2) is not None
        assert view.commit(changes, 1, head(pg_store)) == STALE
        assert pubsub.get_message(timeout=0.3) is None
    finally:
        pubsub.close()


def test_a_redis_page_for_a_generation_that_is_not_current_writes_nothing(
    pg_store: EventStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    current = current_generation(redis_client, redis_prefix)
    stale = RedisPublicView(redis_client, redis_prefix, current + 1)
    Admin(pg_store).widget()
    assert stale.commit(page(pg_store, stale, 1, head(pg_store)), 1, head(pg_store)) == NOT_OWNER
    assert dump_redis_generation(redis_client, redis_prefix, current + 1) == {}


# ---- (b) a restarted runner ------------------------------------------------------------------------------


class CountingProjection(WidgetRowsProjection):
    """The real projection, noting every event it is handed."""

    seen: list[tuple[Any, int]] = []

    def process_event(self, event: Any) -> None:  # type: ignore[override]
        CountingProjection.seen.append((event.originator_id, event.originator_version))
        super().process_event(event)


def test_a_restarted_runner_continues_from_the_stored_position_and_applies_nothing_twice(target: Target) -> None:
    CountingProjection.seen = []
    admin = Admin(target.store)
    rng = random.Random(5)
    random_history(admin, rng, 80, widgets=6, agents=2, versions=2)
    first = ProjectionRunner("first", target.store, target.view, CountingProjection, page_size=7)
    first.catch_up()
    random_history(admin, rng, 80, widgets=3, agents=1, versions=2)
    stopped_at = first.position + (head(target.store) - first.position) // 2
    first.catch_up(stop_at=stopped_at)  # and then the process dies
    random_history(admin, rng, 80, widgets=3, agents=1, versions=2)

    restarted = ProjectionRunner("restarted", target.store, target.reopen(), CountingProjection, page_size=7)
    assert restarted.position == stopped_at
    restarted.catch_up()

    in_log = [(n.originator_id, n.originator_version) for n in target.store.recorder.select_notifications(
        start=1, limit=100_000, topics=tuple(WidgetRowsProjection.topics))]
    assert [k for k, n in Counter(CountingProjection.seen).items() if n > 1] == []
    assert sorted(CountingProjection.seen) == sorted(in_log)
    assert restarted.position == target.reopen().position() == head(target.store)
    assert restarted.catch_up() == 0
    for widget_id in admin.created:
        expected = admin.expected_row(widget_id)
        stored = target.view.load({str(widget_id)}, set())[0].get(str(widget_id))
        if isinstance(target.view, WidgetListView) or not expected.deleted:
            assert stored == expected
        else:
            assert stored is None


def test_a_second_runner_behind_the_view_writes_nothing_and_jumps_to_its_position(target: Target) -> None:
    admin = Admin(target.store)
    random_history(admin, random.Random(9), 60, widgets=5, agents=2, versions=2)
    ahead = ProjectionRunner("ahead", target.store, target.view, page_size=5)
    behind = ProjectionRunner("behind", target.store, target.reopen(), page_size=5)
    assert behind.position == 0
    ahead.catch_up()
    applied = target.dump()

    behind.catch_up()

    assert target.dump() == applied
    assert behind.position == ahead.position == head(target.store)


# ---- (c) killed at random moments -----------------------------------------------------------------------------


class OneSaveAtATime(EventStore):
    """The API's store with its saves taken one at a time (the recorder's table lock does the same across processes)."""

    name = "widgets"
    _saving = threading.Lock()

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        with self._saving:
            return super().save(*objs, **kwargs)


class Workers:
    """The forking projection process of projection_worker.py: starts a child, says when it is ready, kills it."""

    def __init__(self, settings: Settings) -> None:
        env = {
            **os.environ,
            "WIDGETS_DATABASE_URL": settings.database_url, "WIDGETS_DATABASE_SCHEMA": settings.database_schema,
            "WIDGETS_REDIS_URL": settings.redis_url, "WIDGETS_REDIS_PREFIX": settings.redis_prefix,
            "WIDGETS_DATABASE_POOLER": settings.database_pooler, "WIDGETS_DATABASE_LISTEN_URL": settings.database_listen_url,
            "WIDGETS_LOG_LEVEL": "critical", "WIDGETS_LOG_FORMAT": "json",
            "WIDGETS_AUTH_SECRET": settings.auth_secret, "WIDGETS_DATA_KEY": settings.data_key,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.projection_worker"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._buffer = b""

    def start(self, page_size: int) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(f"start {page_size}\n".encode())
        self.process.stdin.flush()
        line = self._line(timeout=15)
        assert line.startswith("ready "), f"a projection process did not start: {line}"
        return int(line.split()[1])

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pytest.fail(f"projection process {pid} stopped by itself: {self._line(timeout=1)}")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # its parent reaps it at once
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.005)
        pytest.fail(f"projection process {pid} survived SIGKILL")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if readable else b""
            if not chunk:
                return f"(no more output) {self._buffer.decode(errors='replace')}"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("wiring", ["production", "cluster", "pooler", "managed"])
def test_a_projection_process_killed_at_random_moments_ends_equal_to_a_rebuild(
    wiring: str, production_settings: Settings, pg_store: EventStore, pg_db: Database, other_pg_db: Database,
    request: pytest.FixtureRequest,
) -> None:
    """On one Redis, on the Redis Cluster (entries written slot by slot), with the projection process reaching
    PostgreSQL through the transaction-mode PgBouncer, and with both (managed)."""
    settings: Settings = request.getfixturevalue(f"{wiring}_settings")
    redis_client = sync_client(settings.redis_url)
    request.addfinalizer(redis_client.close)
    redis_prefix, other_redis_prefix = settings.redis_prefix, f"{settings.redis_prefix}other:"
    rng = random.Random(2024)
    list_view = WidgetListView(pg_db)
    public_view = RedisPublicView(redis_client, redis_prefix, current_generation(redis_client, redis_prefix))
    writer = OneSaveAtATime(env={**store_env(production_settings), "POSTGRES_PRE_PING": "n"})
    request.addfinalizer(writer.close)
    admins = [Admin(writer, actor=f"writer{i}") for i in range(5)]
    stop_producing = time.monotonic() + 40
    produced: list[int] = []
    failures: list[BaseException] = []

    def produce(admin: Admin, seed: int) -> None:
        try:
            produced.append(random_history(admin, random.Random(seed), 600, widgets=10,
                                           should_stop=lambda: time.monotonic() > stop_producing))
        except BaseException as error:  # noqa: BLE001 (reported by the test below)
            failures.append(error)

    producers = [threading.Thread(target=produce, args=(a, i), name=f"producer{i}") for i, a in enumerate(admins)]
    workers = Workers(settings)
    kills = kills_while_behind = kills_after_stream = 0
    for producer in producers:
        producer.start()
    try:
        while any(p.is_alive() for p in producers) or kills_after_stream < 5:  # and a few while it catches up on the backlog
            pid = workers.start(rng.choice([1, 3, 10, 50, 500]))
            time.sleep(rng.uniform(0.0, 0.4))
            behind = min(public_view.position(), list_view.position()) < head(pg_store)
            workers.kill(pid)
            kills += 1
            kills_while_behind += behind
            kills_after_stream += not any(p.is_alive() for p in producers)
    finally:
        stop_producing = 0
        for producer in producers:
            producer.join()
        workers.close()
    assert not failures, failures

    for view in (public_view, list_view):
        ProjectionRunner("final", pg_store, view).catch_up()
    final = head(pg_store)
    print(f"\nSIGKILL test: {sum(produced)} commands, {final} notifications, {kills} kills, "
          f"{kills_while_behind} of them while the projection was behind the log")
    assert kills >= 10 and kills_while_behind >= 5

    # The public lookup equals a rebuild into another prefix, key for key and byte for byte.
    rebuilt_generation = rebuild_redis(pg_store, redis_client, other_redis_prefix, grace=0)
    incremental = dump_redis_generation(redis_client, redis_prefix, public_view.generation)
    rebuilt = dump_redis_generation(redis_client, other_redis_prefix, rebuilt_generation)
    assert incremental["position"] == rebuilt["position"] == str(final).encode()
    assert sorted(incremental) == sorted(rebuilt)
    assert incremental == rebuilt
    assert {k[:2] for k in incremental} >= {"w:", "v:", "p:"}

    # The admin list equals a rebuild into another schema.
    rebuild_sql(pg_store, other_pg_db)
    assert dump_sql(pg_db) == dump_sql(other_pg_db)
    assert list_view.position() == final

    # And both agree with the aggregates themselves.
    for admin, widget_id in ((a, w) for a in admins for w in a.created):
        expected = admin.expected_row(widget_id)
        assert list_view.load({str(widget_id)}, set())[0][str(widget_id)] == expected
        entry = public_view.get(str(widget_id))
        assert (entry.row if entry else None) == (None if expected.deleted else expected)


# ---- concurrent writers ----------------------------------------------------------------------------------------


def test_runners_following_concurrent_writers_miss_no_event(
    pg_store: EventStore, pg_db: Database, other_pg_db: Database,
    redis_client: redis.Redis, redis_prefix: str, other_redis_prefix: str,
) -> None:
    """Several API workers write at once; a runner must never pass an id whose transaction commits later."""
    public_view = RedisPublicView(redis_client, redis_prefix, current_generation(redis_client, redis_prefix))
    list_view = WidgetListView(pg_db)
    runners = [ProjectionRunner("public_lookup", pg_store, public_view), ProjectionRunner("widget_list", pg_store, list_view)]
    admins = [Admin(pg_store, actor=f"writer{i}") for i in range(6)]
    widgets = [[admin.widget() for _ in range(3)] for admin in admins]
    writing = threading.Event()
    errors: list[BaseException] = []

    def write(admin: Admin, mine: list[Any]) -> None:
        for n in range(60):
            admin.configure(mine[n % len(mine)], config_named(f"{admin.actor} {n}"))

    def follow() -> None:  # a busy projection: catching up again as soon as it is done
        try:
            while writing.is_set():
                for runner in runners:
                    runner.catch_up()
        except BaseException as error:  # noqa: BLE001 (asserted below)
            errors.append(error)

    writing.set()
    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=write, args=(a, w)) for a, w in zip(admins, widgets, strict=True)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    writing.clear()
    follower.join()
    assert errors == []
    for runner in runners:
        runner.catch_up()

    for admin, mine in zip(admins, widgets, strict=True):
        for widget_id in mine:
            assert public_view.get(str(widget_id)).row == admin.expected_row(widget_id)  # type: ignore[union-attr]
            assert list_view.load({str(widget_id)}, set())[0][str(widget_id)] == admin.expected_row(widget_id)
    rebuilt_generation = rebuild_redis(pg_store, redis_client, other_redis_prefix, grace=0)
    assert dump_redis_generation(redis_client, redis_prefix, public_view.generation) == dump_redis_generation(
        redis_client, other_redis_prefix, rebuilt_generation)
    rebuild_sql(pg_store, other_pg_db)
    assert dump_sql(pg_db) == dump_sql(other_pg_db)


def test_a_runner_never_passes_a_notification_id_whose_transaction_commits_later(
    production_settings: Settings, pg_store: EventStore, pg_db: Database
) -> None:
    admin = Admin(pg_store)
    slow, quick = admin.widget(config=config_named("Before")), admin.widget()
    view = WidgetListView(pg_db)
    runner = ProjectionRunner("widget_list", pg_store, view)
    runner.catch_up()
    table = f'"{production_settings.database_schema}".widgets_events'
    # Another transaction holds the key the slow writer's next event needs, so that writer
    # waits inside its insert, after the sequence has given it an id (or before, if it locks).
    with psycopg.connect(production_settings.database_url) as blocker:
        blocker.execute(f"INSERT INTO {table} (originator_id, originator_version, topic, state) VALUES (%s, 2, 'x', '')",
                        [slow])
        writers = [threading.Thread(target=admin.configure, args=(slow, config_named("After"))),
                   threading.Thread(target=admin.change_domains, args=(quick, ["quick.example.com"]))]
        writers[0].start()
        time.sleep(0.5)
        writers[1].start()
        time.sleep(0.5)
        runner.catch_up()  # the quick writer may have committed a higher id by now
        blocker.rollback()
    for writer in writers:
        writer.join()
    runner.catch_up()

    assert view.load({str(slow)}, set())[0][str(slow)] == admin.expected_row(slow)
    assert view.load({str(quick)}, set())[0][str(quick)] == admin.expected_row(quick)

"""The event store and the read models behind a real transaction-mode PgBouncer (Debian's 1.18).

Through such a pooler each transaction may run on another server connection,
and one server connection serves many clients in turn: whatever a client leaves
in a session (a prepared statement, a `SET`) reaches strangers, and a prepared
statement may be missing on the next transaction's server. The tests give the
pooler only two server connections, so that every client shares them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit

import psycopg
import pytest

from application.store import EventStore
from infrastructure.eventstore import open_event_store
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections import runner as runner_module
from projections.runner import ProjectionRunner
from projections.widget_list import WidgetListView
from tests.servers import PrivatePgBouncer
from tests.unit.test_widget_rows import Admin

pytestmark = pytest.mark.postgres
SKIPPED_WIRINGS = {
    "embedded": "PgBouncer's session rules; embedded has no pooler",
    "production": "PgBouncer's session rules; production reaches PostgreSQL directly",
    "managed": "managed's PostgreSQL half, on a pooler of two server connections of its own so that every client shares "
               "them (the managed wiring's pooler has more); the API suites run on the managed wiring itself",
}


@pytest.fixture(scope="module")
def narrow_bouncer(pg_server_url: str) -> Iterator[PrivatePgBouncer]:
    """A PgBouncer with two server connections, shared by every client of the test."""
    bouncer = PrivatePgBouncer(urlsplit(pg_server_url).port or 5432, pool_size=2).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def pooled(production_settings: Settings, narrow_bouncer: PrivatePgBouncer, pg_server_url: str) -> Settings:
    return replace(production_settings, database_url=narrow_bouncer.url, database_pooler="transaction",
                   database_listen_url=pg_server_url)


@pytest.fixture
def pooled_store(pooled: Settings) -> Iterator[EventStore]:
    store = open_event_store(pooled, POSTGRES_LOCK_TIMEOUT="1")
    yield store
    store.close()


def settings_seen_by_a_stranger(url: str) -> dict[str, str]:
    """What a new client of the pooler finds in the session it is given."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                            "('lock_timeout', 'idle_in_transaction_session_timeout', 'search_path')").fetchall()
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    found = dict(rows)
    found["prepared statements"] = str(prepared[0] if prepared else 0)
    return found


def test_saves_and_reads_through_the_pooler_leave_no_session_state_behind(
    pooled_store: EventStore, pooled: Settings, narrow_bouncer: PrivatePgBouncer
) -> None:
    before = settings_seen_by_a_stranger(narrow_bouncer.url)
    admin = Admin(pooled_store)
    db = Database(pooled)
    try:
        view = WidgetListView(db)
        runner = ProjectionRunner("widget_list", pooled_store, view)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for _ in range(n):  # far more than psycopg's five executions before it would prepare
                    agent_id, version_id = admin.version()
                    admin.widget((agent_id, version_id), domains=["example.com"])
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        threads = [threading.Thread(target=write, args=(10,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for _ in range(20):
            runner.catch_up()
        for thread in threads:
            thread.join()
        runner.catch_up()
        assert not errors, errors
        head = pooled_store.recorder.max_notification_id()
        assert view.position() == head
        rows, _ = view.page("org_a", 100, None)
        assert len(rows) == 40
    finally:
        db.close()
    assert settings_seen_by_a_stranger(narrow_bouncer.url) == before
    assert before["prepared statements"] == "0"
    # A LISTEN through the pooler would leave a subscribed server connection that PgBouncer complains of.
    assert "when not linked" not in (narrow_bouncer.folder / "pgbouncer.log").read_text()


def test_the_insert_functions_carry_their_own_lock_timeout(pooled_store: EventStore, pooled: Settings,
                                                           pg_server_url: str) -> None:
    schema = pooled.database_schema
    with psycopg.connect(pg_server_url) as conn:
        configs = conn.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname LIKE 'es_insert_events%%'", [schema]).fetchall()
    assert sorted(name for name, _ in configs) == ["es_insert_events_uuid", "es_insert_events_uuid_one"]
    assert all(config == ["lock_timeout=1s"] for _, config in configs), configs

    # A writer that holds the table lock makes a save through the pooler give up after that timeout.
    Admin(pooled_store).version()
    with psycopg.connect(pg_server_url) as holder:
        holder.execute(f'LOCK TABLE "{schema}".widgets_events IN EXCLUSIVE MODE')
        started = time.monotonic()
        with pytest.raises(Exception, match="lock"):
            Admin(pooled_store).version()
        waited = time.monotonic() - started
        holder.rollback()
    assert waited < 30  # not forever: the function's own timeout ended the wait
    Admin(pooled_store).version()  # and the store works again afterwards


def test_a_runner_behind_the_pooler_is_woken_by_listen_on_its_direct_connection(
    pooled_store: EventStore, pooled: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "LISTENING_SAFETY_WAKE", 600.0)  # only a notification can wake it in time
    db = Database(pooled)
    other = open_event_store(pooled)  # another process's store: its saves do not wake this runner directly
    try:
        runner = ProjectionRunner("widget_list", pooled_store, WidgetListView(db), listen_url=pooled.database_listen_url)
        runner.start()
        time.sleep(0.5)  # the LISTEN takes hold
        agent_id, version_id = Admin(other).version()
        position = other.recorder.max_notification_id()
        assert runner.wait(position, timeout=30)
        runner.stop()
    finally:
        other.close()
        db.close()


def test_the_pooler_mode_without_a_direct_listen_url_stops_startup_naming_the_setting() -> None:
    with pytest.raises(SystemExit, match="WIDGETS_DATABASE_LISTEN_URL"):
        Settings.from_env({"WIDGETS_DATABASE_URL": "postgresql://u@pgbouncer:6432/db", "WIDGETS_DATABASE_POOLER": "transaction"})
    with pytest.raises(SystemExit, match="WIDGETS_DATABASE_POOLER"):
        Settings.from_env({"WIDGETS_DATABASE_URL": "postgresql://u@db/db", "WIDGETS_DATABASE_POOLER": "session"})
    settings = Settings.from_env({"WIDGETS_DATABASE_URL": "postgresql://u@pgbouncer:6432/db", "WIDGETS_DATABASE_POOLER": "transaction",
                                  "WIDGETS_DATABASE_LISTEN_URL": "postgresql://u@db:5432/db"})
    assert settings.behind_pooler and settings.listen_url == "postgresql://u@db:5432/db"

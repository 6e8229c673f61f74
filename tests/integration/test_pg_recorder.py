"""Our PostgreSQL recorder (infrastructure/pg_recorder.py): its one-event function, and its pool when
the server drops connections.

A save of one event goes through a function of four scalar parameters, a save of
several through the library's array function; both must store the same rows
and hand out positions in order. A one-event save runs the caller's `meanwhile`
while PostgreSQL serves the insert, which commits without waiting for it. The
pool pings a connection only after it has been idle for a moment, so a
connection the server dropped just after it was used is found out by the save
itself; the one retry must then get a live one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from application.conversations import ConversationService
from application.store import EventStore
from infrastructure.eventstore import postgres_env
from infrastructure.pg_recorder import PING_AFTER_IDLE
from tests.unit.test_application import LIVE, CountingIssuer
from tests.unit.test_widget_rows import Admin

pytestmark = pytest.mark.postgres
SKIPPED_WIRINGS = {
    "embedded": "our PostgreSQL recorder and its pool; SQLite has its own recorder",
    "production": "the recorder and its pool against a server that terminates their connections (pg_terminate_backend), "
                  "on a store opened for it; the production wiring's saves are in every API suite",
    "managed": "behind PgBouncer the connections terminated would be the pooler's, not the pool's; the recorder through "
               "the pooler is tests/integration/test_pooler.py",
}


@pytest.fixture
def app_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """libpq reads PGAPPNAME: every connection the store opens carries this name, so the test can find them."""
    name = f"widgets-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PGAPPNAME", name)
    return name


@pytest.fixture
def store(pg_server_url: str, pg_schema: str, app_name: str) -> Iterator[EventStore]:
    store = EventStore(env=postgres_env(pg_server_url, pool_size=3, schema=pg_schema))
    yield store
    store.close()


def terminate_connections(pg_server_url: str, app_name: str) -> int:
    with psycopg.connect(pg_server_url, autocommit=True, application_name="widgets-test-killer") as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            [app_name]).fetchall()
    return len(rows)


def stored_rows(pg_server_url: str, schema: str) -> list[tuple[uuid.UUID, int, str, bytes, int]]:
    with psycopg.connect(pg_server_url) as conn:
        return conn.execute(f'SELECT originator_id, originator_version, topic, state, notification_id '
                            f'FROM "{schema}".widgets_events ORDER BY notification_id').fetchall()


def test_one_event_and_several_are_stored_alike_with_positions_in_order(
    store: EventStore, pg_server_url: str, pg_schema: str
) -> None:
    recorder = store.recorder
    single = StoredEvent(uuid.uuid4(), 1, "test.single", b"\x00one\xff")
    batch = [StoredEvent(uuid.uuid4(), 1, "test.batch", b"two"), StoredEvent(uuid.uuid4(), 1, "test.batch", b"three")]
    first = recorder.insert_events([single])
    then = recorder.insert_events(batch)
    last = recorder.insert_events([StoredEvent(single.originator_id, 2, "test.single", b"")])

    assert first is not None and then is not None and last is not None
    positions = [*first, *then, *last]
    assert positions == sorted(positions) and len(set(positions)) == 4
    rows = stored_rows(pg_server_url, pg_schema)
    assert [(r[0], r[1], r[2], bytes(r[3])) for r in rows] == [
        (e.originator_id, e.originator_version, e.topic, e.state)
        for e in [single, *batch, StoredEvent(single.originator_id, 2, "test.single", b"")]
    ]
    assert [r[4] for r in rows] == positions


def test_one_event_at_a_version_already_stored_is_refused_and_writes_nothing(
    store: EventStore, pg_server_url: str, pg_schema: str
) -> None:
    event = StoredEvent(uuid.uuid4(), 1, "test.single", b"first")
    store.recorder.insert_events([event])
    with pytest.raises(IntegrityError):
        store.recorder.insert_events([StoredEvent(event.originator_id, 1, "test.single", b"second")])
    assert [bytes(r[3]) for r in stored_rows(pg_server_url, pg_schema)] == [b"first"]


@pytest.mark.parametrize("idle", [0.0, PING_AFTER_IDLE * 2], ids=["just-used", "idle"])
def test_a_save_after_the_server_dropped_every_connection_succeeds(
    store: EventStore, pg_server_url: str, app_name: str, idle: float
) -> None:
    """Just used: no ping, the save's first attempt fails and the pool is checked before the retry.
    Idle: the ping on checkout finds each dead connection and the pool lends a new one."""
    admin = Admin(store)
    widget = admin.widget()
    assert terminate_connections(pg_server_url, app_name) >= 1
    time.sleep(idle)
    admin.change_domains(widget, ["after.example.com"])
    assert admin.expected_row(widget).domains == ["after.example.com"]
    assert store.repository.get(widget).version == 2


def test_meanwhile_runs_while_the_insert_commits_without_waiting_for_it(
    store: EventStore, pg_server_url: str, pg_schema: str
) -> None:
    """The event becomes visible to another connection while `meanwhile` is still running: the statement
    was sent before it, whole, and its transaction committed (the table lock released) on its own."""
    event = StoredEvent(uuid.uuid4(), 1, "test.single", b"overlapped")
    seen_during: list[int] = []

    def meanwhile() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = [r for r in stored_rows(pg_server_url, pg_schema) if r[0] == event.originator_id]
            if rows:
                seen_during.append(rows[0][4])
                # The lock is free too: a save from another pool goes through at once.
                with EventStore(env=postgres_env(pg_server_url, pool_size=1, schema=pg_schema)) as other:
                    other.recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "test.other", b"")])
                return
            time.sleep(0.005)

    positions = store.recorder.insert_events([event], meanwhile=meanwhile)

    assert positions is not None and seen_during == list(positions)
    assert [r[2] for r in stored_rows(pg_server_url, pg_schema)] == ["test.single", "test.other"]


def test_a_failing_meanwhile_leaves_the_connection_clean_for_the_pool(store: EventStore, pg_server_url: str,
                                                                      pg_schema: str) -> None:
    """The insert's answer is read even when `meanwhile` raises: the pool gets its connection back idle
    (not discarded as busy), and the event, already committed, is stored once."""
    pool = store.recorder.datastore.pool
    event = StoredEvent(uuid.uuid4(), 1, "test.single", b"")

    def meanwhile() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.recorder.insert_events([event], meanwhile=meanwhile)

    assert pool.get_stats().get("returns_bad", 0) == 0
    assert [r[0] for r in stored_rows(pg_server_url, pg_schema)] == [event.originator_id]
    assert store.recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "test.single", b"")]) is not None


def test_a_start_after_the_server_dropped_every_connection_signs_once(
    store: EventStore, pg_server_url: str, app_name: str
) -> None:
    """The first attempt may send the insert into a dead connection and run `meanwhile` before the failure
    shows; the retry stores the event, and the store runs `meanwhile` once in all."""
    Admin(store).widget()  # the pool has connections to lose
    assert terminate_connections(pg_server_url, app_name) >= 1
    runs: list[int] = []
    started = ConversationService(store, CountingIssuer(runs)).start(LIVE, "https://example.com", {})
    assert runs == [1]
    assert store.repository.get(started.conversation_id).room == started.grant.room


def test_every_connection_of_the_pool_waits_at_most_the_lock_timeout(store: EventStore) -> None:
    """Set once per connection (POSTGRES_LOCK_TIMEOUT), not by the insert functions on every save."""
    store.recorder.datastore.pool.open(wait=True)
    for _ in range(2):
        with store.recorder.datastore.get_connection() as conn:
            assert conn.execute("SHOW lock_timeout").fetchone() == {"lock_timeout": "5s"}


def test_the_pool_lends_the_connection_returned_last(store: EventStore) -> None:
    """Most recent first (pgbouncer's default): one busy server process instead of the whole pool taking turns."""
    pool = store.recorder.datastore.pool
    pool.open(wait=True)  # all three connections, ready in the pool
    backends = []
    for _ in range(6):
        with store.recorder.datastore.get_connection() as conn:
            backends.append(conn.info.backend_pid)
    assert len(set(backends)) == 1, backends
    with store.recorder.datastore.get_connection() as first, store.recorder.datastore.get_connection() as second:
        assert first.info.backend_pid != second.info.backend_pid  # the others are still lent when needed

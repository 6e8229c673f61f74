"""The PostgreSQL recorder: commit order equal to notification order, one round trip per save.

eventsourcing's `POSTGRES_ENABLE_DB_FUNCTIONS` inserts events through a
plpgsql function (one round trip instead of three), but that function does
not take the table lock that its three-statement path takes. Without it, two
transactions can commit their notification ids out of order, and a projection
tailing the log can pass an id that commits later and never apply it (our
tests reproduce it). This recorder creates the same function with the lock
inside it: writers are serialised exactly as on the library's default path.

Three more changes are for speed, measured in `tests/bench/bench_conversations.py`:
- A save of one event (a conversation start, most commands) calls a sibling
  function that takes the event as four scalar parameters. psycopg dumps a
  composite array in Python, which cost a single-event save more client CPU
  than the round trip itself.
- The pool lends the connection returned last, as pgbouncer does by default
  (`server_round_robin = 0`), instead of psycopg_pool's oldest-first. Taking
  turns, every server process of the pool sat idle between queries, and a
  process woken from a longer sleep answered later: about 30 µs a save here
  with a pool of two, more with the default ten.
- The pool pings a connection before lending it only if it was last lent more
  than `PING_AFTER_IDLE` ago (HikariCP's `aliveBypassWindowMs` does the same,
  with the same 500 ms): a connection that served a moment ago is not asked
  again. If one has died all the same, the failed attempt makes the pool
  check all its idle connections before the one retry.

It also fails faster when PostgreSQL is down (see `_fewer_attempts`).
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    ConnectionPool,
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import Connection
from psycopg.sql import SQL, Identifier

ATTEMPTS = 2
RETRY_WAIT = 0.2
PING_AFTER_IDLE = 0.5  # seconds


def _fewer_attempts(call: Any) -> Any:
    """The library retries every call 10 times, each waiting the connect timeout: with PostgreSQL down a
    request would wait about a minute for its 503. Two attempts still ride over a dropped connection:
    before the second, the pool tests its idle connections and replaces the dead ones.

    `call` is the undecorated method (the library's own are reached through `__wrapped__`)."""

    @functools.wraps(call)
    def with_one_retry(recorder: PostgresAggregateRecorder, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return call(recorder, *args, **kwargs)
            except (InterfaceError, OperationalError):
                if attempt == ATTEMPTS:
                    raise
                try:
                    recorder.datastore.pool.check()
                except Exception:  # noqa: BLE001 - PostgreSQL down: the retry will say so
                    pass
                time.sleep(RETRY_WAIT)
        raise AssertionError("unreachable")

    return with_one_retry


class FastFailPostgresAggregateRecorder(PostgresAggregateRecorder):
    """The snapshot store's recorder: the same shorter retries when PostgreSQL is down."""

    insert_events = _fewer_attempts(PostgresAggregateRecorder.insert_events.__wrapped__)
    select_events = _fewer_attempts(PostgresAggregateRecorder.select_events.__wrapped__)


class OrderedPostgresApplicationRecorder(PostgresApplicationRecorder):
    select_events = _fewer_attempts(PostgresApplicationRecorder.select_events.__wrapped__)
    select_notifications = _fewer_attempts(PostgresApplicationRecorder.select_notifications.__wrapped__)
    max_notification_id = _fewer_attempts(PostgresApplicationRecorder.max_notification_id.__wrapped__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = {
            "lock_timeout": self.datastore.lock_timeout,
            "channel": Identifier(self.channel_name),
            "event": Identifier(self.stored_event_type_name),
            "schema": Identifier(self.datastore.schema),
            "table": Identifier(self.events_table_name),
            "id_type": Identifier(self.datastore.originator_id_type),
        }
        # Both functions lock the table first, so that notification ids commit in the order they are given.
        self.sql_create_pg_function_insert_events = SQL(
            "CREATE OR REPLACE FUNCTION "
            "{schema}.{insert_events}(events {schema}.{event}[]) "
            "RETURNS SETOF bigint "
            "LANGUAGE plpgsql "
            "AS "
            "$BODY$"
            "BEGIN"
            "    SET LOCAL lock_timeout = '{lock_timeout}s';"
            "    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;"
            "    NOTIFY {channel};"
            "    RETURN QUERY"
            "    INSERT INTO {schema}.{table} AS t ("
            "    originator_id, originator_version, topic, state)"
            "    SELECT originator_id, originator_version, topic, state"
            "    FROM unnest(events)"
            "    RETURNING notification_id;"
            "END;"
            "$BODY$"
        ).format(insert_events=Identifier(self.pg_function_name_insert_events), **names)
        self.sql_create_statements[self.create_insert_function_statement_index] = self.sql_create_pg_function_insert_events

        self.pg_function_name_insert_event = f"{self.pg_function_name_insert_events}_one"
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION "
            "{schema}.{insert_event}(p_originator_id {id_type}, p_originator_version bigint, p_topic text, p_state bytea) "
            "RETURNS bigint "
            "LANGUAGE plpgsql "
            "AS "
            "$BODY$"
            "DECLARE"
            "    new_id bigint;"
            "BEGIN"
            "    SET LOCAL lock_timeout = '{lock_timeout}s';"
            "    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;"
            "    NOTIFY {channel};"
            "    INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            "    VALUES (p_originator_id, p_originator_version, p_topic, p_state)"
            "    RETURNING notification_id INTO new_id;"
            "    RETURN new_id;"
            "END;"
            "$BODY$"
        ).format(insert_event=Identifier(self.pg_function_name_insert_event), **names))
        # As a string: psycopg would render a composed statement to bytes again on every call.
        self.sql_invoke_pg_function_insert_event = SQL(
            "SELECT {schema}.{insert_event}(%s, %s, %s, %s) AS notification_id").format(
            insert_event=Identifier(self.pg_function_name_insert_event), schema=names["schema"]).as_string(None)

    @_fewer_attempts
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """One event through the scalar function; several (or none) through the library's array function."""
        if len(stored_events) != 1 or not self.datastore.enable_db_functions:
            return PostgresApplicationRecorder.insert_events.__wrapped__(self, stored_events, **kwargs)
        event = stored_events[0]
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                self.sql_invoke_pg_function_insert_event,
                (event.originator_id, event.originator_version, event.topic, event.state),
                prepare=True,
            ).fetchone()
        assert row is not None
        return [row["notification_id"]]


class _PingWhenIdle:
    """The pool's `check` callback: ping a connection on checkout only if it was last lent over `PING_AFTER_IDLE` ago.

    A connection lent a moment ago either served its caller, so it was alive then, or failed and
    was discarded by the pool. The time is taken at checkout: psycopg_pool runs a `reset` callback
    (the moment of return) in a worker thread, which would cost every return a thread hand-off.
    """

    def __init__(self) -> None:
        self.lent_at: weakref.WeakKeyDictionary[Connection[Any], float] = weakref.WeakKeyDictionary()

    def check(self, conn: Connection[Any]) -> None:
        now = time.monotonic()
        if now - self.lent_at.get(conn, float("-inf")) > PING_AFTER_IDLE:
            ConnectionPool.check_connection(conn)
        self.lent_at[conn] = now


class _MostRecentFirstPool(ConnectionPool[Any]):
    """psycopg_pool keeps idle connections in a deque, takes from the left and returns to the right.
    Rotating the newest to the left first lends it next; the coldest stay on the left, where the pool
    shrinks from."""

    def _get_ready_connection(self, timeout: float | None) -> Any:  # called with the pool's lock held
        self._pool.rotate(1)
        return super()._get_ready_connection(timeout)


class WidgetsPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL persistence with the two recorders above and the pool tuned as described."""

    aggregate_recorder_class = FastFailPostgresAggregateRecorder
    application_recorder_class = OrderedPostgresApplicationRecorder

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tune_pool(self.datastore)


def _tune_pool(datastore: PostgresDatastore) -> None:
    """eventsourcing builds its psycopg_pool pool itself (not yet open), passing `check=check_connection`
    when `POSTGRES_PRE_PING` is on, and takes no pool class or callback of ours: hence the class swap
    and the swapped check (psycopg_pool takes `check` only in its constructor)."""
    pool = datastore.pool
    if type(pool) is ConnectionPool:
        pool.__class__ = _MostRecentFirstPool
    if datastore.pre_ping and pool._check is not None:  # noqa: SLF001
        pool._check = _PingWhenIdle().check  # noqa: SLF001

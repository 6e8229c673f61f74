"""The PostgreSQL recorder: commit order equal to notification order, one round trip per save.

eventsourcing's `POSTGRES_ENABLE_DB_FUNCTIONS` inserts events through a
plpgsql function (one round trip instead of three), but that function does
not take the table lock that its three-statement path takes. Without it, two
transactions can commit their notification ids out of order, and a projection
tailing the log can pass an id that commits later and never apply it (our
tests reproduce it). This recorder creates the same function with the lock
inside it: writers are serialised exactly as on the library's default path.

More changes are for speed, measured in `tests/bench/bench_conversations.py`:
- A save of one event (a conversation start, most commands) calls a sibling
  function that takes the event as four scalar parameters. psycopg dumps a
  composite array in Python, which cost a single-event save more client CPU
  than the round trip itself. That call goes through libpq (as psycopg's cursors
  send theirs, without a cursor, prepared once per connection), and in two
  halves: the caller's other work runs while PostgreSQL serves the insert
  (`meanwhile`, used by conversation starts to sign the LiveKit token).
- The lock timeout is set once per connection, when the pool opens it, rather
  than by a `SET LOCAL` inside the functions on every save.
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

Behind a transaction-mode pooler (PgBouncer 1.18: each transaction may run on
another server connection; `WIDGETS_DATABASE_POOLER=transaction`), nothing may
rest on session state: no statement is prepared (psycopg's
`prepare_threshold=None`, and the one-event insert goes through libpq
unprepared, Parse and Bind in the same message), no session `SET` is made (the
lock timeout is a `SET` clause of the two insert functions, which PostgreSQL
applies while the function runs), and LISTEN uses a direct connection of its
own (`projections.runner`).
"""

from __future__ import annotations

import functools
import hashlib
import time
import weakref
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    ConnectionPool,
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import Connection, generators, pq
from psycopg.errors import error_from_result
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from infrastructure.data_keys import PostgresKeyTable

TRANSACTION_POOLER = "POSTGRES_TRANSACTION_POOLER"  # "y": connections go through a transaction-mode pooler
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


class OrderedPostgresApplicationRecorder(PostgresKeyTable, PostgresApplicationRecorder):
    runs_meanwhile = True  # `insert_events` takes the caller's `meanwhile` (see `EventStore.save`)

    select_events = _fewer_attempts(PostgresApplicationRecorder.select_events.__wrapped__)
    select_notifications = _fewer_attempts(PostgresApplicationRecorder.select_notifications.__wrapped__)
    max_notification_id = _fewer_attempts(PostgresApplicationRecorder.max_notification_id.__wrapped__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = {
            "channel": Identifier(self.channel_name),
            "event": Identifier(self.stored_event_type_name),
            "schema": Identifier(self.datastore.schema),
            "table": Identifier(self.events_table_name),
            "id_type": Identifier(self.datastore.originator_id_type),
        }
        # Both functions lock the table first, so that notification ids commit in the order they are given
        # (waiting at most the lock timeout that `_tune_pool` sets on every connection of the pool; behind a
        # transaction-mode pooler, which allows no session SET, the functions set it themselves).
        self.pooled = bool(getattr(self.datastore, "transaction_pooler", False))
        names["lock_timeout"] = (SQL(" SET lock_timeout = {} ").format(f"{int(self.datastore.lock_timeout)}s")
                                 if self.pooled else SQL(" "))
        self.sql_create_pg_function_insert_events = SQL(
            "CREATE OR REPLACE FUNCTION "
            "{schema}.{insert_events}(events {schema}.{event}[]) "
            "RETURNS SETOF bigint "
            "LANGUAGE plpgsql{lock_timeout}"
            "AS "
            "$BODY$"
            "BEGIN"
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

        self.sql_create_statements.append(SQL(self.data_keys_create_statement()))  # type: ignore[arg-type]
        # The one-event function also writes a new conversation's wrapped data key (`p_data_key`, else NULL) in
        # the same transaction as its `conversation.started` (see infrastructure/personal_data.py).
        self.pg_function_name_insert_event = f"{self.pg_function_name_insert_events}_one"
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION "
            "{schema}.{insert_event}(p_originator_id {id_type}, p_originator_version bigint, p_topic text, p_state bytea, "
            "p_data_key bytea) "
            "RETURNS bigint "
            "LANGUAGE plpgsql{lock_timeout}"
            "AS "
            "$BODY$"
            "DECLARE"
            "    new_id bigint;"
            "BEGIN"
            "    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;"
            "    NOTIFY {channel};"
            "    INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            "    VALUES (p_originator_id, p_originator_version, p_topic, p_state)"
            "    RETURNING notification_id INTO new_id;"
            "    IF p_data_key IS NOT NULL THEN"
            "        INSERT INTO {schema}.{keys} (conversation_id, wrapped) VALUES (p_originator_id, p_data_key);"
            "    END IF;"
            "    RETURN new_id;"
            "END;"
            "$BODY$"
        ).format(insert_event=Identifier(self.pg_function_name_insert_event), keys=Identifier(self.data_keys_table), **names))
        # The call as libpq takes it (numbered parameters, typed by the function's signature), and the name
        # it is prepared under on each connection (one per statement: a schema of its own, its own name);
        # behind a transaction pooler, no name: it is sent unprepared.
        self.sql_prepare_insert_event = SQL("SELECT {schema}.{insert_event}($1, $2, $3, $4, $5)").format(
            insert_event=Identifier(self.pg_function_name_insert_event), schema=names["schema"]).as_bytes(None)
        self.insert_event_statement_name: bytes | None = None if self.pooled else b"widgets_insert_event_" + hashlib.blake2b(
            self.sql_prepare_insert_event, digest_size=8).hexdigest().encode()

    @_fewer_attempts
    def insert_events(
        self, stored_events: Sequence[StoredEvent], *, meanwhile: Callable[[], object] | None = None, **kwargs: Any
    ) -> Sequence[int] | None:
        """One event through the scalar function, running `meanwhile` during its round trip (again if the
        attempt fails and is retried: `EventStore.save` makes it run once); several (or none) through the
        library's array function, leaving `meanwhile` to the caller."""
        keys = [(e.originator_id, e.data_key) for e in stored_events if getattr(e, "data_key", b"")]
        if keys and (len(stored_events) != 1 or not self.datastore.enable_db_functions):
            return self._insert_events_with_keys(stored_events, keys)
        if len(stored_events) != 1 or not self.datastore.enable_db_functions:
            return PostgresApplicationRecorder.insert_events.__wrapped__(self, stored_events, **kwargs)
        with self.datastore.get_connection() as conn:
            return [conn.insert_event(self.insert_event_statement_name, self.sql_prepare_insert_event,
                                      stored_events[0], meanwhile)]


    def _insert_events_with_keys(self, stored_events: Sequence[StoredEvent], keys: list[tuple[Any, bytes]]) -> list[int]:
        """Several events, some starting conversations: the events (locking the table, as every insert does) and
        their data keys in one transaction."""
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            ids = []
            for e in stored_events:
                curs.execute(SQL("INSERT INTO {}.{} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s) "
                                 "RETURNING notification_id").format(Identifier(self.datastore.schema),
                                                                     Identifier(self.events_table_name)),
                             [e.originator_id, e.originator_version, e.topic, e.state], prepare=False)
                ids.append(int(curs.fetchone()["notification_id"]))  # type: ignore[index]
            self.insert_data_keys_in(curs, keys)
            return ids


_INSERT_EVENT_FORMATS = (pq.Format.TEXT, pq.Format.TEXT, pq.Format.TEXT, pq.Format.BINARY, pq.Format.BINARY)


class _EventStoreConnection(Connection[DictRow]):
    """The pool's connections, with the one-event insert sent through libpq as psycopg's own cursors send
    their queries (`psycopg.generators`, waited on by `Connection.wait`), but in two halves: the caller's
    `meanwhile` runs after the query has gone and before its result is read, while PostgreSQL works.

    The statement is sent whole (Bind, Execute and Sync at once), so its implicit transaction commits on
    the server without waiting for us: the table lock is not held across `meanwhile`. If `meanwhile`
    raises, the result is still read (the event may be stored), then its exception goes on.
    """

    @cached_property
    def prepared_by_widgets(self) -> set[bytes]:
        """Names of the statements prepared on this connection (psycopg names its own `_pg3_<n>`)."""
        return set()

    def insert_event(
        self, name: bytes | None, statement: bytes, event: StoredEvent, meanwhile: Callable[[], object] | None
    ) -> int:
        """`name`: the statement is prepared under it once per connection; None: sent unprepared (a pooler)."""
        try:
            return self._insert_event(name, statement, event, meanwhile)
        except psycopg.errors.InvalidSqlStatementName:
            # psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection where it prepared statements of its own
            # (a failed transaction of the library's): prepare ours again. `meanwhile` has run by now.
            self.prepared_by_widgets.discard(name)  # type: ignore[arg-type]
            return self._insert_event(name, statement, event, None)

    def _insert_event(
        self, name: bytes | None, statement: bytes, event: StoredEvent, meanwhile: Callable[[], object] | None
    ) -> int:
        params = [str(event.originator_id).encode(), b"%d" % event.originator_version, event.topic.encode(), event.state,
                  getattr(event, "data_key", b"") or None]
        with self.lock:
            pgconn = self.pgconn
            if name is None:
                pgconn.send_query_params(statement, params, param_formats=_INSERT_EVENT_FORMATS)
            else:
                if name not in self.prepared_by_widgets:
                    pgconn.send_prepare(name, statement)
                    _raise_for(self.wait(generators.execute(pgconn)), pq.ExecStatus.COMMAND_OK)
                    self.prepared_by_widgets.add(name)
                pgconn.send_query_prepared(name, params, _INSERT_EVENT_FORMATS)
            self.wait(generators.send(pgconn))
            try:
                if meanwhile is not None:
                    meanwhile()
            finally:
                results = self.wait(generators.fetch_many(pgconn))
        return int(_raise_for(results, pq.ExecStatus.TUPLES_OK).get_value(0, 0))  # type: ignore[arg-type]


def _raise_for(results: list[pq.abc.PGresult], expected: pq.ExecStatus) -> pq.abc.PGresult:
    """The one result of a statement, or the error it carries as psycopg's exception."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise error_from_result(result)
    if len(results) != 1 or results[0].status != expected:
        raise psycopg.InterfaceError(f"unexpected results of the one-event insert: {[r.status for r in results]}")
    return results[0]


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
        self.datastore.transaction_pooler = self.env.get(TRANSACTION_POOLER, "").lower() in ("y", "yes", "true", "1")
        _tune_pool(self.datastore)


def _tune_pool(datastore: PostgresDatastore) -> None:
    """eventsourcing builds its psycopg_pool pool itself (not yet open), passing `check=check_connection`
    when `POSTGRES_PRE_PING` is on, and takes no pool class, connection class or callback of ours:
    hence the swapped classes, and the swapped check and configure callbacks (psycopg_pool takes
    them only in its constructor)."""
    pool = datastore.pool
    if type(pool) is ConnectionPool:
        pool.__class__ = _MostRecentFirstPool
    pool.connection_class = _EventStoreConnection
    if datastore.pre_ping and pool._check is not None:  # noqa: SLF001
        pool._check = _PingWhenIdle().check  # noqa: SLF001
    if getattr(datastore, "transaction_pooler", False):
        # No session state: nothing prepared, and no SET (the library's idle-in-transaction timeout, our
        # lock timeout) on a server connection that other clients of the pooler get next.
        pool.kwargs = {**pool.kwargs, "prepare_threshold": None}
        pool._configure = _autocommit  # noqa: SLF001
    else:
        pool._configure = _with_lock_timeout(pool._configure, datastore.lock_timeout)  # noqa: SLF001


def _autocommit(conn: Connection[Any]) -> None:
    conn.autocommit = True


def _with_lock_timeout(configure: Any, seconds: int) -> Any:
    """The library's configure callback (autocommit, idle-in-transaction timeout), then the lock timeout
    for the whole session: a writer waits at most that long for the event table's lock."""
    statement = SQL("SET lock_timeout = {}").format(f"{int(seconds)}s")

    def configure_connection(conn: Connection[Any]) -> None:
        if configure is not None:
            configure(conn)
        conn.execute(statement)

    return configure_connection

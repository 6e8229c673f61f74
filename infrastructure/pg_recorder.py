"""The PostgreSQL recorder, with commit order equal to notification order in one round trip.

eventsourcing's `POSTGRES_ENABLE_DB_FUNCTIONS` inserts events through a
plpgsql function (one round trip instead of three), but that function does
not take the table lock that its three-statement path takes. Without it, two
transactions can commit their notification ids out of order, and a projection
tailing the log can pass an id that commits later and never apply it (our
tests reproduce it). This recorder creates the same function with the lock
inside it: writers are serialised exactly as on the library's default path.
It also fails faster when PostgreSQL is down (see `_fewer_attempts`).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

ATTEMPTS = 2


def _fewer_attempts(method: Any) -> Any:
    """The library retries every call 10 times, each waiting the connect timeout: with PostgreSQL down a
    request would wait about a minute for its 503. Two attempts still ride over a dropped connection."""
    return retry((InterfaceError, OperationalError), max_attempts=ATTEMPTS, wait=0.2)(method.__wrapped__)


class FastFailPostgresAggregateRecorder(PostgresAggregateRecorder):
    """The snapshot store's recorder: the same shorter retries when PostgreSQL is down."""

    insert_events = _fewer_attempts(PostgresAggregateRecorder.insert_events)
    select_events = _fewer_attempts(PostgresAggregateRecorder.select_events)


class OrderedPostgresApplicationRecorder(PostgresApplicationRecorder):
    insert_events = _fewer_attempts(PostgresApplicationRecorder.insert_events)
    select_events = _fewer_attempts(PostgresApplicationRecorder.select_events)
    select_notifications = _fewer_attempts(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _fewer_attempts(PostgresApplicationRecorder.max_notification_id)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
        ).format(
            insert_events=Identifier(self.pg_function_name_insert_events),
            lock_timeout=self.datastore.lock_timeout,
            channel=Identifier(self.channel_name),
            event=Identifier(self.stored_event_type_name),
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
        )
        self.sql_create_statements[self.create_insert_function_statement_index] = self.sql_create_pg_function_insert_events


class WidgetsPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL persistence with the two recorders above."""

    aggregate_recorder_class = FastFailPostgresAggregateRecorder
    application_recorder_class = OrderedPostgresApplicationRecorder

"""A scrubbing VACUUM first waits for the sessions holding a snapshot from before it (they keep old row versions)."""

from __future__ import annotations

import psycopg
import pytest

from infrastructure.pg_horizon import wait_for_older_snapshots

pytestmark = pytest.mark.postgres
SKIPPED_WIRINGS = {
    "embedded": "PostgreSQL's snapshot horizon; SQLite has none",
    "production": "a mechanism of PostgreSQL itself, on sessions of the test's own; no wiring is involved",
    "managed": "it holds a snapshot in a session of its own, which a transaction-mode pooler does not give: the "
               "scrub's VACUUM runs on the direct connection there too",
}


def test_the_wait_ends_when_no_older_snapshot_remains_and_gives_up_while_one_is_held(pg_server_url: str, pg_schema: str) -> None:
    with psycopg.connect(pg_server_url, autocommit=True) as scrubber, psycopg.connect(pg_server_url) as reader:
        scrubber.execute(f'CREATE TABLE "{pg_schema}".rows (v text)')
        scrubber.execute(f'INSERT INTO "{pg_schema}".rows VALUES (%s)', ["visible to the reader"])
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f'SELECT * FROM "{pg_schema}".rows').fetchall()  # its snapshot still sees the row
        scrubber.execute(f'DELETE FROM "{pg_schema}".rows')
        assert wait_for_older_snapshots(scrubber, timeout=0.3) is False  # VACUUM now would keep the deleted row
        reader.rollback()
        assert wait_for_older_snapshots(scrubber, timeout=30) is True
        scrubber.execute(f'VACUUM "{pg_schema}".rows')
        (dead,) = scrubber.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass",
                                   [f'"{pg_schema}".rows']).fetchone()
        assert dead == 0

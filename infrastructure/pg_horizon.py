"""Waiting for PostgreSQL's removal horizon before a scrubbing VACUUM.

VACUUM (plain or FULL) keeps every row version some open snapshot of the
database may still see: "recently dead", bytes and all. A session that opened
a transaction before an erasure committed (another projection's page, a report,
a backup's `pg_dump`) would leave the erased row's old version in the table's
new file. So a scrub that must leave nothing first waits, for a bounded time,
until no other session of this database holds a snapshot or transaction from
before it started. Without the privilege to read other sessions' `backend_xmin`
(superuser or `pg_read_all_stats`) PostgreSQL shows none, and the wait is none.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

log = structlog.get_logger("scrub")
WAIT_SECONDS = 30.0

_OLDER = """SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND ((backend_xmin IS NOT NULL AND age(backend_xmin) > age(%s::text::xid))
                    OR (backend_xid IS NOT NULL AND age(backend_xid) > age(%s::text::xid)))"""


def wait_for_older_snapshots(conn: Any, timeout: float = WAIT_SECONDS) -> bool:
    """Wait until every other session's snapshot of this database is younger than now (autocommit `conn`);
    whether it came within `timeout` (if not, the VACUUM after it may keep some old row versions: logged)."""
    target = conn.execute("SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296)::text",
                          prepare=False).fetchone()
    xid = target[0] if isinstance(target, tuple) else next(iter(target.values()))
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        row = conn.execute(_OLDER, [xid, xid], prepare=False).fetchone()
        older = row[0] if isinstance(row, tuple) else next(iter(row.values()))
        if not older:
            return True
        if time.monotonic() >= deadline:
            log.warning("scrub_horizon_not_reached", sessions=int(older),
                        hint="a transaction older than the erasure is still open; its next scrub removes what remains")
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.5)

"""A small SQL adapter over psycopg (PostgreSQL) and sqlite3 (embedded), for the read models."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from infrastructure.pg_horizon import wait_for_older_snapshots
from infrastructure.settings import Settings


class Database:
    """Runs `?`-parameterised SQL on either engine; `transaction()` yields a cursor-like executor."""

    def __init__(self, settings: Settings) -> None:
        self.postgres = bool(settings.database_url)
        # Behind a transaction-mode pooler a session is not ours: the schema is set in each transaction
        # (PgBouncer does not pass the `options` startup parameter on), and nothing is prepared.
        self._search_path: str | None = None
        if self.postgres:
            schema = settings.database_schema
            kwargs: dict[str, Any] = {"options": f"-c search_path={schema}", "autocommit": False}
            if settings.behind_pooler:
                kwargs = {"autocommit": False, "prepare_threshold": None}
                self._search_path = schema
            self._pool: ConnectionPool | None = ConnectionPool(
                settings.database_url,
                min_size=1,
                max_size=max(2, settings.pg_pool_size),
                kwargs=kwargs,
                open=True,
                timeout=3,
            )
        else:
            self._pool = None
            path = Path(settings.data_dir)
            path.mkdir(parents=True, exist_ok=True)
            self._path = str(path / "read_models.sqlite3")
            self._local = threading.local()

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA secure_delete=ON")  # deleted and overwritten rows leave no bytes in free pages
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        if self._pool is not None:
            with self._pool.connection() as conn, conn.transaction():
                self._set_search_path(conn)
                yield Executor(conn, postgres=True)
        else:
            conn = self._sqlite()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Executor(conn, postgres=False)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._pool is not None:
            with self._pool.connection() as conn:
                self._set_search_path(conn)
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())
        return list(self._sqlite().execute(sql, params).fetchall())

    def scrub(self, tables: Sequence[str], full: bool = False) -> None:
        """Leave no deleted or overwritten row's bytes behind: PostgreSQL `VACUUM` (dead tuples; it cannot run in a
        transaction), SQLite a truncating WAL checkpoint (its free pages are zeroed already: `secure_delete`).

        Plain VACUUM frees a dead tuple's space but leaves its bytes in the page until something overwrites them:
        enough for sealed values (noise once their key is gone), not for plaintext. `full` (for rows that held
        personal values in the clear: written before encryption) rewrites the tables, which holds an exclusive
        lock on each while it runs."""
        if self._pool is not None:
            with self._pool.connection() as conn:
                conn.autocommit = True
                try:
                    if full:
                        wait_for_older_snapshots(conn)
                    for table in tables:
                        name = f"{self._search_path}.{table}" if self._search_path else table
                        conn.execute(f"VACUUM {'FULL ' if full else ''}{name}", prepare=False)
                finally:
                    conn.autocommit = False
        else:
            self._sqlite().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _set_search_path(self, conn: Any) -> None:
        """Only behind a pooler: for this transaction alone (the pool's connections are not autocommit)."""
        if self._search_path is not None:
            conn.execute("SELECT set_config('search_path', %s, true)", [self._search_path])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class Executor:
    def __init__(self, conn: Any, postgres: bool) -> None:
        self.conn = conn
        self.postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.postgres:
            return self.conn.execute(sql.replace("?", "%s"), params)
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(sql, params).fetchall())

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.postgres:
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        else:
            self.conn.executemany(sql, rows)

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows that are new (a conflict fails the transaction): on PostgreSQL one COPY, a stream instead of a
        statement a row."""
        if not rows:
            return
        if self.postgres:
            with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self.conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)


OperationalErrors = (psycopg.OperationalError, sqlite3.OperationalError)

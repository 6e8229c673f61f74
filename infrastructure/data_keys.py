"""The key table beside the event table: one wrapped data key per conversation (see `infrastructure.personal_data`).

Both recorders (PostgreSQL in `pg_recorder`, SQLite in `sqlite_recorder`) mix
one of these in. A conversation's key row is written in the same transaction as
its `conversation.started` (the recorders' insert paths). Destroying a key
leaves its conversation id in a second table (`..._erased_keys`: ids only), so
that no key is ever made for it again. These methods read,
destroy and rewrap keys, and rewrite stored events in place, each followed by
the scrub its engine needs so that no deleted bytes survive in the table files:
PostgreSQL `VACUUM` (dead tuples) and a `CHECKPOINT` where the role may run one,
SQLite `secure_delete` (free space zeroed) and a truncating WAL checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
import structlog

from infrastructure.pg_horizon import wait_for_older_snapshots

log = structlog.get_logger("data_keys")
BATCH = 1000
Rewrite = Callable[[str, bytes], bytes | None]  # (topic, state) -> the new state, or None to leave the event as it is


class PostgresKeyTable:
    """Key table methods for the PostgreSQL recorder (`self.datastore` is eventsourcing's PostgresDatastore)."""

    datastore: Any
    events_table_name: str

    @property
    def data_keys_table(self) -> str:
        return self.events_table_name.removesuffix("_events") + "_data_keys"

    def _qualified(self, table: str) -> str:
        return f'"{self.datastore.schema}"."{table}"'

    @property
    def erased_keys_table(self) -> str:
        return self.events_table_name.removesuffix("_events") + "_erased_keys"

    def data_keys_create_statement(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self._qualified(self.data_keys_table)} "
                "(conversation_id uuid PRIMARY KEY, wrapped bytea NOT NULL); "
                f"CREATE TABLE IF NOT EXISTS {self._qualified(self.erased_keys_table)} "
                "(conversation_id uuid PRIMARY KEY, erased_at timestamptz NOT NULL DEFAULT now())")

    def insert_data_keys_in(self, curs: Any, rows: Sequence[tuple[UUID, bytes]]) -> None:
        if rows:
            curs.executemany(f"INSERT INTO {self._qualified(self.data_keys_table)} (conversation_id, wrapped) VALUES (%s, %s)",
                             list(rows))

    def insert_data_keys(self, rows: Sequence[tuple[UUID, bytes]]) -> None:
        """Keys for conversations stored before they had one (the migration); existing rows are kept."""
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(f"INSERT INTO {self._qualified(self.data_keys_table)} (conversation_id, wrapped) VALUES (%s, %s) "
                             "ON CONFLICT (conversation_id) DO NOTHING", list(rows))

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """A query in autocommit: a read-only transaction's ROLLBACK would make psycopg DEALLOCATE ALL, dropping the
        recorder's prepared insert."""
        with self.datastore.get_connection() as conn:
            return list(conn.execute(sql, params, prepare=False).fetchall())

    def select_data_keys(self, conversation_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        rows = self._read(f"SELECT conversation_id, wrapped FROM {self._qualified(self.data_keys_table)} "
                          "WHERE conversation_id = ANY(%s)", [list(conversation_ids)])
        return {row["conversation_id"]: bytes(row["wrapped"]) for row in rows}

    def erased_data_keys(self, conversation_ids: Sequence[UUID]) -> set[UUID]:
        rows = self._read(f"SELECT conversation_id FROM {self._qualified(self.erased_keys_table)} "
                          "WHERE conversation_id = ANY(%s)", [list(conversation_ids)])
        return {row["conversation_id"] for row in rows}

    def erased_data_key_ids(self) -> list[UUID]:
        """Every conversation whose data key was destroyed."""
        return [row["conversation_id"] for row in self._read(
            f"SELECT conversation_id FROM {self._qualified(self.erased_keys_table)} ORDER BY conversation_id", [])]

    def delete_data_keys(self, conversation_ids: Sequence[UUID]) -> int:
        """Delete the keys and record that they were destroyed (so none is ever made again), then scrub."""
        ids = list(conversation_ids)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(f"DELETE FROM {self._qualified(self.data_keys_table)} WHERE conversation_id = ANY(%s)",
                         [ids], prepare=False)
            deleted = curs.rowcount
            curs.executemany(f"INSERT INTO {self._qualified(self.erased_keys_table)} (conversation_id) VALUES (%s) "
                             "ON CONFLICT (conversation_id) DO NOTHING", [(cid,) for cid in ids])
        self.scrub(self.data_keys_table, full=True)
        return int(deleted)

    def iter_data_keys(self, batch: int = BATCH) -> Iterator[list[tuple[UUID, bytes]]]:
        after = UUID(int=0)
        while True:
            rows = [(r["conversation_id"], bytes(r["wrapped"])) for r in self._read(
                f"SELECT conversation_id, wrapped FROM {self._qualified(self.data_keys_table)} "
                "WHERE conversation_id > %s ORDER BY conversation_id LIMIT %s", [after, batch])]
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def rewrap_data_keys(self, rows: Sequence[tuple[UUID, bytes, bytes]]) -> None:
        """(conversation id, new wrapped key, the wrapped key it replaces), in one transaction; a row that changed or
        went meanwhile (an erasure) is left as it is."""
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(f"UPDATE {self._qualified(self.data_keys_table)} SET wrapped = %s "
                             "WHERE conversation_id = %s AND wrapped = %s", [(new, cid, old) for cid, new, old in rows])

    def scrub_data_keys(self) -> None:
        self.scrub(self.data_keys_table, full=True)

    def rewrite_events(self, originator_id: UUID, rewrite: Rewrite) -> int:
        """Rewrite one aggregate's stored events in place (the documented exception to append-only), then scrub."""
        table = self._qualified(self.events_table_name)
        changed = 0
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(f"SELECT originator_version, topic, state FROM {table} WHERE originator_id = %s FOR UPDATE",
                         [originator_id], prepare=False)
            for row in curs.fetchall():
                new_state = rewrite(row["topic"], bytes(row["state"]))
                if new_state is not None:
                    curs.execute(f"UPDATE {table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
                                 [new_state, originator_id, row["originator_version"]], prepare=False)
                    changed += 1
        if changed:
            self.scrub(self.events_table_name, full=True)  # the old versions held plaintext: no page may keep it
        return changed

    def scrub(self, table: str, full: bool = False) -> None:
        """Remove dead tuples (VACUUM cannot run in a transaction: the pool's connections are in autocommit), then
        write the cleaned pages to the table files now rather than at the next checkpoint, where the role may.

        Plain VACUUM marks a dead tuple's space free but leaves its bytes in the page (seen on PostgreSQL 15); `full`
        rewrites the table, so none survive. The key table takes it (a destroyed key's wrapped bytes must go), and
        the event table after an in-place rewrite (the old versions held plaintext; the scan test found the like in
        a read model's page after a plain VACUUM). It holds an exclusive lock on the table while it runs."""
        with self.datastore.get_connection() as conn:
            if full:
                wait_for_older_snapshots(conn)  # VACUUM keeps what an older snapshot may still see
            conn.execute(f"VACUUM {'FULL ' if full else ''}{self._qualified(table)}", prepare=False)
            try:
                conn.execute("CHECKPOINT", prepare=False)
            except psycopg.errors.InsufficientPrivilege:
                log.info("checkpoint_not_permitted", hint="the pages are written at the next checkpoint")


class SQLiteKeyTable:
    """Key table methods for the SQLite recorder (`self.datastore` is eventsourcing's SQLiteDatastore)."""

    datastore: Any
    events_table_name: str
    data_keys_table = "widgets_data_keys"
    erased_keys_table = "widgets_erased_keys"

    def data_keys_create_statements(self) -> list[str]:
        return [f"CREATE TABLE IF NOT EXISTS {self.data_keys_table} "
                "(conversation_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL) WITHOUT ROWID",
                f"CREATE TABLE IF NOT EXISTS {self.erased_keys_table} "
                "(conversation_id TEXT PRIMARY KEY, erased_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP) WITHOUT ROWID"]

    def insert_data_keys_in(self, c: Any, rows: Sequence[tuple[UUID, bytes]]) -> None:
        if rows:
            c.executemany(f"INSERT INTO {self.data_keys_table} (conversation_id, wrapped) VALUES (?, ?)",
                          [(cid.hex, wrapped) for cid, wrapped in rows])

    def insert_data_keys(self, rows: Sequence[tuple[UUID, bytes]]) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.executemany(f"INSERT OR IGNORE INTO {self.data_keys_table} (conversation_id, wrapped) VALUES (?, ?)",
                          [(cid.hex, wrapped) for cid, wrapped in rows])

    def _select_in(self, sql: str, conversation_ids: Sequence[UUID]) -> list[Any]:
        found: list[Any] = []
        ids = [cid.hex for cid in conversation_ids]
        with self.datastore.transaction(commit=False) as c:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                c.execute(f"{sql} ({','.join('?' * len(chunk))})", chunk)
                found += c.fetchall()
        return found

    def select_data_keys(self, conversation_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        rows = self._select_in(f"SELECT conversation_id, wrapped FROM {self.data_keys_table} WHERE conversation_id IN",
                               conversation_ids)
        return {UUID(hex=r[0]): bytes(r[1]) for r in rows}

    def erased_data_keys(self, conversation_ids: Sequence[UUID]) -> set[UUID]:
        rows = self._select_in(f"SELECT conversation_id FROM {self.erased_keys_table} WHERE conversation_id IN",
                               conversation_ids)
        return {UUID(hex=r[0]) for r in rows}

    def erased_data_key_ids(self) -> list[UUID]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT conversation_id FROM {self.erased_keys_table} ORDER BY conversation_id")
            return [UUID(hex=r[0]) for r in c.fetchall()]

    @contextlib.contextmanager
    def _scrubbing(self) -> Iterator[Any]:
        """A write transaction whose deleted content is zeroed (secure_delete), then a truncating WAL checkpoint, so
        neither the database's free pages nor its -wal file keep the old bytes."""
        with self.datastore.get_connection(commit=True) as conn:
            raw = conn._sqlite_conn  # noqa: SLF001 - pragmas are per connection, outside a transaction
            raw.execute("PRAGMA secure_delete = ON")
            try:
                with conn.transaction(commit=True) as c:
                    yield c
            finally:
                raw.execute("PRAGMA secure_delete = OFF")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def delete_data_keys(self, conversation_ids: Sequence[UUID]) -> int:
        ids = [cid.hex for cid in conversation_ids]
        with self._scrubbing() as c:
            c.execute(f"DELETE FROM {self.data_keys_table} WHERE conversation_id IN ({','.join('?' * len(ids))})", ids)
            deleted = int(c.sqlite_cursor.rowcount)
            c.executemany(f"INSERT OR IGNORE INTO {self.erased_keys_table} (conversation_id) VALUES (?)", [(i,) for i in ids])
        return deleted

    def iter_data_keys(self, batch: int = BATCH) -> Iterator[list[tuple[UUID, bytes]]]:
        after = ""
        while True:
            with self.datastore.transaction(commit=False) as c:
                c.execute(f"SELECT conversation_id, wrapped FROM {self.data_keys_table} WHERE conversation_id > ? "
                          "ORDER BY conversation_id LIMIT ?", [after, batch])
                rows = [(r[0], bytes(r[1])) for r in c.fetchall()]
            if not rows:
                return
            yield [(UUID(hex=cid), wrapped) for cid, wrapped in rows]
            after = rows[-1][0]

    def rewrap_data_keys(self, rows: Sequence[tuple[UUID, bytes, bytes]]) -> None:
        with self._scrubbing() as c:
            c.executemany(f"UPDATE {self.data_keys_table} SET wrapped = ? WHERE conversation_id = ? AND wrapped = ?",
                          [(new, cid.hex, old) for cid, new, old in rows])

    def scrub_data_keys(self) -> None:
        """Nothing more: every rewrap ran with secure_delete and ended with a truncating WAL checkpoint."""

    def rewrite_events(self, originator_id: UUID, rewrite: Rewrite) -> int:
        changed = 0
        with self._scrubbing() as c:
            c.execute(f"SELECT originator_version, topic, state FROM {self.events_table_name} WHERE originator_id = ?",
                      [originator_id.hex])
            for version, topic, state in c.fetchall():
                new_state = rewrite(topic, bytes(state))
                if new_state is not None:
                    c.execute(f"UPDATE {self.events_table_name} SET state = ? WHERE originator_id = ? AND originator_version = ?",
                              [new_state, originator_id.hex, version])
                    changed += 1
        return changed

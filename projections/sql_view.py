"""What every SQL read model shares: its tables, its position, and writing both in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from infrastructure.sql import Database, Executor
from projections.cursor import decode_cursor, encode_cursor

APPLIED, STALE = 1, 0
POSITIONS = "CREATE TABLE IF NOT EXISTS projection_positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
IN_CHUNK = 500


class SqlView:
    """A read model in SQL. A page's rows and its position are written in one transaction, and a page at or
    below the stored position is refused, so each event counts once. Given an open transaction (a rebuild's),
    it writes inside it instead."""

    name: ClassVar[str]
    schema: ClassVar[Sequence[str]]
    tables: ClassVar[Sequence[str]]
    generation = 1

    def __init__(self, db: Database | Executor, create: bool = True) -> None:
        self.db = db
        if create and isinstance(db, Database):
            self.create_tables(db)

    @classmethod
    def create_tables(cls, db: Database) -> None:
        with db.transaction() as tx:
            for statement in (POSITIONS, *cls.schema):
                tx.execute(statement)
            tx.execute("INSERT INTO projection_positions (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", [cls.name])

    @classmethod
    def reset(cls, tx: Executor) -> None:
        """Empty the model and its position, inside a rebuild's transaction (readers still see the old one)."""
        for table in cls.tables:
            tx.execute(f"DELETE FROM {table}")
        tx.execute("UPDATE projection_positions SET position = 0 WHERE name = ?", [cls.name])

    def position(self) -> int:
        return int(self.db.query("SELECT position FROM projection_positions WHERE name = ?", [self.name])[0][0])

    def is_current(self) -> bool:
        return True

    def commit(self, changes: Any, first: int, last: int) -> int:
        if isinstance(self.db, Executor):
            return self._commit_in(self.db, changes, first, last)
        with self.db.transaction() as tx:
            return self._commit_in(tx, changes, first, last)

    def _commit_in(self, tx: Executor, changes: Any, first: int, last: int) -> int:
        moved = tx.execute("UPDATE projection_positions SET position = ? WHERE name = ? AND position < ?", [last, self.name, first])
        if moved.rowcount != 1:
            return STALE
        self.write(tx, changes)
        return APPLIED

    def write(self, tx: Executor, changes: Any) -> None:
        raise NotImplementedError

    def select_in(self, sql: str, ids: set[str]) -> list[tuple[Any, ...]]:
        """Rows of `sql` (ending in `IN`) for many ids, a chunk at a time."""
        ordered, found = sorted(ids), []
        for i in range(0, len(ordered), IN_CHUNK):
            chunk = ordered[i : i + IN_CHUNK]
            found += self.db.query(f"{sql} ({','.join('?' * len(chunk))})", chunk)
        return found

    def newest_first(self, table: str, sort_column: str, where: str, params: list[Any], limit: int,
                     cursor: str | None) -> tuple[list[str], str | None]:
        """One page of `row_json` from `table`, newest first by (`sort_column`, id), after `cursor`; and the
        cursor of the next page, if there is one."""
        if cursor:
            sort_time, item_id = decode_cursor(cursor)
            where += f" AND ({sort_column} < ? OR ({sort_column} = ? AND id < ?))"
            params = [*params, sort_time, sort_time, item_id]
        found = self.db.query(
            f"SELECT row_json, {sort_column}, id FROM {table} WHERE {where} ORDER BY {sort_column} DESC, id DESC LIMIT ?",
            [*params, limit + 1],
        )
        next_cursor = encode_cursor(found[limit - 1][1], found[limit - 1][2]) if len(found) > limit else None
        return [r[0] for r in found[:limit]], next_cursor

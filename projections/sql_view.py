"""What every SQL read model shares: its tables, its position, and writing both in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from infrastructure.sql import Database, Executor
from projections.cursor import decode_cursor, encode_cursor

APPLIED, STALE = 1, 0
POSITIONS = "CREATE TABLE IF NOT EXISTS projection_positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
# Which format each model's rows were written in: a model whose format is behind its code is rebuilt at startup.
FORMATS = "CREATE TABLE IF NOT EXISTS projection_formats (name TEXT PRIMARY KEY, format INTEGER NOT NULL)"
IN_CHUNK = 500


class SqlView:
    """A read model in SQL. A page's rows and its position are written in one transaction, and a page at or
    below the stored position is refused, so each event counts once. Given an open transaction (a rebuild's),
    it writes inside it instead."""

    name: ClassVar[str]
    schema: ClassVar[Sequence[str]]
    tables: ClassVar[Sequence[str]]
    generation = 1
    format = 1  # raise it when rows written by older code must be rewritten (`rebuild_outdated`)

    def __init__(self, db: Database | Executor, create: bool = True, fresh: bool = False) -> None:
        """`fresh`: the model was emptied in the transaction `db` is (a rebuild's), so a row that a page creates does
        not exist yet, and a model may insert it in bulk instead of upserting it."""
        self.db = db
        self.fresh = fresh
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

    @classmethod
    def stored_format(cls, db: Database) -> int | None:
        """The format the model's rows are in; None for a model that has never been written (nothing to rewrite)."""
        with db.transaction() as tx:
            tx.execute(FORMATS)
        found = db.query("SELECT format FROM projection_formats WHERE name = ?", [cls.name])
        if found:
            return int(found[0][0])
        position = db.query("SELECT position FROM projection_positions WHERE name = ?", [cls.name])
        return 1 if position and int(position[0][0]) > 0 else None

    @classmethod
    def record_format(cls, db: Database) -> None:
        with db.transaction() as tx:
            tx.execute(FORMATS)
            tx.execute("INSERT INTO projection_formats (name, format) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "format = excluded.format", [cls.name, cls.format])

    @classmethod
    def prepare_replay(cls, live: Database, scratch: Database) -> None:
        """Carry over what a replay into `scratch` must know of the live model that the log does not say."""

    def scrubs(self, changes: Any) -> bool:
        """Whether a committed page overwrote personal values, so the old bytes must be scrubbed from the files."""
        return False

    def scrubs_fully(self, changes: Any) -> bool:
        """Whether the overwritten values were in the clear (rows from before encryption): then the tables are
        rewritten (`Database.scrub(full=True)`), since a plain VACUUM leaves a dead tuple's bytes in its page."""
        return False

    def position(self) -> int:
        return int(self.db.query("SELECT position FROM projection_positions WHERE name = ?", [self.name])[0][0])

    def is_current(self) -> bool:
        return True

    def commit(self, changes: Any, first: int, last: int) -> int:
        if isinstance(self.db, Executor):
            return self._commit_in(self.db, changes, first, last)
        with self.db.transaction() as tx:
            result = self._commit_in(tx, changes, first, last)
        if result == APPLIED and self.scrubs(changes):
            self.db.scrub(self.tables, full=self.scrubs_fully(changes))
        return result

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

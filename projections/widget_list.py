"""The admin list read model in SQL (PostgreSQL, or SQLite when embedded).

Rows, the version index and the position are written in one transaction, and a
position at or below the stored one is refused, so each event counts once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from infrastructure.sql import Database, Executor
from projections.cursor import decode_cursor, encode_cursor
from projections.widget_rows import Changes, WidgetRow

APPLIED, STALE = 1, 0
NAME = "widget_list"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS projection_positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS widget_list (
        id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, created_at TEXT NOT NULL,
        deleted BOOLEAN NOT NULL, row_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS widget_list_by_org ON widget_list (organization_id, created_at, id)""",
    """CREATE TABLE IF NOT EXISTS widget_list_versions (version_id TEXT PRIMARY KEY, published BOOLEAN NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS widget_list_pins (version_id TEXT NOT NULL, widget_id TEXT NOT NULL,
        PRIMARY KEY (version_id, widget_id))""",
]
TABLES = ("widget_list", "widget_list_versions", "widget_list_pins")

_encode = msgspec.json.Encoder().encode
_decode_row = msgspec.json.Decoder(WidgetRow).decode


class WidgetListView:
    @staticmethod
    def reset(tx: Executor) -> None:
        reset_in(tx)

    def __init__(self, db: Database | Executor, create: bool = True) -> None:
        self.db = db
        self.generation = 1
        if create and isinstance(db, Database):
            self.create_tables(db)

    @staticmethod
    def create_tables(db: Database) -> None:
        with db.transaction() as tx:
            for statement in SCHEMA:
                tx.execute(statement)
            tx.execute(
                "INSERT INTO projection_positions (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", [NAME]
            )

    def position(self) -> int:
        return int(self.db.query("SELECT position FROM projection_positions WHERE name = ?", [NAME])[0][0])

    def is_current(self) -> bool:
        return True

    def load(self, widget_ids: set[str], version_ids: set[str]) -> tuple[dict[str, WidgetRow], dict[str, bool]]:
        rows: dict[str, WidgetRow] = {}
        versions: dict[str, bool] = {}
        for chunk in _chunks(sorted(widget_ids)):
            marks = ",".join("?" * len(chunk))
            for (row_json,) in self.db.query(f"SELECT row_json FROM widget_list WHERE id IN ({marks})", chunk):
                row = _decode_row(row_json)
                rows[row.id] = row
        for chunk in _chunks(sorted(version_ids)):
            marks = ",".join("?" * len(chunk))
            for version_id, published in self.db.query(
                f"SELECT version_id, published FROM widget_list_versions WHERE version_id IN ({marks})", chunk
            ):
                versions[version_id] = bool(published)
        return rows, versions

    def pinned_widgets(self, version_id: str) -> set[str]:
        return {w for (w,) in self.db.query("SELECT widget_id FROM widget_list_pins WHERE version_id = ?", [version_id])}

    def commit(self, changes: Changes, first: int, last: int) -> int:
        if isinstance(self.db, Executor):  # inside a rebuild's transaction
            return commit_in(self.db, changes, first, last)
        with self.db.transaction() as tx:
            return commit_in(tx, changes, first, last)

    def page(self, organization_id: str, limit: int, cursor: str | None) -> tuple[list[WidgetRow], str | None]:
        """This organization's widgets, newest first, from a cursor."""
        params: list[Any] = [organization_id]
        where = "organization_id = ? AND deleted = ?"
        params.append(False)
        if cursor:
            created_at, widget_id = decode_cursor(cursor)
            where += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params += [created_at, created_at, widget_id]
        found = self.db.query(
            f"SELECT row_json, created_at, id FROM widget_list WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit + 1],
        )
        rows = [_decode_row(r[0]) for r in found[:limit]]
        next_cursor = encode_cursor(found[limit - 1][1], found[limit - 1][2]) if len(found) > limit else None
        return rows, next_cursor


def commit_in(tx: Executor, changes: Changes, first: int, last: int) -> int:
    moved = tx.execute("UPDATE projection_positions SET position = ? WHERE name = ? AND position < ?", [last, NAME, first])
    if moved.rowcount != 1:
        return STALE
    write_changes(tx, changes)
    return APPLIED


def reset_in(tx: Executor) -> None:
    """Empty the model and its position, inside a rebuild's transaction (readers still see the old one)."""
    for table in TABLES:
        tx.execute(f"DELETE FROM {table}")
    tx.execute("UPDATE projection_positions SET position = 0 WHERE name = ?", [NAME])


def write_changes(tx: Executor, changes: Changes) -> None:
    tx.executemany(
        """INSERT INTO widget_list (id, organization_id, created_at, deleted, row_json) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET deleted = excluded.deleted, row_json = excluded.row_json""",
        [
            (r.id, r.organization_id, r.created_at.isoformat(), r.deleted, _encode(r).decode())
            for r in changes.rows.values()
            if r is not None
        ],
    )
    tx.executemany(
        """INSERT INTO widget_list_versions (version_id, published) VALUES (?, ?)
           ON CONFLICT (version_id) DO UPDATE SET published = excluded.published""",
        list(changes.versions.items()),
    )
    tx.executemany(
        "INSERT INTO widget_list_pins (version_id, widget_id) VALUES (?, ?) ON CONFLICT DO NOTHING", sorted(changes.pinned)
    )
    tx.executemany("DELETE FROM widget_list_pins WHERE version_id = ? AND widget_id = ?", sorted(changes.unpinned))



def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

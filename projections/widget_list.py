"""The admin list read model in SQL (PostgreSQL, or SQLite when embedded).

Rows, the version index and the position are written in one transaction, and a
position at or below the stored one is refused, so each event counts once.
"""

from __future__ import annotations

import msgspec

from infrastructure.sql import Executor
from projections.sql_view import SqlView
from projections.widget_rows import Changes, WidgetRow

NAME = "widget_list"

SCHEMA = [
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


class WidgetListView(SqlView):
    name = NAME
    schema = SCHEMA
    tables = TABLES

    def load(self, widget_ids: set[str], version_ids: set[str]) -> tuple[dict[str, WidgetRow], dict[str, bool]]:
        rows = [_decode_row(j) for (j,) in self.select_in("SELECT row_json FROM widget_list WHERE id IN", widget_ids)]
        versions = self.select_in("SELECT version_id, published FROM widget_list_versions WHERE version_id IN", version_ids)
        return {row.id: row for row in rows}, {v: bool(p) for v, p in versions}

    def pinned_widgets(self, version_id: str) -> set[str]:
        return {w for (w,) in self.db.query("SELECT widget_id FROM widget_list_pins WHERE version_id = ?", [version_id])}

    def write(self, tx: Executor, changes: Changes) -> None:
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

    def with_retention(self) -> list[WidgetRow]:
        """The undeleted widgets that keep personal data for a limited time."""
        rows = [_decode_row(j) for (j,) in self.db.query("SELECT row_json FROM widget_list WHERE deleted = ?", [False])]
        return [r for r in rows if r.retention_days is not None]

    def page(self, organization_id: str, limit: int, cursor: str | None) -> tuple[list[WidgetRow], str | None]:
        """This organization's widgets, newest first, from a cursor."""
        found, next_cursor = self.newest_first("widget_list", "created_at", "organization_id = ? AND deleted = ?",
                                               [organization_id, False], limit, cursor)
        return [_decode_row(r) for r in found], next_cursor

"""Tables for the command line that fit the terminal: one header per column, long values cut with an ellipsis."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

GAP = "  "
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    name: str
    align: str = "<"  # "<" or ">"
    flexible: bool = False  # gives up width (its values cut with an ellipsis) when the row does not fit
    least: int = 6  # a flexible column keeps at least this many characters


UNLIMITED = 1_000_000


def terminal_width() -> int:
    """COLUMNS when set; else the terminal's width; else (output piped to a program or a file) no limit: nothing is
    cut for a reader that is not a person at a terminal."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if not sys.stdout.isatty():
        return UNLIMITED
    return shutil.get_terminal_size((80, 24)).columns


def utc(at: datetime, minutes: bool = False) -> str:
    """A time as the tables show it: RFC 3339 in UTC to the second (20 characters), or to the minute in a column
    whose header says UTC (16)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M" if minutes else "%Y-%m-%dT%H:%M:%SZ")


def cut(value: str, width: int) -> str:
    return value if len(value) <= width else (value[: max(0, width - 1)] + ELLIPSIS if width > 0 else "")


def widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, gap: str = GAP) -> list[int]:
    """Each column's width: as wide as its widest value; when the row is too wide, flexible columns give up width,
    the widest first, down to `least` characters, and then, if still needed, down to their header's width."""
    sizes = [max([len(c.name), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    over = sum(sizes) + len(gap) * (len(sizes) - 1) - width
    for floor_of in (lambda c: max(c.least, len(c.name)), lambda c: len(c.name)):
        while over > 0:
            shrinkable = [i for i, c in enumerate(columns) if c.flexible and sizes[i] > floor_of(c)]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: sizes[i])
            sizes[widest] -= 1
            over -= 1
    return sizes


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None, gap: str = GAP) -> list[str]:
    """The header line and one line per row, each at most `width` characters (the terminal's by default)."""
    width = terminal_width() if width is None else width
    sizes = widths(columns, rows, width, gap)

    def line(values: Sequence[str]) -> str:
        cells = [f"{cut(v, n):{c.align}{n}}" for c, v, n in zip(columns, values, sizes, strict=True)]
        return cut(gap.join(cells).rstrip(), width)

    return [line([c.name for c in columns]), *(line(r) for r in rows)]

"""The command line's tables (api/tables.py): any values at any width fit, one header per column, and a value is cut
only when its row does not fit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.tables import ELLIPSIS, Column, render

values = st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), max_size=80)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[Column], list[list[str]]]:
    n = draw(st.integers(1, 6))
    columns = [Column(f"col{i}", draw(st.sampled_from("<>")), flexible=draw(st.booleans())) for i in range(n)]
    rows = draw(st.lists(st.lists(values, min_size=n, max_size=n), max_size=8))
    return columns, rows


@given(tables(), st.integers(20, 240))
def test_every_line_fits_the_width_with_one_header_per_column(table: tuple[list[Column], list[list[str]]], width: int) -> None:
    columns, rows = table
    lines = render(columns, rows, width)
    assert len(lines) == len(rows) + 1
    assert all(len(line) <= width for line in lines), lines
    header = lines[0].split()
    assert len(header) == len(set(header))


@given(tables())
def test_nothing_is_cut_when_the_terminal_is_wide_enough(table: tuple[list[Column], list[list[str]]]) -> None:
    columns, rows = table
    lines = render(columns, rows, 10_000)
    assert not any(ELLIPSIS in line for line in lines[1:] if ELLIPSIS not in "".join(map("".join, rows)))
    for line, row in zip(lines[1:], rows, strict=True):
        for value in row:
            assert value.strip() in line


def test_a_long_value_is_cut_with_an_ellipsis_in_its_own_column() -> None:
    columns = [Column("version", ">"), Column("type", flexible=True), Column("actor")]
    lines = render(columns, [["1", "widget.identity_key_removed_with_a_very_long_name", "user_1"]], 40)
    assert lines[1].endswith("user_1") and ELLIPSIS in lines[1] and len(lines[1]) <= 40

"""`widgets history` and `widgets stats` at 60 and 200 columns: every line fits, one header per column, long values
cut with an ellipsis rather than spilling into the next column, an empty chart says so, and the stats say whether
the widget is live and why not (issue 31)."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from api.cli import main
from infrastructure.settings import Settings, env_name
from tests.api.conftest import Admin
from tests.api.public_helpers import ALLOWED_HEADERS, live_widget, sync, widget_path

WIDTHS = (60, 200)


def run(settings: Settings, width: int, *args: str) -> list[str]:
    """The command line on the stores of the wiring (its settings, as an operator's environment gives them)."""
    env = {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    result = CliRunner().invoke(main, list(args), env={**env, "COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_history_fits_the_terminal_with_one_header_per_column(
    org_a: Admin, app: Litestar, settings: Settings, width: int
) -> None:
    widget = live_widget(org_a, app)
    org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["a-long-domain-name.example.com", "b.example.org"]})
    lines = run(settings, width, "history", widget["id"])
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    assert lines[0].split() == ["version", "occurred", "at", "type", "actor", "data"]
    types = [line.split()[2] for line in lines[1:]]
    assert all(t.startswith("widget.") for t in types), types  # nothing spilled into the type column
    if width == 200:
        assert "widget.domains_changed" in types and any("a-long-domain-name.example.com" in line for line in lines)
    else:
        assert any("…" in line for line in lines)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_stats_fit_the_terminal_and_say_whether_the_widget_is_live(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings, width: int
) -> None:
    widget = live_widget(org_a, app)
    for _ in range(3):
        assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
    client.blocking_portal.call(app.state.services.installations.flush_now)
    sync(app)
    lines = run(settings, width, "stats", widget["id"], "--days", "3")
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    assert lines[0] == f"widget {widget['id']}: live"
    header = lines[1]
    assert header.split() == ["day", "loads", "refused", "convs", "resumes", "forms", "rated", "avg", "chart"]
    assert "conversations per day: no data" in lines  # no conversation: no chart, said in words

    org_a.call("POST", f"/v1/widgets/{widget['id']}/unpublish")
    assert run(settings, width, "stats", widget["id"])[0].startswith(f"widget {widget['id']}: not live: The widget is not published")

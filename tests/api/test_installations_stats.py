"""Installations and per-day stats: counted on the hot path, exact after a flush, bounded, tenant-isolated."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.installations import CAP
from infrastructure.settings import Settings
from projections.rebuild import rebuild_sql
from projections.verify import verify
from tests.api.conftest import Admin, assert_problem, client_for
from tests.api.public_helpers import (
    ALLOWED,
    ALLOWED_HEADERS,
    REFUSED,
    REFUSED_HEADERS,
    conversation_call,
    eventually,
    live_widget,
    start,
    started,
    sync,
    widget_path,
)
from tests.conftest import ALL_WIRINGS

# The cluster wiring matters most here: the flush runs one script per widget, which a Redis Cluster routes by
# the widget's hash tag (issue 28: on a cluster nothing was ever recorded, and no suite ran there).
pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

HIGH_LIMITS = {"rate_config_reads": "1000000/minute", "rate_conversation_starts": "1000/minute"}


class Clock:
    """An injected wall clock (Unix seconds), moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def flush(client: TestClient[Litestar], app: Litestar) -> None:
    client.blocking_portal.call(app.state.services.installations.flush_now)


def installations(admin: Admin, widget_id: str) -> dict[str, Any]:
    response = admin.call("GET", f"/v1/widgets/{widget_id}/installations")
    assert response.status_code == 200, response.text
    return response.json()


def by_origin(listing: dict[str, Any]) -> dict[tuple[str, bool], dict[str, Any]]:
    return {(i["origin"], i["allowed"]): i for i in listing["items"]}


def stats(admin: Admin, widget_id: str, **query: str) -> dict[str, Any]:
    response = admin.call("GET", f"/v1/widgets/{widget_id}/stats", params=query)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, **HIGH_LIMITS)


@pytest.fixture
def fast_app(fast_settings: Settings) -> Litestar:
    return create_app(fast_settings)


@pytest.fixture
def fast_client(fast_app: Litestar) -> Iterator[TestClient[Litestar]]:
    with client_for(fast_app) as client:
        yield client


@pytest.fixture
def fast_admin(fast_client: TestClient[Litestar], fast_settings: Settings) -> Admin:
    return Admin(fast_client, fast_settings, "org_a", "alice")


def test_installations_list_each_origin_with_its_loads_and_first_and_last_sight(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    clock = Clock(datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    app.state.services.installations.clock = clock
    widget = live_widget(org_a, app)
    first = clock.datetime()
    for _ in range(3):
        assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
        clock.advance(10)
    assert client.get(widget_path(widget["id"]), headers=REFUSED_HEADERS).status_code == 403
    refused_at = clock.datetime()
    clock.advance(5)
    tag = client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).headers["etag"]
    assert client.get(widget_path(widget["id"]), headers={**ALLOWED_HEADERS, "If-None-Match": tag}).status_code == 304
    clock.advance(5)
    started(client, widget["id"])  # a conversation start is a sighting, not a config read
    last = clock.datetime()
    assert client.get(widget_path(widget["id"])).status_code == 403  # no origin: nothing to record
    flush(client, app)

    listing = installations(org_a, widget["id"])
    assert listing["truncated"] is False
    assert [(i["origin"], i["allowed"]) for i in listing["items"]] == [(ALLOWED, True), (REFUSED, False)]
    allowed, refused = listing["items"]
    assert allowed["loads"] == 5
    assert datetime.fromisoformat(allowed["first_seen_at"]) == first
    assert datetime.fromisoformat(allowed["last_seen_at"]) == last
    assert refused["loads"] == 1
    assert datetime.fromisoformat(refused["first_seen_at"]) == refused_at == datetime.fromisoformat(refused["last_seen_at"])
    today = stats(org_a, widget["id"], **{"from": "2026-05-04", "to": "2026-05-04"})["days"]
    assert [(d["date"], d["loads"], d["refused_loads"], d["conversations"]) for d in today] == [("2026-05-04", 5, 1, 0)]


def test_reads_from_two_origins_show_both_in_the_installations_and_in_the_days_loads(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    shop = "https://www.shop.example.org"
    widget = live_widget(org_a, app, domains=["example.com", "*.shop.example.org"])
    for origin, reads in ((ALLOWED, 3), (shop, 2)):
        for _ in range(reads):
            assert client.get(widget_path(widget["id"]), headers={"Origin": origin}).status_code == 200
    flush(client, app)

    found = by_origin(installations(org_a, widget["id"]))
    assert {key: item["loads"] for key, item in found.items()} == {(ALLOWED, True): 3, (shop, True): 2}
    day = stats(org_a, widget["id"])["days"][-1]
    assert (day["loads"], day["refused_loads"]) == (5, 0)


def test_a_refused_conversation_start_is_listed_but_is_not_a_load(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    assert start(client, widget["id"], origin=REFUSED).status_code == 403
    flush(client, app)
    listing = installations(org_a, widget["id"])
    assert [(i["origin"], i["allowed"], i["loads"]) for i in listing["items"]] == [(REFUSED, False, 0)]


def test_counts_are_exact_after_the_flush_interval_across_two_api_workers(org_a: Admin, settings: Settings, client: TestClient[Litestar], app: Litestar) -> None:
    widget = live_widget(org_a, app)
    worker_settings = dataclasses.replace(settings, installations_flush_interval=0.2, **HIGH_LIMITS)
    workers = [create_app(worker_settings), create_app(worker_settings)]
    reads = {0: (7, 2), 1: (5, 3)}
    clients = []
    try:
        for app_n in workers:
            clients.append(client_for(app_n).__enter__())
            sync(app_n)
        for n, (allowed, refused) in reads.items():
            for _ in range(allowed):
                assert clients[n].get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
            for _ in range(refused):
                assert clients[n].get(widget_path(widget["id"]), headers=REFUSED_HEADERS).status_code == 403
        # No explicit flush: each worker hands its counts over on its own within the interval.
        def counted() -> bool:
            found = by_origin(installations(org_a, widget["id"]))
            return found.get((ALLOWED, True), {}).get("loads") == 12 and found.get((REFUSED, False), {}).get("loads") == 5

        eventually(counted, timeout=10, what="both workers' counts")
        day = stats(org_a, widget["id"])["days"][-1]
        assert (day["loads"], day["refused_loads"]) == (12, 5)
    finally:
        for c in clients:
            c.__exit__(None, None, None)
    found = by_origin(installations(org_a, widget["id"]))
    assert (found[(ALLOWED, True)]["loads"], found[(REFUSED, False)]["loads"]) == (12, 5)  # closing added nothing twice


def random_label(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


def test_a_flood_of_600_random_origins_neither_grows_the_list_nor_pushes_out_a_recorded_origin(
    fast_admin: Admin, fast_app: Litestar, fast_client: TestClient[Litestar]
) -> None:
    client, app = fast_client, fast_app
    widget = live_widget(fast_admin, app, domains=["example.com", "*.shop.example.org"])
    counter = app.state.services.installations
    path = widget_path(widget["id"])
    assert client.get(path, headers=ALLOWED_HEADERS).status_code == 200
    assert client.get(path, headers=REFUSED_HEADERS).status_code == 403
    flush(client, app)
    rng = random.Random(17)
    real = {ALLOWED: 1, REFUSED: 1}
    for n in range(600):
        assert client.get(path, headers={"Origin": f"https://{random_label(rng)}.attacker.test"}).status_code == 403
        assert client.get(path, headers={"Origin": f"https://{random_label(rng)}.shop.example.org"}).status_code == 200
        if n % 50 == 0:  # the real sites keep loading during the flood
            assert client.get(path, headers=ALLOWED_HEADERS).status_code == 200
            assert client.get(path, headers=REFUSED_HEADERS).status_code == 403
            real[ALLOWED] += 1
            real[REFUSED] += 1
        if n == 300:
            pending = counter.pending[widget["id"]]
            assert len(pending.allowed) <= CAP and len(pending.refused) <= CAP  # memory is bounded between flushes
            flush(client, app)
    pending = counter.pending[widget["id"]]
    assert len(pending.allowed) <= CAP and len(pending.refused) <= CAP
    flush(client, app)

    listing = installations(fast_admin, widget["id"])
    assert listing["truncated"] is True
    allowed = [i for i in listing["items"] if i["allowed"]]
    refused = [i for i in listing["items"] if not i["allowed"]]
    assert len(allowed) == CAP and len(refused) == CAP
    found = by_origin(listing)
    assert found[(ALLOWED, True)]["loads"] == real[ALLOWED]
    assert found[(REFUSED, False)]["loads"] == real[REFUSED]
    recorded = counter.recorded[widget["id"]]
    assert len(recorded[0]) == CAP and len(recorded[1]) == CAP
    day = stats(fast_admin, widget["id"])["days"][-1]
    assert (day["loads"], day["refused_loads"]) == (600 + real[ALLOWED], 600 + real[REFUSED])  # every read counted


def test_another_organizations_widget_is_404_and_the_scope_is_required(
    org_a: Admin, org_b: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    for rest in ("installations", "stats"):
        assert_problem(org_b.call("GET", f"/v1/widgets/{widget['id']}/{rest}"), 404, "not_found")
        assert_problem(org_a.call("GET", f"/v1/widgets/{uuid.uuid4()}/{rest}"), 404, "not_found")
        response = org_a.call("GET", f"/v1/widgets/{widget['id']}/{rest}", headers=org_a.with_scopes("widgets:write"))
        assert response.status_code == 403, response.text
        assert org_a.call("GET", f"/v1/widgets/{widget['id']}/{rest}", headers={"Authorization": ""}).status_code == 401


@pytest.mark.parametrize(("query", "field"), [
    ({"from": "2026-03-10", "to": "2026-03-09"}, "from"),
    ({"from": "2025-01-01", "to": "2026-01-02"}, "to"),
    ({"from": "2025-03-01", "to": "2026-03-02"}, "to"),
    ({"from": "2026-13-01", "to": "2026-12-31"}, "from"),
    ({"from": "2026-02-30"}, "from"),
    ({"to": "2026-1-5"}, "to"),
    ({"to": "yesterday"}, "to"),
    ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-02"}, "from"),
    ({"from": "２０２６-０３-０１"}, "from"),
])
def test_a_bad_range_is_400_naming_the_field(query: dict[str, str], field: str, org_a: Admin, app: Litestar) -> None:
    widget = org_a.widget()
    response = org_a.call("GET", f"/v1/widgets/{widget['id']}/stats", params=query)
    body = assert_problem(response, 400, "invalid_request")
    assert [e["field"] for e in body["errors"]] == [field]


def test_a_range_of_366_days_answers_every_day(org_a: Admin, app: Litestar) -> None:
    widget = org_a.widget()
    body = stats(org_a, widget["id"], **{"from": "2024-01-01", "to": "2024-12-31"})  # a leap year: 366 days
    assert len(body["days"]) == 366
    assert body["days"][0]["date"] == "2024-01-01" and body["days"][-1]["date"] == "2024-12-31"
    assert all(d["loads"] == 0 and d["conversations"] == 0 and d["feedback"]["average"] is None for d in body["days"])
    assert body["totals"]["feedback"] == {"count": 0, "average": None, "ratings": {"0": 0, "1": 0}}  # thumbs, the default scale


def give_feedback(client: TestClient[Litestar], widget_id: str, grant: dict[str, Any], rating: int) -> None:
    response = conversation_call(client, widget_id, grant["conversation_id"], "feedback",
                                 {"resume_token": grant["resume_token"], "rating": rating})
    assert response.status_code == 202, response.text


def converse(client: TestClient[Litestar], widget_id: str) -> None:
    """Two conversations: one resumed, a form, feedback 4 then 5 (replacing it) on one, 2 on the other."""
    one, two = started(client, widget_id), started(client, widget_id)
    resumed = conversation_call(client, widget_id, one["conversation_id"], "resume", {"resume_token": one["resume_token"]})
    assert resumed.status_code == 200, resumed.text
    one = {**one, "resume_token": resumed.json()["resume_token"]}  # the resume retired the first token
    form = conversation_call(client, widget_id, one["conversation_id"], "forms/pre",
                             {"resume_token": one["resume_token"], "values": {"email": "visitor@example.com"}})
    assert form.status_code == 202, form.text
    give_feedback(client, widget_id, one, 4)
    give_feedback(client, widget_id, one, 5)
    give_feedback(client, widget_id, two, 2)


def test_stats_after_a_rebuild_equal_stats_before_and_verify_finds_no_difference(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    widget = live_widget(org_a, app)
    converse(client, widget["id"])
    sync(app)
    before = stats(org_a, widget["id"])
    totals = before["totals"]
    assert (totals["conversations"], totals["resumes"], totals["forms_submitted"]) == (2, 1, 1)
    assert totals["feedback"] == {"count": 2, "average": 3.5, "ratings": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}}
    services = app.state.services
    rebuild_sql(services.store, services.db, "widget_stats")
    assert stats(org_a, widget["id"]) == before
    differences, checked = verify(settings, services.store, services.db)
    assert "widget_stats" in checked and [d for d in differences if d.model == "widget_stats"] == []


def test_stats_per_day_follow_utc_midnight_on_an_injected_clock(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    import eventsourcing.domain

    clock = Clock(datetime(2026, 3, 1, 23, 59, 58, tzinfo=UTC))
    app.state.services.installations.clock = clock
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", clock.datetime)  # events' timestamps
    widget = live_widget(org_a, app)
    path = widget_path(widget["id"])
    for _ in range(2):
        assert client.get(path, headers=ALLOWED_HEADERS).status_code == 200
    assert client.get(path, headers=REFUSED_HEADERS).status_code == 403
    before_midnight = started(client, widget["id"])
    clock.advance(2.5)  # 00:00:00.5 on March 2nd
    for _ in range(3):
        assert client.get(path, headers=ALLOWED_HEADERS).status_code == 200
    started(client, widget["id"])
    resumed = conversation_call(client, widget["id"], before_midnight["conversation_id"], "resume",
                                {"resume_token": before_midnight["resume_token"]})
    assert resumed.status_code == 200, resumed.text
    give_feedback(client, widget["id"], resumed.json(), 3)
    flush(client, app)
    sync(app)

    body = stats(org_a, widget["id"], **{"from": "2026-02-28", "to": "2026-03-03"})
    figures = [(d["date"], d["loads"], d["refused_loads"], d["conversations"], d["resumes"], d["feedback"]["count"])
               for d in body["days"]]
    assert figures == [
        ("2026-02-28", 0, 0, 0, 0, 0),
        ("2026-03-01", 2, 1, 1, 0, 0),
        ("2026-03-02", 3, 0, 1, 1, 1),
        ("2026-03-03", 0, 0, 0, 0, 0),
    ]
    assert body["totals"]["loads"] == 5 and body["totals"]["conversations"] == 2
    default = stats(org_a, widget["id"])["days"]  # by default the 30 days up to the clock's today
    assert len(default) == 30 and default[-1]["date"] == "2026-03-02"
    assert default[0]["date"] == (datetime(2026, 3, 2) - timedelta(days=29)).date().isoformat()


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_the_cli_prints_the_stats_as_a_table_with_a_bar_per_day(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.cli import main

    widget = live_widget(org_a, app)
    for _ in range(4):
        assert client.get(widget_path(widget["id"]), headers=ALLOWED_HEADERS).status_code == 200
    started(client, widget["id"])
    flush(client, app)
    sync(app)
    monkeypatch.setenv("WIDGETS_DATA_DIR", settings.data_dir)
    result = CliRunner().invoke(main, ["stats", widget["id"], "--days", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    today = datetime.now(UTC).date().isoformat()
    row = next(line for line in lines if line.startswith(today))
    assert row.split()[1:4] == ["4", "0", "1"] and "█" in row
    assert sum(1 for line in lines if line[:4].isdigit()) == 3
    assert any(ALLOWED in line and "allowed" in line for line in lines)
    missing = CliRunner().invoke(main, ["stats", str(uuid.uuid4())])
    assert missing.exit_code != 0 and "No widget" in missing.output


def test_widgets_verify_checks_the_stats_projection_and_names_a_day_that_differs(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings
) -> None:
    from api.cli import main
    from infrastructure.settings import env_name

    widget = live_widget(org_a, app)
    converse(client, widget["id"])
    sync(app)
    env = {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}  # this wiring, as the CLI reads it
    clean = CliRunner().invoke(main, ["verify"], env=env)
    assert clean.exit_code == 0, clean.output
    assert "widget_stats" in clean.output and "0 difference(s)" in clean.output
    day = stats(org_a, widget["id"])["days"][-1]["date"]
    with app.state.services.db.transaction() as tx:  # a day's figure drifts from what the log says
        tx.execute("UPDATE widget_stats_days SET conversations = conversations + 1 WHERE widget_id = ? AND day = ?",
                   [widget["id"], day])
    drifted = CliRunner().invoke(main, ["verify"], env=env)
    assert drifted.exit_code == 1, drifted.output
    lines = [line for line in drifted.output.splitlines() if line.startswith("widget_stats ")]
    assert len(lines) == 1 and widget["id"] in lines[0] and day in lines[0], drifted.output
    assert "1 difference(s)" in drifted.output

"""CI proof that the projection benchmarks still run: tiny sizes, sane numbers, no timing assertions."""

from __future__ import annotations

import math

import pytest

from tests.bench import bench_projections as bench

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def no_leftovers(pg_url: str, redis_url: str, run_id: str) -> None:
    schemas, keys = bench.Scratch(pg_url, redis_url, run_id=run_id).leftovers()
    assert schemas == [] and keys == 0, "the benchmark must drop its schema and Redis keys"


def test_lag_benchmark_runs(pg_server_url: str, redis_server_url: str) -> None:
    results = bench.main(
        ["--quick", "--only", "lag", "--commands", "10", "--widgets", "3", "--rate", "50",
         "--pg", pg_server_url, "--redis", redis_server_url],
        log=lambda _: None,
    )
    for phase in ("serial", "stream"):
        figures = results["lag"][phase]
        assert figures["n"] == 10
        assert all(positive(figures[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "commands_per_s"))
        assert figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert "| serial (wait for each) | 10 |" in results["markdown"]
    no_leftovers(pg_server_url, redis_server_url, results["run_id"])


def test_rebuild_benchmark_runs(pg_server_url: str, redis_server_url: str) -> None:
    results = bench.main(
        ["--quick", "--only", "rebuild", "--sizes", "300,600", "--profile",
         "--pg", pg_server_url, "--redis", redis_server_url],
        log=lambda _: None,
    )
    rows = results["rebuild"]["sizes"]
    assert [row["events_in_log"] for row in rows] == [300, 600]
    for row in rows:
        assert set(row["runs"]) == set(bench.WORKERS)
        for kind, run in row["runs"].items():
            assert run["events"] == run["expected"] > 0, kind  # every event of the projection's topics, once
            assert positive(run["per_s"]) and positive(run["rss_peak_mb"]), kind
            assert run["rss_peak_mb"] >= run["rss_before_mb"], kind
            if kind.startswith("rebuild"):
                assert run["widgets_current"] == run["widgets"] > 0, kind  # the model it built is right
    assert set(results["rebuild"]["profiles"]) == {"rebuild-redis", "rebuild-sql"}
    assert all("cumulative" in text for text in results["rebuild"]["profiles"].values())
    assert "`rebuild_redis`" in results["markdown"] and "Peak RSS" in results["markdown"]
    no_leftovers(pg_server_url, redis_server_url, results["run_id"])

"""CI proof that the webhook benchmark still runs: tiny sizes, every delivery counted, nothing left behind."""

from __future__ import annotations

import math

import psycopg
import pytest

from tests.bench import bench_webhooks as bench

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_webhook_benchmark_runs(pg_server_url: str, redis_server_url: str) -> None:
    results = bench.main(["--quick", "--endpoints", "1,3", "--events", "4", "--burst", "6", "--rate", "20",
                          "--pg", pg_server_url, "--redis", redis_server_url], log=lambda _: None)
    for phase, endpoints in zip(results["lag"], (1, 3), strict=True):
        assert phase["complete"] and phase["deliveries"] == 4 * endpoints
        assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    burst = results["throughput"]
    assert burst["complete"] and burst["deliveries"] == 6 * 10
    assert all(math.isfinite(burst[k]) and burst[k] > 0 for k in ("deliveries_per_s", "projection_events_per_s", "ratio"))
    assert "| 3 | 12 |" in results["markdown"]
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"bench_{results['run_id']}_%"]).fetchall()
    assert left == [], "the benchmark must drop its schema"

"""CI proof that the verified-visitor start benchmark still runs: tiny sizes, sane numbers, no timing assertions."""

from __future__ import annotations

import math

import pytest

from tests.bench import bench_conversations, bench_visitor_tokens

pytestmark = [pytest.mark.postgres]


def test_verified_start_benchmark_runs(pg_server_url: str) -> None:
    results = bench_visitor_tokens.main(["--quick", "--seconds", "0.5", "--slice", "0.1", "--warmup", "5", "--pg", pg_server_url],
                                        log=lambda _: None)
    rows = results["rows"]
    assert set(rows) == {"anonymous", "es256", "eddsa", "verify_es256", "verify_eddsa"}
    for row in rows.values():
        assert row["ops"] > 0 and math.isfinite(row["per_s"]) and row["per_s"] > 0
    assert results["started"] == results["expected_started"]  # every start, verified or not, stored one event
    assert "start with an ES256 visitor token" in results["markdown"] and "target >= 0.8" in results["markdown"]
    assert not bench_conversations.schema_exists(pg_server_url, results["schema"]), "the benchmark must drop its schema"

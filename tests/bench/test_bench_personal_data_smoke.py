"""CI proof that the personal data benchmark still runs: a tiny size, sane numbers, no timing assertions."""

from __future__ import annotations

import math

import pytest

from tests.bench import bench_personal_data as bench

pytestmark = [pytest.mark.postgres]


def test_personal_data_benchmark_runs(pg_server_url: str) -> None:
    results = bench.main(["--quick", "--conversations", "40", "--pg", pg_server_url], log=lambda _: None)
    rows = results["rebuild"]
    assert set(rows) == {"raw", "rebuild_sealed", "rebuild_plain", "decode_opened"}
    assert all(math.isfinite(r["per_s"]) and r["per_s"] > 0 for r in rows.values())
    per = results["rotation"]["per_10k_seconds"]
    assert set(per) == {"rotate", "vacuum_full", "raw_rewrite", "aes_only"} and all(v > 0 for v in per.values())
    assert "vs raw scan" in results["markdown"] and "per 10,000 conversations" in results["markdown"]

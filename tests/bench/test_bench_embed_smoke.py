"""CI proof that the embed benchmark still runs: `--quick` (one run of each), sane figures, no timing assertions."""

from __future__ import annotations

import math

import pytest

from tests.bench import bench_embed

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def test_embed_benchmark_runs() -> None:
    results = bench_embed.main(["--quick"], log=lambda _: None)

    with_snippet, without = results["load"]["with"], results["load"]["without"]
    # Before interaction the snippet adds exactly the loader and the config, both from us.
    assert results["added"]["requests"] == with_snippet["our_requests"] == 2
    assert without["our_requests"] == 0
    assert 0 < with_snippet["our_bytes"] <= 16_000
    for figures in (with_snippet, without):
        assert all(math.isfinite(v) and v >= 0 for v in figures.values()), figures
    assert all(math.isfinite(v) and v > 0 for v in results["open_ms"].values()), results["open_ms"]
    # The long-task observer works: a page running one 120 ms script shows at least that much (x4 throttled).
    assert results["control_long_task_ms"] >= 120
    assert "| click to open panel" in results["markdown"] and "| bytes transferred |" in results["markdown"]

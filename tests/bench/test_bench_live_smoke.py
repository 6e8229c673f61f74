"""CI proof that the live-conversation benchmark still runs: `--quick` (two conversations of each kind), sane figures."""

from __future__ import annotations

import math

import pytest

from tests.bench import bench_live

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def test_live_benchmark_runs() -> None:
    results = bench_live.main(["--quick"], log=lambda _: None)

    for kind in ("reply_lazy", "reply_floor", "audio_lazy", "audio_floor"):
        figures = results["times_ms"][kind]
        assert all(math.isfinite(v) and v > 0 for v in figures.values()), (kind, figures)
    assert all(math.isfinite(v) and v > 0 for r in results["ratios"].values() for v in r.values()), results["ratios"]
    assert results["job"]["max_rss_mb"] > 0
    assert "| first send to the agent's reply on screen |" in results["markdown"]

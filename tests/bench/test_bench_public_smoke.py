"""CI proof that the public-read and conversation benchmarks still run: `--quick` sizes, sane numbers, no timing assertions.

The public-read benchmark needs `wrk`. CI installs it (`apt-get install -y wrk`),
so a machine without it fails here, loudly, rather than skipping.
"""

from __future__ import annotations

import math
import shutil

import pytest

from tests.bench import bench_conversations, bench_public

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(900)]


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed, and the public-read benchmark cannot run without it. "
                    "Install it with `apt-get install -y wrk` (CI does).", pytrace=False)


def test_public_read_benchmark_runs(pg_server_url: str, redis_server_url: str) -> None:
    require_wrk()
    results = bench_public.main(
        ["--quick", "--profile", "--profile-requests", "300", "--pg", pg_server_url, "--redis", redis_server_url],
        log=lambda _: None,
    )
    targets = results["targets"]
    assert set(targets) == {"raw", *(f"{wiring}-{route}" for wiring in ("production", "embedded")
                                     for route in ("healthz", "1", "1000", "preflight"))}
    for key, target in targets.items():
        assert len(target["runs"]) == 1, key
        assert positive(target["rps"]) and positive(target["p99_ms"]) and positive(target["cpu_us"]), (key, target)
        assert target["errors"] == 0 and target["non_2xx"] == 0, (key, target)  # every answer a 200 (204 for the preflight)
    assert positive(results["body_bytes"])
    ratios = results["ratios"]
    for name in ("production, 1 domain / raw ASGI", "production, 1 domain / /healthz", "embedded, 1 domain / raw ASGI",
                 "embedded, 1 domain / /healthz", "production, 1,000 domains / raw ASGI", "production, preflight / raw ASGI",
                 "production, 1,000 domains / 1 domain", "embedded, 1,000 domains / 1 domain"):
        assert positive(ratios[name]["rps_ratio"]) and positive(ratios[name]["cpu_ratio"]), name
        assert positive(ratios[name]["best_cpu_ratio"]), name
    assert all(positive(r) for entry in ratios.values() for r in entry["per_round"])
    assert results["fallbacks"] == 0, "the production server must read Redis (through its cache), not the event store"
    profile = results["profile"]
    assert set(profile["us_per_request"]) == {"raw", "production", "embedded"}
    assert all(positive(us) for us in profile["us_per_request"].values())
    assert all(positive(sum(packages.values())) for packages in profile["packages"].values())
    front = next(label for label in profile["pieces"]["raw"] if "PublicConfigFront.__call__" in label)
    assert positive(profile["pieces"]["production"][front]) and positive(profile["pieces"]["embedded"][front]), \
        "the config reads must be answered by the front (api/hot_path.py), not by Litestar"
    assert "| wiring | route | allowed domains | req/s |" in results["markdown"]
    assert "| production, 1,000 domains / 1 domain |" in results["markdown"]
    assert "In-process ASGI calls" in results["markdown"]
    schemas, keys, folder_left = bench_public.leftovers(pg_server_url, redis_server_url, results["run_id"], results["folder"])
    assert schemas == [] and keys == 0 and not folder_left, "the benchmark must drop its schema, Redis keys and folder"


def test_conversation_benchmark_runs(pg_server_url: str) -> None:
    warmup = 5
    results = bench_conversations.main(
        ["--quick", "--seconds", "0.3", "--warmup", str(warmup), "--profile", "--profile-count", "20", "--pg", pg_server_url],
        log=lambda _: None,
    )
    rows = results["rows"]
    assert list(rows) == ["raw", "raw_libpq", "raw_function", "recorder", "start", "sign", "save", "start_no_ping", "start_plain"]
    for key, row in rows.items():
        assert row["ops"] > 0 and positive(row["per_s"]) and positive(row["cpu_us"]), key
        assert 0 < row["p50_ms"] <= row["p99_ms"], key
    assert positive(results["ratio"]) and positive(results["ratio_paired"])
    assert results["events_per_start"] == 1 and results["state_bytes"] > 0
    # Every timed call stored exactly one row: starts, saves and function calls in the event store, both kinds of
    # raw INSERT in the raw table.
    appended = sum(rows[k]["ops"] + warmup for k in ("raw_function", "recorder", "start", "save", "start_no_ping", "start_plain"))
    assert results["stored"] == {"events": 1 + appended, "raw": rows["raw"]["ops"] + rows["raw_libpq"]["ops"] + 2 * warmup}
    assert "| part of a start | wall ms | share of wall | CPU ms | share of CPU |" in results["profile"]
    assert "| operation | ops/s |" in results["markdown"] and "Ratio `start` / raw INSERT" in results["markdown"]
    assert not bench_conversations.schema_exists(pg_server_url, results["schema"]), "the benchmark must drop its schema"

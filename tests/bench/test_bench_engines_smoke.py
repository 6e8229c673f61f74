"""CI proof that the managed-engine benchmarks still run (issue 15): the public read on a Redis Cluster beside a
single Redis, and conversation starts through PgBouncer. `--quick` sizes, sane numbers, no timing assertions.

The benchmarks start their own Redis Cluster (`redis-server`, `redis-cli`) and PgBouncer (Debian's `pgbouncer`)
and stop them. CI installs both, and `wrk`; a machine without them fails here, loudly, rather than skipping.
"""

from __future__ import annotations

import shutil

import pytest

from tests.bench import bench_conversations, bench_public
from tests.bench.test_bench_public_smoke import positive, require_wrk

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(900)]


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not shutil.which(p, path="/usr/sbin")]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed, and this benchmark cannot run without it "
                    "(apt-get install -y redis-server pgbouncer; CI does).", pytrace=False)


def test_public_read_on_a_redis_cluster_runs(pg_server_url: str, redis_server_url: str) -> None:
    require_wrk()
    require("redis-server", "redis-cli")
    results = bench_public.main(["--quick", "--cluster", "--wirings", "production", "--pg", pg_server_url,
                                 "--redis", redis_server_url], log=lambda _: None)
    targets = results["targets"]
    assert set(targets) == {"raw", *(f"{wiring}-{route}" for wiring in ("production", "cluster")
                                     for route in ("healthz", "1", "1000", "preflight"))}
    for key, target in targets.items():
        assert positive(target["rps"]) and positive(target["cpu_us"]), (key, target)
        assert target["errors"] == 0 and target["non_2xx"] == 0, (key, target)
    ratios = results["ratios"]
    for name in ("cluster / production (single Redis), 1 domain", "cluster / production (single Redis), 1,000 domains",
                 "cluster, 1 domain / /healthz", "cluster, 1 domain / raw ASGI"):
        assert positive(ratios[name]["cpu_ratio"]) and positive(ratios[name]["rps_ratio"]), name
    assert results["fallbacks_by_wiring"] == {"production": 0, "cluster": 0}, \
        "both servers must read Redis (through their cache), not the event store"
    assert results["cluster_url"].startswith("redis+cluster://")
    assert "| cluster / production (single Redis), 1 domain |" in results["markdown"]
    for run_id in (results["run_id"], results["cluster_run_id"]):  # the cluster is gone: its keys with it
        schemas, keys, folder_left = bench_public.leftovers(pg_server_url, redis_server_url, run_id, results["folder"])
        assert schemas == [] and keys == 0 and not folder_left, "the benchmark must drop its schemas, keys and folder"


def test_conversation_starts_through_pgbouncer_run(pg_server_url: str) -> None:
    require("pgbouncer")
    warmup = 5
    results = bench_conversations.main(["--quick", "--pooler", "--seconds", "0.3", "--warmup", str(warmup),
                                        "--pg", pg_server_url], log=lambda _: None)
    rows = results["rows"]
    assert list(rows) == ["raw", "raw_libpq", "raw_function", "recorder", "start", "sign", "save", "start_no_ping",
                          "start_plain", "raw_direct", "start_direct"]
    for key, row in rows.items():
        assert row["ops"] > 0 and positive(row["per_s"]) and positive(row["cpu_us"]), key
    assert results["pooler"] and positive(results["ratio"])
    # Every call stored exactly one row, through the pooler or directly.
    starts = ("raw_function", "recorder", "start", "save", "start_no_ping", "start_plain", "start_direct")
    raws = ("raw", "raw_libpq", "raw_direct")
    assert results["stored"] == {"events": 1 + sum(rows[k]["ops"] + warmup for k in starts),
                                 "raw": sum(rows[k]["ops"] + warmup for k in raws)}
    assert "through PgBouncer" in results["markdown"] and "The pooler's own cost" in results["markdown"]
    assert not bench_conversations.schema_exists(pg_server_url, results["schema"]), "the benchmark must drop its schema"

"""Projection benchmarks (issue 3): lag, rebuild throughput beside a raw scan, rebuild peak memory.

    uv run python -m tests.bench.bench_projections            # full: 1,000 commands; 100k and 1M events
    uv run python -m tests.bench.bench_projections --quick    # small: 100 commands; 1k and 2k events
    uv run python -m tests.bench.bench_projections --profile  # also cProfile both rebuilds at the first size

These are measurements, not tests: they print figures, ratios and a Markdown
block for the README, and assert nothing about time. Every run works in a fresh
PostgreSQL schema and a fresh Redis key prefix, and drops both at the end.

1. Lag: `widgets project` runs in its own process (LISTEN/NOTIFY driven, no
   GIL shared with the issuer). Each command is a real domain command saved
   with `store.save`; the clock starts when `save` returns and stops when
   polling the widget's Redis key shows the saved version. Two phases: serial
   (the next command waits until the previous one is visible) and a paced
   stream (open loop at `--rate` commands/s, a poller thread watching every
   outstanding command).
2. Throughput: each of raw `SELECT` + `json.loads` (streamed, and paged by 500
   like the runner), the library's own decode (`select_notifications` +
   `mapper.to_domain_event`), `rebuild_redis` and `rebuild_sql` runs in a fresh
   subprocess over the same rows (the projection's topics).
3. Memory: that subprocess reports `ru_maxrss` (peak RSS) before and after the
   work, so the same runs give the memory figures.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import PRODUCTION_SECRETS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS = os.environ.get("WIDGETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ORG = "org_bench"
ACTOR = "bench"
POLL_INTERVAL = 0.0005  # 0.5 ms between polls of a Redis key: the lag figures' resolution
LAG_TARGET_P99_MS = 100.0
RATIO_TARGET = 0.25
WORKERS = ("raw-stream", "raw-paged", "decode", "rebuild-redis", "rebuild-sql")


# --------------------------------------------------------------------------------------------
# Scratch space: a fresh schema and key prefix, always cleaned up


@dataclass
class Scratch:
    pg_url: str
    redis_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    schemas: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """Every Redis key this run writes starts with this."""
        return f"bench{self.run_id}:"

    def schema(self, name: str) -> str:
        import psycopg

        schema = f"bench_{self.run_id}_{name}"
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return schema

    def store(self, schema: str) -> Any:
        from application.store import EventStore
        from infrastructure.eventstore import postgres_env

        return EventStore(env=postgres_env(self.pg_url, pool_size=4, schema=schema))

    def cleanup(self) -> None:
        import psycopg
        import redis

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.schemas.clear()
        client = redis.Redis.from_url(self.redis_url)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
        finally:
            client.close()

    def leftovers(self) -> tuple[list[str], int]:
        """Schemas and Redis keys of this run still present (for the smoke test)."""
        import psycopg
        import redis

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"bench_{self.run_id}_%"]
            ).fetchall()
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = sum(1 for _ in client.scan_iter(match=f"{self.prefix}*", count=1000))
        finally:
            client.close()
        return [r[0] for r in rows], keys


# --------------------------------------------------------------------------------------------
# Producing events quickly, through the application's aggregates and store


def base_config() -> dict[str, Any]:
    from domain.config import config_to_builtins, parse_config

    return config_to_builtins(parse_config({}))


class EventGenerator:
    """One agent with a published version, `widgets` published widgets, then many changes.

    Changes go through the aggregates' event methods with pre-validated values
    (parse_config costs ~1 ms, which would make generation the bottleneck) and
    are saved `batch_widgets` aggregates at a time with `store.save(*aggregates)`.
    Snapshotting stays on, as in production.
    """

    def __init__(self, store: Any, widgets: int, per_round: int = 10, batch_widgets: int = 100) -> None:
        from domain.agent import Agent
        from domain.domains import AllowedDomains
        from domain.widget import Widget

        self.store = store
        self.per_round = per_round
        self.batch_widgets = batch_widgets
        base = base_config()
        self.configs = []
        for i in range(16):
            cfg = copy.deepcopy(base)
            cfg["v1"]["text"]["welcome_message"] = f"Hello from variant {i}: how can we help you today?"
            self.configs.append(cfg)
        self.domain_sets = [
            ["example.com", "*.example.org"],
            ["example.com", "shop.example.net:8443", "https://*.example.io"],
            ["localhost:3000", "example.com"],
        ]
        agent = Agent(id=uuid.uuid4(), organization_id=ORG, name="Bench agent", actor=ACTOR)
        self.version_id = uuid.uuid4()
        agent.create_version(self.version_id, "v1", ACTOR)
        agent.publish_version(self.version_id, ACTOR)
        self.agent = agent
        domains = AllowedDomains.parse(self.domain_sets[0])
        from domain.config import parse_config

        parsed = parse_config({})
        self.widgets = []
        for _ in range(widgets):
            widget = Widget.start(ORG, agent.id, self.version_id, domains, parsed, ACTOR)
            widget.publish(True, ACTOR)
            self.widgets.append(widget)
        self.counter = 0
        self.saved = 0
        for start in range(0, len(self.widgets), self.batch_widgets):
            chunk = self.widgets[start : start + self.batch_widgets]
            self.store.save(*([agent] if start == 0 else []), *chunk)
        self.saved = self.store.recorder.max_notification_id() or 0

    def _change(self, widget: Any) -> None:
        c = self.counter
        self.counter += 1
        if c % 50 == 25:
            if widget.published:
                widget._unpublished(actor=ACTOR)
            else:
                widget._published(actor=ACTOR)
        elif c % 8 == 7:
            widget._domains_changed(domains=self.domain_sets[c % 3], added=[], removed=[], actor=ACTOR)
        else:
            widget._config_changed(
                config=self.configs[c % len(self.configs)], changed_paths=["v1.text.welcome_message"], actor=ACTOR
            )

    def grow_to(self, total: int, deadline: float | None = None, report: Callable[[str], None] | None = None) -> int:
        """Save changes until the log holds `total` events (or the deadline passes); returns the count."""
        started, first = time.perf_counter(), self.saved
        last_report = started
        position = 0
        while self.saved < total:
            if deadline is not None and time.perf_counter() > deadline:
                break
            chunk = self.widgets[position : position + self.batch_widgets] or self.widgets[: self.batch_widgets]
            position = (position + self.batch_widgets) % len(self.widgets)
            count = min(total - self.saved, len(chunk) * self.per_round)
            for i in range(count):
                self._change(chunk[i % len(chunk)])
            self.store.save(*chunk)
            self.saved += count
            now = time.perf_counter()
            if report and now - last_report > 10:
                rate = (self.saved - first) / (now - started)
                report(f"  generated {self.saved:,} events ({rate:,.0f}/s)")
                last_report = now
        return self.saved


# --------------------------------------------------------------------------------------------
# 1. Projection lag


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summarise(lags: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in lags]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), to report the projector's CPU per command."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Projector:
    """`widgets project` in its own process (the default), or a ProjectionRunner thread in this one."""

    def __init__(self, scratch: Scratch, schema: str, prefix: str, mode: str) -> None:
        self.mode = mode
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(f"/tmp/bench-projector-{scratch.run_id}.log")
        if mode == "process":
            env = {
                **os.environ,
                "WIDGETS_DATABASE_URL": scratch.pg_url,
                "WIDGETS_DATABASE_SCHEMA": schema,
                "WIDGETS_REDIS_URL": scratch.redis_url,
                "WIDGETS_REDIS_PREFIX": prefix,
                "WIDGETS_PG_POOL_SIZE": "4",
                "WIDGETS_LOG_LEVEL": "warning",
                "WIDGETS_LOG_FORMAT": "json",
                "WIDGETS_AUTH_SECRET": PRODUCTION_SECRETS["auth_secret"],
                "WIDGETS_DATA_KEY": PRODUCTION_SECRETS["data_key"],
            }
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "api.cli", "project"], cwd=ROOT, env=env, stdout=log, stderr=log
                )
        else:
            import redis

            from projections.public_views import RedisPublicView, current_generation
            from projections.runner import ProjectionRunner

            self.store = scratch.store(schema)
            self.client = redis.Redis.from_url(scratch.redis_url)
            view = RedisPublicView(self.client, prefix, current_generation(self.client, prefix))
            self.runner = ProjectionRunner("public_lookup", self.store, view)
            self.runner.start()

    def cpu_seconds(self) -> float:
        if self.proc is not None:
            return process_cpu_seconds(self.proc.pid)
        return float("nan")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the projector exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log_path.unlink(missing_ok=True)
        else:
            self.runner.stop()
            self.store.close()
            self.client.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, check: Callable[[], None] | None = None) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if check:
            check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


def bench_lag(
    scratch: Scratch,
    commands: int = 1000,
    widgets: int = 100,
    rate: float = 100.0,
    warmup: int = 20,
    projector: str = "process",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    import redis

    from domain.config import parse_config
    from projections.public_entry import decode_entry
    from projections.public_views import RedisKeys

    schema = scratch.schema("lag")
    prefix = f"{scratch.prefix}lag:"
    store = scratch.store(schema)
    client = redis.Redis.from_url(scratch.redis_url)
    generator = EventGenerator(store, widgets=widgets)
    ids = [w.id for w in generator.widgets]
    # Validated configs, prepared before the clock starts: each command is a real change_config.
    variants = []
    for i in range(20):
        raw = copy.deepcopy(generator.configs[0])
        raw["v1"]["text"]["welcome_message"] = f"Lag probe {i}"
        variants.append(parse_config(raw))
    runner = Projector(scratch, schema, prefix, projector)
    try:
        target = store.recorder.max_notification_id() or 0

        def caught_up() -> bool:
            generation = int(client.get(RedisKeys(prefix, 0).current) or 1)
            return int(client.get(RedisKeys(prefix, generation).position) or 0) >= target

        wait_until(caught_up, 120, "the projector's initial catch-up", runner.check)
        generation = int(client.get(RedisKeys(prefix, 0).current) or 1)
        keys = RedisKeys(prefix, generation)

        def command(i: int) -> tuple[str, int, float]:
            widget_id = ids[i % len(ids)]
            widget = store.repository.get(widget_id)
            widget.change_config(variants[i % len(variants)], ACTOR)
            store.save(widget)
            committed = time.perf_counter()
            return keys.widget(str(widget_id)), widget.version, committed

        def visible(key: str, version: int) -> bool:
            data = client.get(key)
            return data is not None and decode_entry(data).row.version >= version

        # Serial: each command waits until the previous one is visible.
        lags: list[float] = []
        cpu_before = runner.cpu_seconds()
        serial_started = time.perf_counter()
        for i in range(warmup + commands):
            key, version, committed = command(i)
            deadline = committed + 30
            while not visible(key, version):
                if time.perf_counter() > deadline:
                    runner.check()
                    raise TimeoutError(f"command {i} not visible after 30 s")
                time.sleep(POLL_INTERVAL)
            if i >= warmup:
                lags.append(time.perf_counter() - committed)
        serial_elapsed = time.perf_counter() - serial_started
        serial = summarise(lags)
        serial["cpu_ms_per_command"] = (runner.cpu_seconds() - cpu_before) * 1000 / (warmup + commands)
        serial["commands_per_s"] = (warmup + commands) / serial_elapsed
        log(f"  serial: {_lag_line(serial)}")

        # Paced stream: the issuer does not wait; a poller thread watches every outstanding command.
        pending: list[tuple[str, int, float]] = []
        stream_lags: list[float] = []
        lock = threading.Lock()
        issued = threading.Event()
        failure: list[BaseException] = []

        def poll() -> None:
            try:
                deadline = None
                while True:
                    with lock:
                        outstanding = list(pending)
                    if not outstanding:
                        if issued.is_set():
                            return
                        time.sleep(POLL_INTERVAL)
                        continue
                    values = client.mget([k for k, _, _ in outstanding])
                    now = time.perf_counter()
                    done = set()
                    for (key, version, committed), data in zip(outstanding, values):
                        if data is not None and decode_entry(data).row.version >= version:
                            stream_lags.append(now - committed)
                            done.add((key, version, committed))
                    if done:
                        with lock:
                            pending[:] = [p for p in pending if p not in done]
                    if issued.is_set():
                        deadline = deadline or now + 60
                        if now > deadline:
                            raise TimeoutError(f"{len(outstanding)} stream commands not visible after 60 s")
                    time.sleep(POLL_INTERVAL)
            except BaseException as error:  # noqa: BLE001 (handed to the issuing thread, which re-raises it)
                failure.append(error)

        poller = threading.Thread(target=poll, name="bench-poller", daemon=True)
        poller.start()
        cpu_before = runner.cpu_seconds()
        started = time.perf_counter()
        try:
            for n in range(commands):
                due = started + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                record = command(warmup + commands + n)
                with lock:
                    pending.append(record)
                if failure:
                    break
        finally:
            issued.set()
        issue_elapsed = time.perf_counter() - started
        poller.join(timeout=90)
        if failure:
            raise failure[0]
        stream = summarise(stream_lags)
        stream["rate_asked"] = rate
        stream["commands_per_s"] = commands / issue_elapsed
        stream["cpu_ms_per_command"] = (runner.cpu_seconds() - cpu_before) * 1000 / commands
        log(f"  stream: {_lag_line(stream)}")
        return {"serial": serial, "stream": stream, "widgets": widgets, "projector": projector}
    finally:
        runner.stop()
        client.close()
        store.close()


def _lag_line(r: dict[str, float]) -> str:
    return (
        f"n={r['n']} p50={r['p50_ms']:.1f} ms p90={r['p90_ms']:.1f} ms p99={r['p99_ms']:.1f} ms "
        f"max={r['max_ms']:.1f} ms, {r['commands_per_s']:.0f} cmd/s, projector CPU {r['cpu_ms_per_command']:.2f} ms/cmd"
    )


# --------------------------------------------------------------------------------------------
# 2 and 3. Rebuild throughput and peak memory: each measurement in a fresh subprocess


def run_worker(scratch: Scratch, kind: str, schema: str, prefix: str, profile: bool = False) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "tests.bench.bench_projections", "--worker", kind,
        "--pg", scratch.pg_url, "--redis", scratch.redis_url, "--schema", schema, "--prefix", prefix,
    ]
    if profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    result = json.loads(next(line for line in reversed(lines) if line.startswith("RESULT "))[len("RESULT "):])
    result["output"] = "\n".join(line for line in lines if not line.startswith("RESULT "))
    return result


def worker(kind: str, pg_url: str, redis_url: str, schema: str, prefix: str, profile: bool) -> dict[str, Any]:
    """Runs in a fresh process: one measurement, with the peak RSS before and after it."""
    import psycopg

    from projections.widget_rows import WidgetRowsProjection

    topics = list(WidgetRowsProjection.topics)
    table = f'"{schema}"."widgets_events"'
    store = None
    if kind in ("decode", "rebuild-redis", "rebuild-sql"):
        import redis  # noqa: F401  (imported before the baseline reading, like the store)

        from application.store import EventStore
        from infrastructure.eventstore import postgres_env
        from projections import rebuild  # noqa: F401

        store = EventStore(env=postgres_env(pg_url, pool_size=4, schema=schema))
    with psycopg.connect(pg_url) as conn:
        (expected,) = conn.execute(f"SELECT count(*) FROM {table} WHERE topic = ANY(%s)", [topics]).fetchone()
    applied = {"total": 0, "last": 0}
    pages: list[tuple[float, int]] = []  # (time, events so far): the rate early and late in one run

    def on_page(_position: int, count: int) -> None:  # runner.catch_up's count restarts on each pass
        if count < applied["last"]:
            applied["last"] = 0
        applied["total"] += count - applied["last"]
        applied["last"] = count
        pages.append((time.perf_counter(), applied["total"]))

    def work() -> int:
        if kind == "raw-stream":
            with psycopg.connect(pg_url) as conn, conn.cursor(name="bench_raw") as cur:
                cur.execute(
                    f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table}"
                    " WHERE topic = ANY(%s) ORDER BY notification_id",
                    [topics],
                )
                n = 0
                while rows := cur.fetchmany(2000):
                    for row in rows:
                        json.loads(row[4])
                    n += len(rows)
                return n
        if kind == "raw-paged":
            n, last = 0, 0
            with psycopg.connect(pg_url) as conn:
                while True:
                    rows = conn.execute(
                        f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table}"
                        " WHERE notification_id > %s AND topic = ANY(%s) ORDER BY notification_id LIMIT 500",
                        [last, topics],
                    ).fetchall()
                    for row in rows:
                        json.loads(row[4])
                    n += len(rows)
                    if len(rows) < 500:
                        return n
                    last = rows[-1][0]
        assert store is not None
        if kind == "decode":
            n, start = 0, 1
            stop = store.recorder.max_notification_id() or 0
            while start <= stop:
                page = store.recorder.select_notifications(start=start, limit=500, stop=stop, topics=topics)
                for notification in page:
                    store.mapper.to_domain_event(notification)
                n += len(page)
                if len(page) < 500:
                    return n
                start = page[-1].id + 1
            return n
        if kind == "rebuild-redis":
            import redis

            from projections.rebuild import rebuild_redis

            client = redis.Redis.from_url(redis_url)
            try:
                rebuild_redis(store, client, prefix, on_page=on_page, grace=0.0)
            finally:
                client.close()
            return applied["total"]
        if kind == "rebuild-sql":
            import inspect

            from infrastructure.settings import Settings
            from infrastructure.sql import Database
            from projections.rebuild import rebuild_sql

            db = Database(Settings(database_url=pg_url, database_schema=schema))
            # The widget list (the admin list model); newer code takes the SQL model's name.
            named = {"name": "widget_list"} if "name" in inspect.signature(rebuild_sql).parameters else {}
            try:
                rebuild_sql(store, db, on_page=on_page, **named)
            finally:
                db.close()
            return applied["total"]
        raise SystemExit(f"unknown worker {kind}")

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    events = work()
    seconds = time.perf_counter() - started
    if profiler is not None:
        import pstats

        profiler.disable()
        for order in ("cumulative", "tottime"):
            print(f"--- cProfile of {kind} over {events:,} events, sorted by {order} ---")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats(order).print_stats(25)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pages.insert(0, (started, 0))
    check = {**decile_rates(pages), **(verify(kind, pg_url, redis_url, schema, prefix) if kind.startswith("rebuild") else {})}
    if store is not None:
        store.close()
    return {
        "kind": kind,
        "events": events,
        "expected": expected,
        "seconds": seconds,
        "per_s": events / seconds if seconds > 0 else float("nan"),
        "rss_before_mb": rss_before / 1024,  # ru_maxrss is in KiB on Linux
        "rss_peak_mb": rss_after / 1024,
        "profiled": profile,
        **check,
    }


def decile_rates(pages: list[tuple[float, int]]) -> dict[str, float]:
    """Events/s over the first and the last 10% of a rebuild's events (flat if the cost per event does not grow)."""
    total = pages[-1][1]
    if len(pages) < 4 or total < 10:
        return {}

    def at(events: float) -> float:  # time at which `events` had been applied (linear within a page)
        for (t0, n0), (t1, n1) in itertools.pairwise(pages):
            if n1 >= events:
                return t0 + (t1 - t0) * ((events - n0) / (n1 - n0) if n1 > n0 else 1.0)
        return pages[-1][0]

    tenth = total / 10
    return {"first_tenth_per_s": tenth / max(1e-9, at(tenth) - at(0)),
            "last_tenth_per_s": tenth / max(1e-9, at(total) - at(total - tenth))}


def verify(kind: str, pg_url: str, redis_url: str, schema: str, prefix: str) -> dict[str, Any]:
    """After a rebuild: every widget is in the model at its latest version (outside the timing)."""
    import psycopg

    with psycopg.connect(pg_url) as conn:
        latest = {
            str(oid): version
            for oid, version in conn.execute(
                f'SELECT originator_id, max(originator_version) FROM "{schema}"."widgets_events"'
                " WHERE topic LIKE 'widget.%%' GROUP BY originator_id"
            ).fetchall()
        }
        if kind == "rebuild-sql":
            conn.execute(f'SET search_path = "{schema}"')
            import msgspec

            from projections.widget_rows import WidgetRow

            rows = [msgspec.json.decode(r[0], type=WidgetRow) for r in conn.execute("SELECT row_json FROM widget_list")]
            found = {r.id: r.version for r in rows}
    if kind == "rebuild-redis":
        import redis

        from projections.public_entry import decode_entry
        from projections.public_views import RedisKeys, current_generation

        client = redis.Redis.from_url(redis_url)
        try:
            keys = RedisKeys(prefix, current_generation(client, prefix))
            ids = sorted(latest)
            values = client.mget([keys.widget(i) for i in ids]) if ids else []
            found = {i: decode_entry(v).row.version for i, v in zip(ids, values) if v is not None}
        finally:
            client.close()
    matching = sum(1 for i, v in latest.items() if found.get(i) == v)
    return {"widgets": len(latest), "widgets_current": matching}


def bench_rebuild(
    scratch: Scratch,
    sizes: Sequence[int],
    widgets: int | None = None,
    gen_budget: float = 300.0,
    profile: bool = False,
    workers: Sequence[str] = WORKERS,
    analyze: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    schema = scratch.schema("rebuild")
    store = scratch.store(schema)
    results: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    notes: list[str] = []
    generation: list[dict[str, Any]] = []
    try:
        widgets = widgets or max(10, min(1000, sizes[0] // 100))
        started = time.perf_counter()
        generator = EventGenerator(store, widgets=widgets)
        spent = time.perf_counter() - started  # the budget counts generation only, not the measurements
        for index, size in enumerate(sorted(sizes)):
            before, t0 = generator.saved, time.perf_counter()
            reached = generator.grow_to(size, deadline=t0 + max(0.0, gen_budget - spent), report=log)
            elapsed = time.perf_counter() - t0
            spent += elapsed
            generation.append({"size": size, "reached": reached, "seconds": elapsed,
                               "per_s": (reached - before) / elapsed if elapsed else float("nan")})
            log(f"generated {reached:,} events ({widgets:,} widgets): {reached - before:,} in {elapsed:.1f} s "
                f"({generation[-1]['per_s']:,.0f} events/s)")
            if analyze:
                # As autovacuum would have done on a table in service. Without it (--stale-stats) the planner,
                # with no statistics for a freshly filled table, turns the runner's page query into a bitmap
                # scan of the whole remaining range, so every page costs O(rows left).
                import psycopg

                with psycopg.connect(scratch.pg_url, autocommit=True) as conn:
                    conn.execute(f'ANALYZE "{schema}"."widgets_events"')
            if reached < size:
                note = (f"generation stopped at {reached:,} of {size:,} events: its {gen_budget:.0f} s budget ran out "
                        f"({generation[-1]['per_s']:,.0f} events/s); figures are for {reached:,} events")
                notes.append(note)
                log("NOTE: " + note)
            if index > 0 and reached <= results[-1]["events_in_log"]:
                break
            row: dict[str, Any] = {"size": size, "events_in_log": reached, "runs": {}}
            for kind in workers:
                result = run_worker(scratch, kind, schema, f"{scratch.prefix}{kind}{size}:")
                row["runs"][kind] = result
                log(f"  {kind:14} {result['events']:>10,} events {result['seconds']:8.2f} s "
                    f"{result['per_s']:>10,.0f}/s  peak RSS {result['rss_peak_mb']:.0f} MB "
                    f"(before {result['rss_before_mb']:.0f} MB)"
                    + (f"  widgets current {result['widgets_current']}/{result['widgets']}" if "widgets" in result else "")
                    + (f"  first/last 10%: {result['first_tenth_per_s']:,.0f}/{result['last_tenth_per_s']:,.0f} per s"
                       if "first_tenth_per_s" in result else ""))
            results.append(row)
            if profile and index == 0:
                for kind in ("rebuild-redis", "rebuild-sql"):
                    if kind in workers:
                        profiles[kind] = run_worker(scratch, kind, schema, f"{scratch.prefix}prof{kind}:", profile=True)["output"]
    finally:
        store.close()
    return {"sizes": results, "profiles": profiles, "notes": notes, "generation": generation, "widgets": widgets}


# --------------------------------------------------------------------------------------------
# Report


def ratio(run: dict[str, Any], base: dict[str, Any]) -> float:
    return run["per_s"] / base["per_s"] if base["per_s"] else float("nan")


def markdown(lag: dict[str, Any] | None, rebuild: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    out = [
        (f"Measured with `{meta['command']}` on {meta['machine']} ({meta['date']}; "
         f"1-minute load average {meta['load_start']:.1f} at the start, {meta['load_end']:.1f} at the end)."),
        ("Lag is the time from `store.save` returning to the widget's Redis key showing that version "
         f"(polled every {POLL_INTERVAL * 1000:.1f} ms), with `widgets project` in its own process."),
        "",
    ]
    if lag:
        out += [
            f"| Projection lag ({lag['widgets']} widgets) | Commands | p50 | p90 | p99 | max | Projector CPU/cmd | Target |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, label in (("serial", "serial (wait for each)"),
                            ("stream", f"stream ({lag['stream']['commands_per_s']:.0f} cmd/s, open loop)")):
            r = lag[name]
            ok = "met" if r["p99_ms"] < LAG_TARGET_P99_MS else "MISSED"
            out.append(
                f"| {label} | {r['n']:,} | {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
                f"{r['max_ms']:.1f} ms | {r['cpu_ms_per_command']:.2f} ms | p99 < {LAG_TARGET_P99_MS:.0f} ms: {ok} |"
            )
        out.append("")
    if rebuild:
        out += [
            "| Replay of N events | N | events/s | vs raw SELECT + json.loads | Peak RSS (start) | Widgets correct |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        labels = {
            "raw-stream": "raw SELECT + json.loads (server cursor)",
            "raw-paged": "raw SELECT + json.loads (pages of 500)",
            "decode": "library decode (select_notifications + to_domain_event)",
            "rebuild-redis": "`rebuild_redis`",
            "rebuild-sql": "`rebuild_sql`",
        }
        for row in rebuild["sizes"]:
            base = row["runs"].get("raw-stream")
            for kind, run in row["runs"].items():
                r = f"{ratio(run, base):.2f}" if base else "–"
                if kind.startswith("rebuild") and base:
                    r += " (target ≥ 0.25: " + ("met" if ratio(run, base) >= RATIO_TARGET else "MISSED") + ")"
                correct = f"{run['widgets_current']}/{run['widgets']}" if "widgets" in run else ""
                out.append(
                    f"| {labels[kind]} | {run['events']:,} | {run['per_s']:,.0f} | {r} | "
                    f"{run['rss_peak_mb']:.0f} MB ({run['rss_before_mb']:.0f} MB) | {correct} |"
                )
        sizes = rebuild["sizes"]
        if len(sizes) >= 2:
            out += ["", "| Peak RSS, smallest → largest N | " + " → ".join(f"{s['events_in_log']:,}" for s in (sizes[0], sizes[-1]))
                    + " events | growth |", "|---|---|---:|"]
            for kind in ("rebuild-redis", "rebuild-sql"):
                if kind in sizes[0]["runs"] and kind in sizes[-1]["runs"]:
                    a, b = sizes[0]["runs"][kind], sizes[-1]["runs"][kind]
                    out.append(f"| {labels[kind]} | {a['rss_peak_mb']:.0f} MB → {b['rss_peak_mb']:.0f} MB | "
                               f"{b['rss_peak_mb'] / a['rss_peak_mb']:.2f}× |")
        late = [(row, kind, row["runs"][kind]) for row in sizes for kind in ("rebuild-redis", "rebuild-sql")
                if "first_tenth_per_s" in row["runs"].get(kind, {})]
        if late:
            out += ["", "| Within one rebuild | N | events/s, first 10% | events/s, last 10% | last / first |",
                    "|---|---:|---:|---:|---:|"]
            for row, kind, run in late:
                out.append(f"| {labels[kind]} | {run['events']:,} | {run['first_tenth_per_s']:,.0f} | "
                           f"{run['last_tenth_per_s']:,.0f} | {run['last_tenth_per_s'] / run['first_tenth_per_s']:.2f} |")
        for note in rebuild["notes"]:
            out += ["", f"Note: {note}."]
        if not meta.get("analyzed", True):
            out += ["", "Note: run with --stale-stats: `widgets_events` was never analyzed before the rebuilds."]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.bench_projections", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (100 commands; 1,000 and 2,000 events)")
    p.add_argument("--only", choices=("lag", "rebuild"), help="run one benchmark")
    p.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (WIDGETS_TEST_DATABASE_URL)")
    p.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (WIDGETS_TEST_REDIS_URL)")
    p.add_argument("--commands", type=int, help="lag: commands per phase (1,000; quick 100)")
    p.add_argument("--widgets", type=int, help="lag: widgets the commands go round (100; quick 10)")
    p.add_argument("--rate", type=float, default=100.0, help="lag: stream phase commands/s (100)")
    p.add_argument("--projector", choices=("process", "thread"), default="process",
                   help="lag: `widgets project` in a process (default) or a runner thread in this process")
    p.add_argument("--sizes", help="rebuild: comma-separated event counts (100000,1000000; quick 1000,2000)")
    p.add_argument("--gen-budget", type=float, default=300.0, help="rebuild: seconds allowed for generating events (300)")
    p.add_argument("--profile", action="store_true", help="rebuild: also cProfile both rebuilds at the first size")
    p.add_argument("--stale-stats", action="store_true",
                   help="rebuild: skip ANALYZE after generating (shows the page query on a never-analyzed table)")
    p.add_argument("--json", help="also write every figure to this file")
    # Internal: one measurement in a fresh process.
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--schema", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.pg, args.redis, args.schema, args.prefix, args.profile)
        print("RESULT " + json.dumps(result), flush=True)
        return result
    commands = args.commands or (100 if args.quick else 1000)
    widgets = args.widgets or (10 if args.quick else 100)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([1000, 2000] if args.quick else [100_000, 1_000_000])
    scratch = Scratch(args.pg, args.redis)
    meta = {
        "command": "uv run python -m tests.bench.bench_projections" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "date": time.strftime("%Y-%m-%d"),
        "load_start": os.getloadavg()[0],
        "analyzed": not args.stale_stats,
    }
    lag = rebuild = None
    try:
        if args.only in (None, "lag"):
            log(f"# Projection lag: {commands:,} commands serial, then {commands:,} at {args.rate:.0f}/s ({args.projector})")
            lag = bench_lag(scratch, commands=commands, widgets=widgets, rate=args.rate,
                            warmup=min(20, commands), projector=args.projector, log=log)
        if args.only in (None, "rebuild"):
            log(f"# Rebuild throughput and memory at {', '.join(f'{s:,}' for s in sizes)} events")
            rebuild = bench_rebuild(scratch, sizes, gen_budget=args.gen_budget, profile=args.profile,
                                    analyze=not args.stale_stats, log=log)
    finally:
        scratch.cleanup()
    meta["load_end"] = os.getloadavg()[0]
    table = markdown(lag, rebuild, meta)
    log("\n# Results (paste into the README's performance section)\n")
    log(table)
    if rebuild:
        for kind, text in rebuild["profiles"].items():
            log(f"\n# Profile: {kind}\n{text}")
    results = {"lag": lag, "rebuild": rebuild, "markdown": table, "run_id": scratch.run_id, "meta": meta}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()

"""Throughput of the public config read, `GET /public/v1/widgets/{id}`, beside `/healthz` and a raw ASGI app, in one run.

    uv run python -m tests.bench.bench_public             # full: 3 rounds x 10 s per target
    uv run python -m tests.bench.bench_public --quick     # 1 round x 1 s per target (the CI smoke size)
    uv run python -m tests.bench.bench_public --profile   # also profile the apps in-process (no server)
    uv run python -m tests.bench.bench_public --cluster --wirings production   # the production read on a Redis Cluster too

These are measurements, not tests: nothing asserts on time. Each target is a
granian server (the production server: ASGI, one worker, no access log), pinned
to core 0 with `taskset -c 0`; `wrk -t1 -c32 --latency`, pinned to core 1, loads
it over loopback with an allowed `Origin` header. Targets:

- **raw**: a raw ASGI callable answering fixed bytes: the very status, headers
  and body the production server answered for the 1-domain widget, with no
  work at all. This is the floor of the server: granian and one Python call.
- **production** wiring: `api.app:create_app` on PostgreSQL (a fresh schema) and
  Redis (a fresh key prefix), projections in a separate `widgets project`
  process, as deployed (`WIDGETS_PROJECTIONS=external`). The widgets are
  created through the application services and projected before the server
  starts; the server reads them through its in-process cache in front of Redis.
- **embedded** wiring: the same app on SQLite in a temporary folder, with its
  in-process read model and projections.
- **cluster** wiring (`--cluster`, beside production): the production wiring
  with `WIDGETS_REDIS_URL=redis+cluster://...` on a Redis Cluster this script
  starts (6 `redis-server` processes on loopback, 3 primaries and 3 replicas,
  tests/servers.py) and stops; its own schema, its own `widgets project`.
  Its config read is compared with the production read on the single Redis in
  the same run (target 0.95: the in-process cache absorbs the cluster's hops).

On each wiring's server: its own `/healthz` (a Litestar route that touches no
store), the config read of two widgets with the same public body size, one
allowing 1 domain (`example.com`), one allowing 1,000 (999 others, exact and
wildcard, then `example.com`), and the CORS preflight (`OPTIONS`) of the first. The Origin is `https://example.com` for every request.
Installations are counted as always (every read is recorded and flushed every
`WIDGETS_INSTALLATIONS_FLUSH_INTERVAL` seconds); the API servers run with
`WIDGETS_RATE_CONFIG_READS=100000000/minute`, since all of wrk's requests come
from one address (the limit is still counted and checked on every read).

All servers stay up for the whole run; each round measures every target once,
in an order rotated every round, so that drift on the shared machine hits all
of them alike. The tables show medians over rounds and ratios of medians,
with the per-round ratios beside them. Besides wrk's req/s and p99, each row
shows the server's CPU time per request (user + system of its process group,
from /proc): with one saturated worker, req/s is about 1 / that, and it moves
less than req/s when other processes compete for the cores.

`--profile` then drives each app's ASGI callable directly in this process
(no server, no socket), times it, and cProfiles it: a table of where a
request's time goes by package, raw against each wiring, and the hot path's
top functions.

Needs `wrk` (`apt-get install -y wrk`), PostgreSQL and Redis (127.0.0.1 by
default, or `--pg`/`--redis`, or `WIDGETS_TEST_DATABASE_URL`/
`WIDGETS_TEST_REDIS_URL`). The schema, the Redis keys and the folder are removed
at the end, even when the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.common import free_port, group_cpu_seconds, load_average, parse_wrk, pinned, run_main
from tests.conftest import PRODUCTION_SECRETS
from tests.servers import PrivateRedisCluster

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS = os.environ.get("WIDGETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ORIGIN = "https://example.com"
PUBLIC_PATH = "/public/v1/widgets/{}"
BODY_FILE_ENV = "BENCH_PUBLIC_BODY_FILE"
RAW_APP = "tests.bench.bench_public:raw_app"
OUR_APP = "api.app:create_app"
HIGH_READ_LIMIT = "100000000/minute"
RATIO_TARGET = 0.8  # of the raw ASGI app
HEALTHZ_TARGET = 0.9  # of the same server's /healthz
PREFLIGHT_SCRIPT = 'wrk.method = "OPTIONS"\nwrk.headers["Access-Control-Request-Method"] = "POST"\n'
DOMAINS_RATIO_TARGET = 0.95
CLUSTER_RATIO_TARGET = 0.95  # the config read on a Redis Cluster, of the same read on a single Redis
WIRINGS = ("production", "embedded", "cluster")
ORG = "org_bench"
CONFIG = {
    "v1": {
        "forms": [{
            "id": "pre", "title": "About you", "trigger": "pre_chat",
            "fields": [
                {"name": "email", "label": "Email", "type": "email", "required": True},
                {"name": "topic", "label": "Topic", "type": "select", "options": ["Sales", "Support"]},
            ],
        }],
        "feedback": {"enabled": True, "type": "stars"},
    }
}


# --------------------------------------------------------------------------------------------
# The raw app (run by granian in its own process)

ANSWER_FILE_ENV = "BENCH_PUBLIC_ANSWER_FILE"


def raw_app() -> Any:
    """A raw ASGI app answering, to every request, the status, headers and body in $BENCH_PUBLIC_ANSWER_FILE."""
    answer = json.loads(Path(os.environ[ANSWER_FILE_ENV]).read_text())
    body = Path(os.environ[BODY_FILE_ENV]).read_bytes()
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer["headers"]]
    start = {"type": "http.response.start", "status": answer["status"], "headers": headers}
    end = {"type": "http.response.body", "body": body, "more_body": False}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send(start)
        await send(end)

    return app


# --------------------------------------------------------------------------------------------
# Data: two live widgets (1 and N allowed domains) in a store


def domain_list(count: int) -> list[str]:
    """`count` valid entries ending with `example.com`: exact hosts, then wildcards, then the one the Origin matches."""
    others = []
    for i in range(count - 1):
        others.append(f"*.brand-{i:04d}.example.org" if i % 2 else f"shop-{i:04d}.example.net")
    return [*others, "example.com"]


def seed(store: Any, many: int) -> tuple[str, str]:
    """An agent with a published version and two published widgets: (id of the 1-domain one, id of the `many`-domain one)."""
    from application.agents import AgentService
    from application.commands import Caller
    from application.widgets import WidgetService

    caller = Caller(ORG, "bench", frozenset({"widgets:write", "widgets:read"}))
    agents = AgentService(store)
    widgets = WidgetService(store, agents)
    agent = agents.create_agent(caller, "Bench agent")
    version = agents.create_version(caller, agent.id, "v1")
    agents.publish_version(caller, agent.id, version.id)
    ids = []
    for domains in (["example.com"], domain_list(many)):
        state = widgets.create_widget(caller, agent.id, version.id, domains, CONFIG)
        widgets.publish(caller, state.widget.id)
        ids.append(str(state.widget.id))
    return ids[0], ids[1]


# --------------------------------------------------------------------------------------------
# Processes: servers pinned to core 0, wrk on core 1


@dataclass
class Process:
    """A child process in its own process group, with its output in a log file."""

    label: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float | None:
        return group_cpu_seconds(self.process.pid) if self.process is not None else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own group (start_new_session), nothing else
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def granian_command(factory: str, port: int) -> list[str]:
    """granian as `widgets serve` runs it (api/server.py): ASGI with lifespan, one worker, no websockets, no access log."""
    return pinned(0, [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                      "--port", str(port), "--workers", "1", "--http", "auto", "--no-ws", "--log-level", "warning",
                      "--no-access-log", factory])


def fetch(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Origin": ORIGIN}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def wait_until(check: Callable[[], bool], what: str, process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.label} exited before {what}:\n{process.log_tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout:g} s\n{process.log_tail()}")


@dataclass(frozen=True)
class Measure:
    requests_per_second: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int
    cpu_us_per_request: float | None
    core_share: float | None  # the server's CPU seconds per wall second during the run: 1.0 is all of core 0


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> str:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Origin: {ORIGIN}"]
    if script is not None:
        command += ["-s", str(script)]
    return subprocess.run(pinned(1, [*command, url]), capture_output=True, text=True, timeout=seconds + 60, check=True).stdout


@dataclass
class Target:
    key: str
    wiring: str
    label: str
    domains: int | None
    server: Process
    path: str
    port: int
    script: Path | None = None  # a wrk Lua script (the preflight's OPTIONS)
    runs: list[Measure] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def measure(self, seconds: int, connections: int) -> Measure:
        before, started = self.server.cpu_seconds(), time.perf_counter()
        output = wrk(self.url, seconds, connections, self.script)
        after, elapsed = self.server.cpu_seconds(), time.perf_counter() - started
        rps, p99, requests, errors, non_2xx = parse_wrk(output)
        known = before is not None and after is not None
        cpu = (after - before) / requests * 1e6 if known and requests else None
        share = (after - before) / elapsed if known else None
        found = Measure(rps, p99, requests, errors, non_2xx, cpu, share)
        self.runs.append(found)
        return found


# --------------------------------------------------------------------------------------------
# Scratch space: schema, Redis prefix, folder; always cleaned up


@dataclass
class Scratch:
    pg_url: str
    redis_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="widgets-bench-public-")))

    @property
    def schema(self) -> str:
        return f"benchpub_{self.run_id}"

    @property
    def prefix(self) -> str:
        return f"benchpub{self.run_id}:"

    def make_schema(self) -> str:
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        return self.schema

    def cleanup(self) -> None:
        import psycopg

        from infrastructure.redis_clients import sync_client

        try:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            client = sync_client(self.redis_url)  # one Redis, or every primary of a cluster
            try:
                keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.unlink(*keys[start:start + 1000])
            finally:
                client.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def leftovers(pg_url: str, redis_url: str, run_id: str, folder: str | Path) -> tuple[list[str], int, bool]:
    """What a finished run left behind: its schema (if still present), its Redis keys, whether its folder remains."""
    import psycopg

    from infrastructure.redis_clients import sync_client

    schema, prefix = f"benchpub_{run_id}", f"benchpub{run_id}:"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = %s", [schema]).fetchall()
    client = sync_client(redis_url)
    try:
        keys = sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()
    return [r[0] for r in rows], keys, Path(folder).exists()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def production_env(scratch: Scratch, log_level: str = "info") -> dict[str, str]:
    return {
        **base_env(),
        "WIDGETS_DATABASE_URL": scratch.pg_url,
        "WIDGETS_DATABASE_SCHEMA": scratch.schema,
        "WIDGETS_REDIS_URL": scratch.redis_url,
        "WIDGETS_REDIS_PREFIX": scratch.prefix,
        "WIDGETS_PROJECTIONS": "external",
        "WIDGETS_RATE_CONFIG_READS": HIGH_READ_LIMIT,
        "WIDGETS_AUTH_SECRET": PRODUCTION_SECRETS["auth_secret"],
        "WIDGETS_DATA_KEY": PRODUCTION_SECRETS["data_key"],
        "WIDGETS_LOG_FORMAT": "json",
        "WIDGETS_LOG_LEVEL": log_level,
    }


def embedded_env(scratch: Scratch) -> dict[str, str]:
    return {
        **base_env(),
        "WIDGETS_DATA_DIR": str(scratch.folder / "embedded"),
        "WIDGETS_RATE_CONFIG_READS": HIGH_READ_LIMIT,
        "WIDGETS_LOG_FORMAT": "json",
        "WIDGETS_LOG_LEVEL": "info",
    }


def prepare_production(scratch: Scratch, many: int, say: Callable[[str], None], wiring: str = "production") -> tuple[str, str, Process]:
    """Seed the PostgreSQL schema, then project it into Redis (one, or a cluster) with `widgets project` (which keeps running)."""
    from application.store import EventStore
    from infrastructure.eventstore import postgres_env
    from infrastructure.redis_clients import sync_client

    scratch.make_schema()
    store = EventStore(env=postgres_env(scratch.pg_url, pool_size=2, schema=scratch.schema))
    try:
        one, many_id = seed(store, many)
    finally:
        store.close()
    projector = Process(f"widgets project ({wiring})", [sys.executable, "-m", "api.cli", "project"], production_env(scratch),
                        scratch.folder / f"{wiring}-project.log").start()
    client = sync_client(scratch.redis_url)

    def projected() -> bool:
        from projections.public_views import RedisKeys

        generation = client.get(RedisKeys(scratch.prefix, 0).current)
        if generation is None:
            return False
        keys = RedisKeys(scratch.prefix, int(generation))
        return client.get(keys.ready) == b"1" and client.exists(keys.widget(one)) + client.exists(keys.widget(many_id)) == 2

    try:
        wait_until(projected, "the public read model in Redis", projector)
    finally:
        client.close()
    say(f"{wiring}: schema {scratch.schema}, Redis {scratch.redis_url} prefix {scratch.prefix}, projected by `widgets project`")
    return one, many_id, projector


def prepare_embedded(scratch: Scratch, many: int, say: Callable[[str], None]) -> tuple[str, str]:
    from application.store import EventStore
    from infrastructure.eventstore import sqlite_env

    store = EventStore(env=sqlite_env(scratch.folder / "embedded"))
    try:
        ids = seed(store, many)
    finally:
        store.close()
    say(f"embedded: SQLite in {scratch.folder / 'embedded'}")
    return ids


def start_server(label: str, factory: str, env: dict[str, str], log_path: Path) -> tuple[Process, int]:
    port = free_port()
    server = Process(label, granian_command(factory, port), env, log_path).start()
    wait_until(lambda: fetch(f"http://127.0.0.1:{port}/healthz" if factory == OUR_APP else
                             f"http://127.0.0.1:{port}{PUBLIC_PATH.format('x')}", timeout=1)[0] == 200,
               f"{label} serving", server)
    return server, port


def check_answer(target: Target) -> bytes:
    status, headers, body = fetch(target.url, method="OPTIONS" if target.script else "GET")
    if status != (204 if target.script else 200):
        raise RuntimeError(f"{target.label}: {target.url} answered {status}: {body[:300]!r}\n{target.server.log_tail()}")
    if target.wiring != "raw" and target.domains is not None and headers.get("access-control-allow-origin") != ORIGIN:
        raise RuntimeError(f"{target.label}: no CORS answer for {ORIGIN}: {headers}")
    return body


def raw_answer(url: str) -> dict[str, Any]:
    """The status and headers (in order, as sent) of our 200 answer, for the raw app to repeat."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", parts.path, headers={"Origin": ORIGIN})
        response = connection.getresponse()
        response.read()
        skip = {"date", "server"}  # granian adds these to every answer, the raw app's too
        return {"status": response.status, "headers": [(k.lower(), v) for k, v in response.getheaders() if k.lower() not in skip]}
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------
# In-process profile: the ASGI callables driven directly


def asgi_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"origin", ORIGIN.encode())],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
    }


async def drive(app: Any, path: str, count: int, statuses: Counter[int]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    for _ in range(count):
        await app(asgi_scope(path), receive, send)


# Named pieces of the hot path, as (label, path suffix, function): their cumulative time per request.
PIECES = (
    ("request metrics: Prometheus counter and histogram (`observe`)", "api/middleware.py", "observe"),
    ("request id: `random.getrandbits`", "random.py", "getrandbits"),
    ("installations: `InstallationCounter.record`", "infrastructure/installations.py", "record"),
    ("rate limit: `SharedWindowCounter.hit_locally`", "infrastructure/ratelimit.py", "hit_locally"),
    ("the reader's cache: `peek`", "projections/public_reader.py", "peek"),
    ("headers per (entry, origin): `PublicConfigFront.answer_for`", "api/hot_path.py", "answer_for"),
    ("all of `PublicConfigFront.__call__` (includes everything above; the app's whole answer)", "api/hot_path.py", "__call__"),
)


def cumulative_us(stats: pstats.Stats, count: int, suffix: str, name: str) -> float:
    """The cumulative time of the function `name` in a file ending with `suffix` (the outermost, when several match)."""
    spent = max((entry[3] for (path, _, func), entry in stats.stats.items()  # type: ignore[attr-defined]
                 if func == name and path.endswith(suffix)), default=0.0)
    return spent / count * 1e6


def package_of(path: str) -> str:
    if path == "~" or path.startswith("<"):
        return "C builtins"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(str(ROOT)):
        return path[len(str(ROOT)) + 1:].split("/", 1)[0] + "/ (this project)"
    return "stdlib"


def by_package(stats: pstats.Stats, count: int) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for (path, _, _), entry in stats.stats.items():  # type: ignore[attr-defined]
        totals[package_of(path)] += entry[2]  # own time
    return {name: seconds / count * 1e6 for name, seconds in totals.items()}


async def profile_apps(apps: dict[str, tuple[Callable[[], Any], str]], count: int, top: int) -> dict[str, Any]:
    """µs per request (best of 3, no profiler) and a cProfile of `count` requests, for each app.

    Each app is built just before it runs: `create_app` configures structlog, which is global."""
    timings: dict[str, float] = {}
    packages: dict[str, dict[str, float]] = {}
    pieces: dict[str, dict[str, float]] = {}
    texts: dict[str, str] = {}
    for name, (factory, path) in apps.items():
        app = factory()
        async with app.lifespan() if hasattr(app, "lifespan") else contextlib.nullcontext():
            await asyncio.sleep(1.0)  # let in-process projections finish catching up (the embedded wiring)
            statuses: Counter[int] = Counter()
            await drive(app, path, min(count, 2000), statuses)  # warm: caches, prepared paths
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                await drive(app, path, count, statuses)
                best = min(best, time.perf_counter() - started)
            timings[name] = best / count * 1e6
            profiler = cProfile.Profile()
            profiler.enable()
            await drive(app, path, count, statuses)
            profiler.disable()
        if set(statuses) != {200}:
            raise RuntimeError(f"in-process {name} answered {dict(statuses)}")
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        packages[name] = by_package(stats, count)
        pieces[name] = {label: cumulative_us(stats, count, suffix, func) for label, suffix, func in PIECES}
        pieces[name]["the raw app (for comparison)"] = cumulative_us(stats, count, "bench_public.py", "app")
        pieces[name]["Litestar's entry point (`Litestar.__call__`: nothing, when the front answers)"] = cumulative_us(
            stats, count, "litestar/app.py", "__call__")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        texts[name] = out.getvalue()
    return {"us_per_request": timings, "packages": packages, "pieces": pieces, "text": texts, "count": count}


def run_profile(scratch: Scratch, ids: dict[str, tuple[str, str]], body_file: Path, answer_file: Path, count: int,
                top: int) -> dict[str, Any]:
    from api.app import create_app
    from infrastructure.settings import Settings

    os.environ[BODY_FILE_ENV] = str(body_file)
    os.environ[ANSWER_FILE_ENV] = str(answer_file)
    common = dict(rate_config_reads=HIGH_READ_LIMIT, log_format="json")
    first = next(iter(ids.values()))[0]
    apps: dict[str, tuple[Callable[[], Any], str]] = {"raw": (raw_app, PUBLIC_PATH.format(first))}
    if "production" in ids:
        production = dict(database_url=scratch.pg_url, database_schema=scratch.schema, redis_url=scratch.redis_url,
                          redis_prefix=scratch.prefix, projections="external", **PRODUCTION_SECRETS, **common)
        path = PUBLIC_PATH.format(ids["production"][0])
        apps["production"] = (lambda: create_app(Settings(**production, log_level="info")), path)
    if "embedded" in ids:
        embedded = dict(data_dir=str(scratch.folder / "embedded"), log_level="info", **common)
        apps["embedded"] = (lambda: create_app(Settings(**embedded)), PUBLIC_PATH.format(ids["embedded"][0]))
    # The apps log to sys.stderr as configured when each is built: send that to a file, as the servers' is.
    saved = sys.stderr
    with open(scratch.folder / "in-process.log", "w") as log:
        sys.stderr = log
        try:
            return asyncio.run(profile_apps(apps, count, top))
        finally:
            sys.stderr = saved


def profile_markdown(profile: dict[str, Any]) -> str:
    timings, packages = profile["us_per_request"], profile["packages"]
    names = list(timings)
    lines = [
        f"In-process ASGI calls (no server, no socket), {profile['count']:,} requests each: µs per request, best of 3.",
        "",
        "| app | µs/request | vs raw |",
        "| --- | ---: | ---: |",
    ]
    for name in names:
        lines.append(f"| {name} | {timings[name]:.1f} | {timings['raw'] / timings[name]:.2f} |")
    groups = sorted({g for p in packages.values() for g in p}, key=lambda g: -max(p.get(g, 0) for p in packages.values()))
    lines += ["", "Own time by package under cProfile (µs per request; the profiler inflates every figure, compare columns):", "",
              "| package | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for group in groups:
        lines.append(f"| {group} | " + " | ".join(f"{packages[n].get(group, 0):.1f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(packages[n].values()):.1f}**" for n in names) + " |")
    pieces = profile["pieces"]
    lines += ["", "Pieces of the hot path under cProfile (cumulative µs per request; the pieces nest where said):", "",
              "| piece | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for label in next(iter(pieces.values())):
        lines.append(f"| {label} | " + " | ".join(f"{pieces[n][label]:.1f}" for n in names) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Report


def median_of(runs: list[Measure], attribute: str) -> float:
    values = [getattr(m, attribute) for m in runs if getattr(m, attribute) is not None]
    return statistics.median(values) if values else float("nan")


def min_of(runs: list[Measure], attribute: str) -> float:
    values = [getattr(m, attribute) for m in runs if getattr(m, attribute) is not None]
    return min(values) if values else float("nan")


def summarise(target: Target) -> dict[str, Any]:
    return {
        "label": target.label, "wiring": target.wiring, "domains": target.domains,
        "rps": median_of(target.runs, "requests_per_second"),
        "p99_ms": median_of(target.runs, "p99_ms"),
        "cpu_us": median_of(target.runs, "cpu_us_per_request"),
        "core_share": median_of(target.runs, "core_share"),
        "errors": sum(m.errors for m in target.runs),
        "non_2xx": sum(m.non_2xx for m in target.runs),
        "runs": [m.__dict__ for m in target.runs],
    }


def ratio_entry(subject: Target, baseline: Target, target: float) -> dict[str, Any]:
    rps = median_of(subject.runs, "requests_per_second") / median_of(baseline.runs, "requests_per_second")
    cpu = median_of(baseline.runs, "cpu_us_per_request") / median_of(subject.runs, "cpu_us_per_request")
    per_round = [s.requests_per_second / b.requests_per_second for s, b in zip(subject.runs, baseline.runs, strict=True)]
    # Other work on core 0 only ever adds CPU time to a request, so each target's least round is its least disturbed one.
    best = min_of(baseline.runs, "cpu_us_per_request") / min_of(subject.runs, "cpu_us_per_request")
    return {"subject": subject.key, "baseline": baseline.key, "rps_ratio": rps, "cpu_ratio": cpu, "best_cpu_ratio": best,
            "per_round": per_round, "target": target, "meets": cpu >= target, "rps_meets": rps >= target}


def markdown(results: dict[str, Any]) -> str:
    rows, ratios = results["targets"], results["ratios"]
    lines = [
        f"`GET /public/v1/widgets/{{id}}` with an allowed Origin, installations counted: granian (as `widgets serve` runs it), "
        f"one worker on core 0; "
        f"`wrk -t1 -c{results['connections']} -d{results['seconds']}s --latency` on core 1; {results['rounds']} round(s), "
        f"targets alternated, medians. Body {results['body_bytes']} B. Load average {results['load_before']} -> "
        f"{results['load_after']} (2 cores, shared with other work).",
        "",
        "| wiring | route | allowed domains | req/s | p99 ms | server CPU µs/req | core 0 share | req/s vs raw | capacity vs raw |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    raw = rows["raw"]
    for row in rows.values():
        domains = "" if row["domains"] is None else f"{row['domains']:,}"
        lines.append(
            f"| {row['wiring']} | {row['label']} | {domains} | {row['rps']:,.0f} | {row['p99_ms']:.2f} | {row['cpu_us']:.1f} "
            f"| {row['core_share']:.2f} | {row['rps'] / raw['rps']:.2f} | {raw['cpu_us'] / row['cpu_us']:.2f} |"
        )
    lines += ["", "| ratio | capacity (CPU per request) | capacity, least-disturbed rounds | req/s (as wrk saw it) | req/s per round "
              "| target | verdict (capacity) |",
              "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for name, entry in ratios.items():
        per_round = ", ".join(f"{r:.2f}" for r in entry["per_round"])
        lines.append(f"| {name} | **{entry['cpu_ratio']:.2f}** | {entry['best_cpu_ratio']:.2f} | {entry['rps_ratio']:.2f} | {per_round} "
                     f"| >= {entry['target']} | {'meets' if entry['meets'] else 'below'} |")
    errors = sum(row["errors"] + row["non_2xx"] for row in rows.values())
    lines += [
        "",
        "*Capacity* is the baseline's server CPU time per request divided by the subject's: the req/s ratio two "
        "saturated one-core servers would show if each had core 0 to itself. On a shared machine the server's share of "
        "core 0 (column *core 0 share*) moves from run to run, and wrk's req/s with it, so the verdicts use capacity; "
        "the req/s ratios are shown per round beside it. Other work on core 0 only ever adds CPU time to a request, "
        "so the ratio of each target's least CPU per request over the rounds (*least-disturbed rounds*) is shown too.",
        "",
        f"Socket errors and non-2xx answers over all runs: {errors}. "
        "Event-store fallbacks logged by the Redis-backed servers: "
        + (", ".join(f"{w} {n}" for w, n in results.get("fallbacks_by_wiring", {}).items()) or "none measured") + ".",
    ]
    lines.append("A served config read or preflight is counted in `/metrics` (in batches, every second) and not logged "
                 "(api/middleware.py, api/hot_path.py); refusals, misses and errors log their request line.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round x 1 s per target, 1 s warm-up (the CI smoke size)")
    parser.add_argument("--seconds", type=int, default=None, help="wrk seconds per target and round (default 10; quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; every target once per round (default 3; quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="wrk seconds of warm-up per target, once (default 3; quick 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--domains", type=int, default=1000, help="allowed domains of the large widget (default 1000)")
    parser.add_argument("--wirings", default="production,embedded", help="comma-separated: production, embedded, cluster")
    parser.add_argument("--cluster", action="store_true",
                        help="also the cluster wiring: production on a Redis Cluster this script starts (beside production)")
    parser.add_argument("--profile", action="store_true", help="also time and cProfile the apps' ASGI callables in-process")
    parser.add_argument("--profile-requests", type=int, default=20000, help="requests per app under --profile (default 20000)")
    parser.add_argument("--top", type=int, default=30, help="functions listed per profile (default 30)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a fresh schema is made and dropped)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (a fresh key prefix is used and deleted)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: install it (apt-get install -y wrk); this benchmark cannot run without it")
    seconds = args.seconds or (1 if args.quick else 10)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    wirings = [w for w in args.wirings.split(",") if w]
    if args.cluster and "cluster" not in wirings:
        wirings.append("cluster")
    if not set(wirings) <= set(WIRINGS) or not wirings:
        raise SystemExit(f"--wirings takes {', '.join(WIRINGS)}, not {args.wirings!r}")
    if "cluster" in wirings and "production" not in wirings:
        raise SystemExit("the cluster wiring is measured against the production one (single Redis): add production")
    if "cluster" in wirings and not (shutil.which("redis-server") and shutil.which("redis-cli")):
        raise SystemExit("the cluster wiring needs redis-server and redis-cli (apt-get install -y redis-server)")

    scratch = Scratch(args.pg, args.redis)
    results: dict[str, Any] = {"run_id": scratch.run_id, "schema": scratch.schema, "prefix": scratch.prefix,
                               "folder": str(scratch.folder), "seconds": seconds, "rounds": rounds,
                               "connections": args.connections, "load_before": load_average()}
    processes: list[Process] = []
    targets: list[Target] = []
    ids: dict[str, tuple[str, str]] = {}
    cluster: PrivateRedisCluster | None = None
    scratches = {"production": scratch, "embedded": scratch}
    try:
        if "cluster" in wirings:
            cluster = PrivateRedisCluster().start()
            folder = scratch.folder / "cluster"
            folder.mkdir()
            scratches["cluster"] = Scratch(args.pg, cluster.url, run_id=f"{scratch.run_id}c", folder=folder)
            results.update(cluster_run_id=scratches["cluster"].run_id, cluster_url=cluster.url)
        for wiring in ("production", "cluster"):
            if wiring in wirings:
                one, many, projector = prepare_production(scratches[wiring], args.domains, say, wiring)
                ids[wiring] = (one, many)
                processes.append(projector)
        if "embedded" in wirings:
            ids["embedded"] = prepare_embedded(scratch, args.domains, say)
        envs = {"production": production_env(scratch), "embedded": embedded_env(scratch)}
        if "cluster" in wirings:
            envs["cluster"] = production_env(scratches["cluster"])
        preflight_script = scratch.folder / "preflight.lua"
        preflight_script.write_text(PREFLIGHT_SCRIPT)
        for wiring in wirings:
            server, port = start_server(wiring, OUR_APP, envs[wiring], scratch.folder / f"{wiring}.log")
            processes.append(server)
            one, many = ids[wiring]
            targets.append(Target(f"{wiring}-healthz", wiring, "`/healthz`", None, server, "/healthz", port))
            targets.append(Target(f"{wiring}-1", wiring, "public config", 1, server, PUBLIC_PATH.format(one), port))
            targets.append(Target(f"{wiring}-{args.domains}", wiring, "public config", args.domains, server,
                                  PUBLIC_PATH.format(many), port))
            targets.append(Target(f"{wiring}-preflight", wiring, "preflight (`OPTIONS`)", 1, server, PUBLIC_PATH.format(one),
                                  port, script=preflight_script))
        configs = [t for t in targets if t.domains is not None and t.script is None]
        bodies = {t.key: check_answer(t) for t in targets}
        sizes = {len(bodies[t.key]) for t in configs}
        if len(sizes) != 1:
            raise RuntimeError(f"the widgets' public bodies differ in size: { {t.key: len(bodies[t.key]) for t in configs} }")
        body_file = scratch.folder / "body.json"
        body_file.write_bytes(bodies[configs[0].key])
        answer_file = scratch.folder / "answer.json"
        answer_file.write_text(json.dumps(raw_answer(configs[0].url)))
        raw_server, raw_port = start_server("raw", RAW_APP, {**base_env(), BODY_FILE_ENV: str(body_file),
                                                             ANSWER_FILE_ENV: str(answer_file)}, scratch.folder / "raw.log")
        processes.append(raw_server)
        raw = Target("raw", "raw", "raw ASGI app, fixed bytes", None, raw_server, PUBLIC_PATH.format(ids[wirings[0]][0]), raw_port)
        if check_answer(raw) != bodies[configs[0].key] or json.loads(json.dumps(raw_answer(raw.url))) != json.loads(answer_file.read_text()):
            raise RuntimeError("the raw app does not answer the production server's status, headers and body")
        targets.insert(0, raw)
        results["body_bytes"] = sizes.pop()

        for target in targets:  # warm every server and its caches once
            if warmup:
                wrk(target.url, warmup, args.connections, target.script)
        for round_index in range(rounds):
            shift = round_index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                found = target.measure(seconds, args.connections)
                say(f"round {round_index + 1}: {target.key:18} {found.requests_per_second:9,.0f} req/s  p99 {found.p99_ms:7.2f} ms  "
                    f"cpu {found.cpu_us_per_request or 0:6.1f} µs/req  errors {found.errors + found.non_2xx}")
        for server in processes:
            if not server.alive():
                raise RuntimeError(f"{server.label} died during the run:\n{server.log_tail()}")
        results["fallbacks_by_wiring"] = {
            wiring: (scratch.folder / f"{wiring}.log").read_text(errors="replace").count("public_read_fallback")
            for wiring in ("production", "cluster") if wiring in wirings}
        results["fallbacks"] = sum(results["fallbacks_by_wiring"].values())

        by_key = {t.key: t for t in targets}
        results["targets"] = {t.key: summarise(t) for t in targets}
        ratios: dict[str, Any] = {}
        for wiring in wirings:
            healthz = by_key[f"{wiring}-healthz"]
            ratios[f"{wiring}, 1 domain / raw ASGI"] = ratio_entry(by_key[f"{wiring}-1"], raw, RATIO_TARGET)
            ratios[f"{wiring}, 1 domain / /healthz"] = ratio_entry(by_key[f"{wiring}-1"], healthz, HEALTHZ_TARGET)
            ratios[f"{wiring}, {args.domains:,} domains / raw ASGI"] = ratio_entry(by_key[f"{wiring}-{args.domains}"], raw, RATIO_TARGET)
            ratios[f"{wiring}, {args.domains:,} domains / /healthz"] = ratio_entry(by_key[f"{wiring}-{args.domains}"], healthz,
                                                                                   HEALTHZ_TARGET)
            ratios[f"{wiring}, preflight / raw ASGI"] = ratio_entry(by_key[f"{wiring}-preflight"], raw, RATIO_TARGET)
            ratios[f"{wiring}, preflight / /healthz"] = ratio_entry(by_key[f"{wiring}-preflight"], healthz, HEALTHZ_TARGET)
        for wiring in wirings:
            ratios[f"{wiring}, {args.domains:,} domains / 1 domain"] = ratio_entry(
                by_key[f"{wiring}-{args.domains}"], by_key[f"{wiring}-1"], DOMAINS_RATIO_TARGET)
        if "cluster" in wirings:
            for route in ("1", str(args.domains), "healthz"):
                name = {"1": "1 domain", "healthz": "/healthz"}.get(route, f"{args.domains:,} domains")
                ratios[f"cluster / production (single Redis), {name}"] = ratio_entry(
                    by_key[f"cluster-{route}"], by_key[f"production-{route}"], CLUSTER_RATIO_TARGET)
        results["ratios"] = ratios
        results["load_after"] = load_average()
        results["markdown"] = markdown(results)

        for process in reversed(processes):
            process.stop()
        if args.profile:
            say(f"profiling {args.profile_requests:,} in-process requests per app")
            profile = run_profile(scratch, {w: i for w, i in ids.items() if w != "cluster"}, body_file, answer_file,
                                  args.profile_requests, args.top)
            results["profile"] = profile
            results["markdown"] += "\n\n" + profile_markdown(profile)
    finally:
        for process in reversed(processes):
            try:
                process.stop()
            except Exception as error:  # keep cleaning up
                say(f"could not stop {process.label}: {error!r}")
        try:
            if "cluster" in scratches:
                scratches["cluster"].cleanup()  # its schema and keys (the folder is inside the main one)
        finally:
            if cluster is not None:
                cluster.stop()
            scratch.cleanup()

    if "profile" in results:
        for name, text in results["profile"]["text"].items():
            print(f"\n### cProfile: {name}\n\n{text}")
    print(results["markdown"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in results.items() if k != "profile"}, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    run_main(main)

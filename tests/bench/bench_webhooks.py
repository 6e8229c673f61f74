"""Webhook delivery lag and throughput (issue 16), against the projection's own throughput in the same run.

    uv run python -m tests.bench.bench_webhooks            # about a minute
    uv run python -m tests.bench.bench_webhooks --quick    # about 15 seconds

`widgets project` runs in its own process, as in production (PostgreSQL + Redis, LISTEN-driven), and delivers
to a receiver in this process on loopback (`WIDGETS_WEBHOOK_ALLOW_PRIVATE=true`), one path per endpoint.

1. **Lag**, with 1, 10 and 100 endpoints subscribed to `agent.created`: agents are created at `--rate` per
   second; each delivery's lag runs from the moment `save` returned to the moment the receiver read the
   request (before it answers 200). Goal: p99 under 1 s with 10 endpoints.
2. **Throughput**: a backlog of `--burst` events to 10 endpoints, written while the projection process is
   stopped, then drained by a new one; deliveries per second from the first receipt to the last, beside the baseline: a projection's own throughput,
   `rebuild_sql` of the audit feed over the same log (events per second, measured in this run), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.common import run_main
from tests.conftest import PRODUCTION_SECRETS

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("WIDGETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _serve(port_out: Any, records: Any) -> None:
    """A small asyncio HTTP/1.1 receiver: answers 200 to each POST at once, and reports (path, agent id, time read)."""
    import asyncio

    pending: list[tuple[str, str, float]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
                body = await reader.readexactly(length)
                pending.append((path, json.loads(body)["data"]["agent_id"], time.time()))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def report() -> None:
        while True:
            await asyncio.sleep(0.01)
            if pending:
                batch = pending[:]
                pending.clear()
                records.send(batch)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port_out.send(server.sockets[0].getsockname()[1])
    await report()


def _receiver_main(port_out: Any, records: Any) -> None:
    import asyncio

    asyncio.run(_serve(port_out, records))


class Receiver:
    """The receiver in a process of its own (so that it takes no CPU from the writer), its records read here."""

    def __init__(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        port_in, port_out = context.Pipe(duplex=False)
        self._records, records = context.Pipe(duplex=False)
        self.process = context.Process(target=_receiver_main, args=(port_out, records), daemon=True)
        self.process.start()
        self.port = port_in.recv()
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, float]] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        try:
            while True:
                batch = self._records.recv()
                with self.lock:
                    self.received.extend(batch)
        except (EOFError, OSError):
            return

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def close(self) -> None:
        self.process.terminate()
        self.process.join(5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Run:
    def __init__(self, pg: str, redis_url: str) -> None:
        import psycopg

        from application.agents import AgentService
        from application.commands import Caller
        from application.store import EventStore
        from application.webhook_endpoints import WebhookEndpointService
        from infrastructure.eventstore import postgres_env
        from infrastructure.personal_data import DeploymentKeys
        from infrastructure.settings import Settings
        from infrastructure.sql import Database
        from infrastructure.webhook_secrets import WebhookSecretTable

        self.run_id = uuid.uuid4().hex[:10]
        self.schema = f"bench_{self.run_id}_webhooks"
        self.pg = pg
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.settings = Settings(database_url=pg, database_schema=self.schema, redis_url=redis_url,
                                 redis_prefix=f"bench{self.run_id}:", webhook_allow_private=True, projections="external",
                                 **PRODUCTION_SECRETS)
        self.store = EventStore(env=postgres_env(pg, pool_size=4, schema=self.schema))
        self.db = Database(self.settings)
        self.caller = Caller("org_bench", "bench", frozenset({"widgets:write", "widgets:read"}))
        self.agents = AgentService(self.store)
        self.endpoints = WebhookEndpointService(self.store, WebhookSecretTable(self.db, DeploymentKeys.from_settings(self.settings)),
                                                allow_private=True)
        self.receiver = Receiver()
        self.created: list[uuid.UUID] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start_projector(self) -> None:
        env = {**os.environ, "WIDGETS_DATABASE_URL": self.pg, "WIDGETS_DATABASE_SCHEMA": self.schema,
               "WIDGETS_REDIS_URL": self.settings.redis_url, "WIDGETS_REDIS_PREFIX": self.settings.redis_prefix,
               "WIDGETS_WEBHOOK_ALLOW_PRIVATE": "true", "WIDGETS_LOG_LEVEL": "warning", "WIDGETS_LOG_FORMAT": "json",
               "WIDGETS_AUTH_SECRET": self.settings.auth_secret, "WIDGETS_DATA_KEY": self.settings.data_key}
        self.process = subprocess.Popen([sys.executable, "-m", "api.cli", "project"], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def subscribe(self, count: int, tag: str) -> list[str]:
        paths = [f"/{tag}/{i}" for i in range(count)]
        for path in paths:
            created = self.endpoints.create_endpoint(self.caller, f"http://127.0.0.1:{self.receiver.port}{path}", ["agent.created"])
            self.created.append(created.endpoint.id)
        return paths

    def unsubscribe_all(self) -> None:
        for endpoint_id in self.created:
            self.endpoints.delete_endpoint(self.caller, endpoint_id)
        self.created.clear()

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.receiver.count() >= count:
                return True
            time.sleep(0.005)
        return False

    def lag(self, endpoints: int, events: int, rate: float) -> dict[str, Any]:
        self.unsubscribe_all()
        paths = set(self.subscribe(endpoints, f"lag{endpoints}"))
        time.sleep(1.0)  # the projector has the endpoints before the events start
        self.agents.create_agent(self.caller, "warm-up")
        start_count = self.receiver.count()
        self.wait_for(start_count + endpoints, 10)
        first = self.receiver.count()
        committed: dict[str, float] = {}
        for i in range(events):
            agent = self.agents.create_agent(self.caller, f"lag {endpoints} {i}")
            committed[str(agent.id)] = time.time()
            time.sleep(max(0.0, 1.0 / rate - 0.001))
        complete = self.wait_for(first + events * endpoints, 60)
        with self.receiver.lock:
            got = [(p, a, t) for p, a, t in self.receiver.received[first:] if p in paths and a in committed]
        lags = [(t - committed[a]) * 1000 for _, a, t in got]
        return {"endpoints": endpoints, "events": events, "deliveries": len(got), "complete": complete,
                "p50_ms": percentile(lags, 0.5), "p99_ms": percentile(lags, 0.99), "max_ms": max(lags)}

    def stop_projector(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.process = None

    def throughput(self, endpoints: int, burst: int) -> dict[str, Any]:
        """The backlog of `burst` events to `endpoints` endpoints, drained by a projection process started after it
        was written: deliveries per second from the first receipt to the last."""
        from projections.rebuild import rebuild_sql

        self.unsubscribe_all()
        self.stop_projector()
        paths = set(self.subscribe(endpoints, f"burst{endpoints}"))
        for i in range(burst):
            self.agents.create_agent(self.caller, f"burst {i}")
        first = self.receiver.count()
        self.start_projector()
        complete = self.wait_for(first + burst * endpoints, 180)
        with self.receiver.lock:
            got = sorted(t for p, _, t in self.receiver.received[first:] if p in paths)
        seconds = max(got[-1] - got[0], 1e-3)
        head = self.store.recorder.max_notification_id() or 0
        replay_started = time.perf_counter()
        rebuild_sql(self.store, self.db, "audit_feed")  # the baseline: one projection's own throughput, same log
        replay = time.perf_counter() - replay_started
        return {"endpoints": endpoints, "events": burst, "deliveries": len(got), "complete": complete,
                "deliveries_per_s": len(got) / seconds, "events_delivered_per_s": len(got) / endpoints / seconds,
                "projection_events_per_s": head / replay, "log_events": head}

    def close(self) -> None:
        import psycopg
        import redis

        self.stop_projector()
        self.receiver.close()
        self.db.close()
        self.store.close()
        with psycopg.connect(self.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        client = redis.Redis.from_url(self.settings.redis_url)
        keys = list(client.scan_iter(match=f"{self.settings.redis_prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None, help="Events per lag phase (default 100; 20 with --quick)")
    parser.add_argument("--rate", type=float, default=20.0, help="Events per second in the lag phases")
    parser.add_argument("--burst", type=int, default=None, help="Events of the throughput burst (default 300; 50 with --quick)")
    parser.add_argument("--endpoints", default="1,10,100", help="Endpoint counts of the lag phases")
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--redis", default=REDIS)
    args = parser.parse_args(argv)
    events = args.events or (20 if args.quick else 100)
    burst = args.burst or (50 if args.quick else 300)
    run = Run(args.pg, args.redis)
    results: dict[str, Any] = {"run_id": run.run_id, "lag": []}
    try:
        run.start_projector()
        time.sleep(2.0)
        for count in (int(n) for n in args.endpoints.split(",")):
            figures = run.lag(count, events, args.rate)
            results["lag"].append(figures)
            log(f"lag, {count:>3} endpoints: {figures['deliveries']} deliveries, p50 {figures['p50_ms']:.0f} ms, "
                f"p99 {figures['p99_ms']:.0f} ms, max {figures['max_ms']:.0f} ms{'' if figures['complete'] else ' (INCOMPLETE)'}")
        results["throughput"] = figures = run.throughput(10, burst)
        ratio = figures["deliveries_per_s"] / figures["projection_events_per_s"]
        results["throughput"]["ratio"] = ratio
        log(f"backlog of {burst} events to 10 endpoints: {figures['deliveries_per_s']:.0f} deliveries/s "
            f"({figures['events_delivered_per_s']:.0f} events/s to every endpoint); the audit feed's projection replays "
            f"{figures['projection_events_per_s']:.0f} events/s: deliveries/s over replayed events/s {ratio:.2f}")
    finally:
        run.close()
    rows = ["| endpoints | deliveries | p50 | p99 | max |", "|---:|---:|---:|---:|---:|"]
    rows += [f"| {f['endpoints']} | {f['deliveries']:,} | {f['p50_ms']:.0f} ms | {f['p99_ms']:.0f} ms | {f['max_ms']:.0f} ms |"
             for f in results["lag"]]
    t = results["throughput"]
    rows += ["", "| backlog (events) | deliveries/s | events/s to each of 10 endpoints | projection replay, events/s | deliveries/s ÷ replay events/s |",
             "|---:|---:|---:|---:|---:|",
             f"| {t['events']} | {t['deliveries_per_s']:,.0f} | {t['events_delivered_per_s']:,.0f} | "
             f"{t['projection_events_per_s']:,.0f} | {t['ratio']:.2f} |"]
    results["markdown"] = "\n".join(rows)
    log(results["markdown"])
    return results


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]))

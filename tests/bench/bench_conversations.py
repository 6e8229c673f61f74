"""Conversation starts per second beside raw psycopg INSERTs of rows of the same size, in one run.

    uv run python -m tests.bench.bench_conversations            # full: 20 s per row, in 80 slices of 0.25 s
    uv run python -m tests.bench.bench_conversations --quick    # 1 s per row
    uv run python -m tests.bench.bench_conversations --profile  # also cProfile 2,000 starts (wall and CPU clocks)
    uv run python -m tests.bench.bench_conversations --pooler   # every row through a PgBouncer in transaction mode

A conversation start is one event append (the `Conversation` aggregate's
`conversation.started`, its visitor sealed under a new data key whose wrapped
row the same insert writes) plus one LiveKit token signing. This script calls
`ConversationService.start` directly, single-threaded, in a loop, on an
`EventStore` wired exactly as production wires it (`infrastructure.eventstore.
postgres_env`: our recorder's insert functions, pre-ping of idle connections
on), in a fresh PostgreSQL schema. The baseline is a raw psycopg connection
(autocommit, prepared statement) INSERTing rows of the same size (the stored
event's `topic` and `state` bytes, measured from a real start) into a table with
the same definition as the event store's, in the same schema and the same run.

Rows are measured in alternation, in short slices (every row for 0.25 s per
round, the order rotated each round), so that the drift of this shared machine,
which moves a 5 s sample by 20% or more, hits every row alike. The table gives
each row's throughput over all its slices, and the spread (quartiles) of the
ratios of slices measured side by side in the same round. Besides the headline
ratio (target >= 0.6), diagnostic rows place the gap: the same raw INSERT sent
through psycopg's libpq layer (`psycopg.pq`, as the store sends its one-event
insert: a second baseline, with less of psycopg's per-query work), the store's
own SQL (its one-event insert function, which locks the table, NOTIFYs and
writes the key row) sent
from the raw connection (the database's share), the store's recorder given a
prebuilt stored event (adds the pool checkout and eventsourcing's plumbing), a
start's two halves alone (token signing; aggregate + save), and the same start
with `POSTGRES_PRE_PING=n`. The client CPU column is this process's CPU time per
operation (user and system). Python work between two queries costs more here
than its time in a tight loop (a server process and a CPU that went idle wake
up later): the raw INSERT followed by 200 µs of busy Python measured 250 to 290
µs slower than the INSERT alone, not 200. Work done while the query is in
flight costs next to nothing: a start signs its token during the INSERT's round
trip (`EventStore.save(meanwhile=...)`), so `start` can beat `aggregate +
store.save` alone.

With `--pooler`, this script starts Debian's PgBouncer (transaction mode, run
as the `postgres` user, tests/servers.py) in front of the `--pg` server, and
every row goes through it: the store is wired as `WIDGETS_DATABASE_POOLER=
transaction` wires it (no session state, nothing prepared: the one-event insert
is sent unprepared through libpq), and the raw INSERTs are sent unprepared too
(a statement prepared on one server connection is not there on the next, so
a transaction pooler leaves no other way). A start opens no LISTEN (that is the
projector's, over `WIDGETS_DATABASE_LISTEN_URL`, direct). Two more diagnostic
rows then give the pooler's own cost: the raw INSERT (prepared) and the start
on direct connections to the same PostgreSQL.

Everything runs on 127.0.0.1; the schema is dropped at the end, even on failure
(and the PgBouncer stopped).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import secrets
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.bench.common import load_average, run_main
from tests.conftest import PRODUCTION_SECRETS
from tests.servers import PrivatePgBouncer

DEFAULT_PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RATIO_TARGET = 0.6
ORG = "org_bench"
ORIGIN = "https://example.com"
VISITOR = {"name": "Ada", "locale": "en-GB"}


@dataclass
class Sample:
    """One timed loop of one operation."""

    ops: int
    seconds: float
    cpu_seconds: float
    latencies: list[float] = field(repr=False)

    @property
    def per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.ops * 1e6

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def timed_loop(operation: Callable[[], object], seconds: float) -> Sample:
    """Run `operation` back to back for about `seconds`; wall time, this process's CPU time, and each call's latency."""
    latencies: list[float] = []
    clock = time.perf_counter
    cpu_start, start = time.process_time(), clock()
    deadline = start + seconds
    now = start
    while now < deadline:
        before = now
        operation()
        now = clock()
        latencies.append(now - before)
    return Sample(len(latencies), now - start, time.process_time() - cpu_start, latencies)


@dataclass
class Row:
    key: str
    label: str
    operation: Callable[[], object]
    is_part: bool = False  # a component or a diagnostic, not the headline


class Bench:
    """A fresh schema, the production-wired store and service, and a raw psycopg connection."""

    def __init__(self, pg_url: str, run_id: str, pooler_url: str | None = None) -> None:
        import psycopg

        from application.conversations import ConversationService, LiveWidget
        from application.store import EventStore
        from infrastructure.eventstore import postgres_env
        from infrastructure.livekit import LiveKitIssuer
        from infrastructure.personal_data import DeploymentKeys, PersonalDataVault
        from infrastructure.settings import Settings

        self.pg_url = pg_url
        self.pooled = pooler_url is not None  # every row through a transaction-mode pooler at `pooler_url`
        url = pooler_url or pg_url
        self.schema = f"benchconv_{run_id}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        defaults = Settings(**PRODUCTION_SECRETS)
        self.issuer = LiveKitIssuer(
            url=defaults.livekit_url, api_key=defaults.livekit_api_key, api_secret=defaults.livekit_api_secret,
            agent_name=defaults.livekit_agent_name, ttl_seconds=defaults.livekit_token_ttl,
        )
        self.env = postgres_env(url, pool_size=2, schema=self.schema, pooler=self.pooled)
        # As `open_event_store` wires it: personal fields sealed under a new data key per conversation, whose wrapped
        # key row is written by the same insert.
        self.store = EventStore(env=self.env, personal_data=PersonalDataVault(DeploymentKeys.from_settings(defaults)))
        self.service = ConversationService(self.store, self.issuer)
        # The diagnostic variants: the same store, same tables, without psycopg_pool's per-checkout ping; and the
        # store as it was before personal data was encrypted (no data key, no key row).
        self.store_no_ping = EventStore(env={**self.env, "POSTGRES_PRE_PING": "n"},
                                        personal_data=PersonalDataVault(DeploymentKeys.from_settings(defaults)))
        self.service_no_ping = ConversationService(self.store_no_ping, self.issuer)
        self.store_plain = EventStore(env=self.env)
        self.service_plain = ConversationService(self.store_plain, self.issuer)
        self.widget = LiveWidget(
            widget_id=str(uuid.uuid4()), organization_id=ORG, agent_id=str(uuid.uuid4()),
            agent_version_id=str(uuid.uuid4()), config={},
        )
        # Behind the pooler, nothing is prepared: psycopg's own statements neither (`prepare_threshold=None`).
        self.conn = psycopg.connect(url, autocommit=True, **({"prepare_threshold": None} if self.pooled else {}))
        # The direct rows beside the pooled ones: the same INSERT and start on direct connections.
        self.direct_conn = psycopg.connect(pg_url, autocommit=True) if self.pooled else self.conn
        self.store_direct = EventStore(env=postgres_env(pg_url, pool_size=2, schema=self.schema),
                                       personal_data=PersonalDataVault(DeploymentKeys.from_settings(defaults))) \
            if self.pooled else self.store
        self.service_direct = ConversationService(self.store_direct, self.issuer)
        self.topic, self.state_size, self.events_per_start = self._measure_row()
        self.state = secrets.token_bytes(self.state_size)
        self.conn.execute(
            f'CREATE TABLE "{self.schema}".raw_events ('
            "originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text, state bytea, "
            "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        self.conn.execute(f'CREATE UNIQUE INDEX ON "{self.schema}".raw_events (notification_id ASC)')
        self.conn.execute(f'ALTER TABLE "{self.schema}".raw_events SET (autovacuum_enabled = true, '
                          "autovacuum_vacuum_threshold = 100000000, autovacuum_vacuum_scale_factor = 0.5, "
                          "autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0.01)")
        insert = f'INSERT INTO "{self.schema}".raw_events (originator_id, originator_version, topic, state) VALUES'
        self.insert_sql = f"{insert} (%s, 1, %s, %s)"
        self.insert_libpq = f"{insert} ($1, 1, $2, $3)".encode()
        if not self.pooled:
            self.conn.pgconn.prepare(b"bench_raw_insert", self.insert_libpq)  # for the libpq-level row
        # The statement the store sends for a one-event save (infrastructure/pg_recorder.py): its plpgsql
        # function, which locks the table, NOTIFYs and INSERTs into the event store's own table; sent here
        # from the raw connection, without the library.
        self.function_sql = self.store.recorder.sql_prepare_insert_event.decode().replace("$1, $2, $3, $4, $5", "%s, %s, %s, %s, %s")
        self.wrapped_key = secrets.token_bytes(69)  # a wrapped data key's size: format, fingerprint, nonce, key, tag

    def _measure_row(self) -> tuple[str, int, int]:
        """The stored event of a real start: its topic, its state's size in bytes, and how many rows one start writes."""
        started = self.service.start(self.widget, ORIGIN, VISITOR)
        rows = self.conn.execute(
            f'SELECT topic, octet_length(state) FROM "{self.schema}".widgets_events WHERE originator_id = %s',
            [started.conversation_id],
        ).fetchall()
        if not rows:
            raise RuntimeError("a conversation start stored no event")
        return rows[0][0], int(rows[0][1]), len(rows)

    def raw_insert(self) -> None:
        self.conn.execute(self.insert_sql, (uuid.uuid4(), self.topic, self.state), prepare=not self.pooled)

    def raw_direct(self) -> None:
        self.direct_conn.execute(self.insert_sql, (uuid.uuid4(), self.topic, self.state), prepare=True)

    def raw_libpq(self) -> None:
        from psycopg import generators, pq

        pgconn = self.conn.pgconn
        params = [str(uuid.uuid4()).encode(), self.topic.encode(), self.state]
        formats = [pq.Format.TEXT, pq.Format.TEXT, pq.Format.BINARY]
        if self.pooled:  # Parse, Bind and Execute in one message, as the store sends its own behind a pooler
            pgconn.send_query_params(self.insert_libpq, params, param_formats=formats)
        else:
            pgconn.send_query_prepared(b"bench_raw_insert", params, formats)
        (result,) = self.conn.wait(generators.execute(pgconn))
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise RuntimeError(result.get_error_field(pq.DiagnosticField.MESSAGE_PRIMARY))

    def raw_function(self) -> None:
        self.conn.execute(self.function_sql, (uuid.uuid4(), 1, self.topic, self.state, self.wrapped_key),
                          prepare=not self.pooled).fetchall()

    def recorder_only(self) -> None:
        from infrastructure.personal_data import KeyedStoredEvent

        self.store.recorder.insert_events([KeyedStoredEvent(uuid.uuid4(), 1, self.topic, self.state, self.wrapped_key)])

    def start(self) -> None:
        self.service.start(self.widget, ORIGIN, VISITOR)

    def start_plain(self) -> None:
        self.service_plain.start(self.widget, ORIGIN, VISITOR)

    def start_direct(self) -> None:
        self.service_direct.start(self.widget, ORIGIN, VISITOR)

    def start_no_ping(self) -> None:
        self.service_no_ping.start(self.widget, ORIGIN, VISITOR)

    def sign_only(self) -> None:
        from application.conversations import RoomTicket, new_identity, new_room

        conversation_id = uuid.uuid4()
        w = self.widget
        self.issuer.grant(RoomTicket(str(conversation_id), w.organization_id, w.widget_id, w.agent_id, w.agent_version_id,
                                     new_room(conversation_id), new_identity(), VISITOR["name"]))

    def save_only(self) -> None:
        from application.conversations import new_identity, new_room
        from domain.conversation import CHANNEL, Conversation, hash_resume_token

        conversation_id = uuid.uuid4()
        w = self.widget
        conversation = Conversation(
            id=conversation_id, organization_id=w.organization_id, widget_id=uuid.UUID(w.widget_id),
            agent_id=uuid.UUID(w.agent_id), agent_version_id=uuid.UUID(w.agent_version_id), channel=CHANNEL,
            room=new_room(conversation_id), participant_identity=new_identity(),
            resume_token_hash=hash_resume_token(secrets.token_urlsafe(32)), visitor=VISITOR, origin=ORIGIN,
        )
        self.store.save(conversation)

    def rows(self) -> list[Row]:
        through = ", through PgBouncer, unprepared" if self.pooled else ""
        direct = [
            Row("raw_direct", "raw psycopg INSERT on a direct connection, prepared (diagnostic: the pooler's cost)",
                self.raw_direct, is_part=True),
            Row("start_direct", "start on direct connections (diagnostic: the pooler's cost)", self.start_direct,
                is_part=True),
        ] if self.pooled else []
        return [
            Row("raw", f"raw psycopg INSERT ({self.state_size} B state{through})", self.raw_insert),
            Row("raw_libpq", "raw INSERT sent through psycopg's libpq layer, as the store sends its own (diagnostic)",
                self.raw_libpq, is_part=True),
            Row("raw_function", "raw call of the store's insert function (diagnostic)", self.raw_function, is_part=True),
            Row("recorder", "the store's recorder alone: `insert_events` of a prebuilt stored event (diagnostic)",
                self.recorder_only, is_part=True),
            Row("start", "ConversationService.start", self.start),
            Row("sign", "  of which: token signing alone", self.sign_only, is_part=True),
            Row("save", "  of which: aggregate + store.save alone", self.save_only, is_part=True),
            Row("start_no_ping", "start with POSTGRES_PRE_PING=n (diagnostic)", self.start_no_ping, is_part=True),
            Row("start_plain", "start without encryption or key row, as before personal data was sealed (the old figure)",
                self.start_plain, is_part=True),
            *direct,
        ]

    def stored_rows(self) -> tuple[int, int]:
        events = self.conn.execute(f'SELECT count(*) FROM "{self.schema}".widgets_events').fetchone()
        raw = self.conn.execute(f'SELECT count(*) FROM "{self.schema}".raw_events').fetchone()
        return int(events[0]), int(raw[0])

    def close(self) -> None:
        import psycopg

        closings = [self.store.close, self.store_no_ping.close, self.store_plain.close, self.conn.close]
        if self.pooled:
            closings += [self.store_direct.close, self.direct_conn.close]
        for closing in closings:
            try:
                closing()
            except Exception:
                pass
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def start_pgbouncer(pg_url: str) -> PrivatePgBouncer:
    """Debian's PgBouncer in transaction mode in front of the PostgreSQL at `pg_url` (on loopback), as the tests run it."""
    import shutil
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    if parts.hostname not in (None, "127.0.0.1", "localhost"):
        raise SystemExit(f"--pooler fronts a PostgreSQL on 127.0.0.1, not {parts.hostname}")
    if not (shutil.which("pgbouncer") or os.path.exists("/usr/sbin/pgbouncer")):
        raise SystemExit("--pooler needs PgBouncer: apt-get install -y pgbouncer")
    return PrivatePgBouncer(parts.port or 5432).start()


def schema_exists(pg_url: str, schema: str) -> bool:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is not None


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(entry[3] for (path, _, func), entry in stats.stats.items()  # type: ignore[attr-defined]
               if func == name and path.endswith(suffix))


def start_parts(stats: pstats.Stats) -> list[tuple[str, float]]:
    """A start's time split into named parts (seconds over the whole profile); the parts add up to the total."""
    total = cumulative(stats, "application/conversations.py", "start")
    checkout = cumulative(stats, "psycopg_pool/pool.py", "getconn")
    ping = cumulative(stats, "psycopg_pool/pool.py", "check_connection")
    sign = cumulative(stats, "infrastructure/livekit.py", "grant")  # runs inside the insert, during its round trip
    insert = cumulative(stats, "infrastructure/pg_recorder.py", "insert_events") - checkout - sign
    mapper = cumulative(stats, "eventsourcing/persistence.py", "to_stored_event")
    return [
        ("pool checkout (`getconn`), with the ping of a connection idle for over 0.5 s", checkout),
        ("  of which pings (`check_connection`: `execute('')`, a round trip)", ping),
        ("the INSERT: the one-event function's call and its wait (less the signing done meanwhile)", insert),
        ("mapper: event to stored event (`to_stored_event`: transcoding to JSON)", mapper),
        ("LiveKit token signing (`LiveKitIssuer.grant`), during the INSERT's round trip", sign),
        ("everything else (the aggregate and its event, ids, hashing, the pool's return)",
         total - checkout - insert - mapper - sign),
        ("total (`ConversationService.start`)", total),
    ]


def profile_starts(bench: Bench, count: int, top: int = 25) -> str:
    """cProfile of `count` starts twice, on the wall clock then on this thread's CPU clock: a breakdown of a
    start into parts, then the functions by own and cumulative time (wall clock)."""
    profiles = {}
    for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.thread_time)):
        profiler = cProfile.Profile(clock)
        profiler.enable()
        for _ in range(count):
            bench.start()
        profiler.disable()
        profiles[clock_name] = profiler
    out = io.StringIO()
    wall = pstats.Stats(profiles["wall"], stream=out)
    cpu = pstats.Stats(profiles["cpu"], stream=out)
    wall_parts, cpu_parts = start_parts(wall), start_parts(cpu)
    wall_total, cpu_total = wall_parts[-1][1], cpu_parts[-1][1]
    out.write(f"cProfile of {count} `ConversationService.start` calls, on the wall clock and on the thread's CPU clock "
              "(the profiler inflates both; compare shares):\n\n")
    out.write("| part of a start | wall ms | share of wall | CPU ms | share of CPU |\n| --- | ---: | ---: | ---: | ---: |\n")
    for (label, w), (_, c) in zip(wall_parts, cpu_parts, strict=True):
        out.write(f"| {label} | {w / count * 1e3:.3f} | {w / wall_total:.0%} | {c / count * 1e3:.3f} | {c / cpu_total:.0%} |\n")
    out.write("\n")
    wall.sort_stats("tottime").print_stats(top)
    wall.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    where = "through PgBouncer (transaction mode, every row)" if results.get("pooler") else "on PostgreSQL"
    lines = [
        f"Conversation starts {where}: single thread, {results['seconds']:g} s per row in {results['rounds']} "
        f"alternated slices of {results['slice']:g} s. Row size: `{results['topic']}`, {results['state_bytes']} B of state, "
        f"{results['events_per_start']} row(s) per start. Load average {results['load_before']} -> {results['load_after']}.",
        "",
        "| operation | ops/s | p50 ms | p99 ms | client CPU µs/op | vs raw INSERT | side by side: quartiles |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, row in rows.items():
        spread = "" if key == "raw" else " / ".join(f"{q:.2f}" for q in quartiles(row["round_ratios"]))
        lines.append(f"| {row['label'].strip()} | {row['per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                     f"| {row['cpu_us']:,.0f} | {row['ratio']:.2f} | {spread} |")
    verdict = "meets" if results["ratio"] >= RATIO_TARGET else "is below"
    low, median, high = quartiles(rows["start"]["round_ratios"])
    lines += ["", f"Ratio `start` / raw INSERT: **{results['ratio']:.2f}** (slices side by side: median {median:.2f}, "
                  f"quartiles {low:.2f} to {high:.2f}); target >= {RATIO_TARGET}: {verdict} it. Against the raw "
                  f"INSERT sent through libpq as the store sends its own: "
                  f"{rows['start']['per_s'] / rows['raw_libpq']['per_s']:.2f}. The same start without sealing personal "
                  f"data and without the key row (the path before encryption), same run: "
                  f"{rows['start_plain']['ratio']:.2f}."]
    if results.get("pooler"):
        lines += ["", f"The pooler's own cost, same run: raw INSERT through PgBouncer / direct (prepared) "
                      f"{rows['raw']['per_s'] / rows['raw_direct']['per_s']:.2f}; start through PgBouncer / direct "
                      f"{rows['start']['per_s'] / rows['start_direct']['per_s']:.2f}; start / raw INSERT, both direct: "
                      f"{rows['start_direct']['per_s'] / rows['raw_direct']['per_s']:.2f}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s per row (the CI smoke size)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per row in all (default 20; quick 1)")
    parser.add_argument("--slice", type=float, default=0.25, help="seconds per row and round (default 0.25)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls of each row first (default 200; quick 20)")
    parser.add_argument("--profile", action="store_true", help="also cProfile starts and print the top functions")
    parser.add_argument("--profile-count", type=int, default=2000, help="starts under the profiler (default 2000)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a fresh schema is made and dropped)")
    parser.add_argument("--pooler", action="store_true",
                        help="every row through a PgBouncer (transaction mode) this script starts in front of --pg")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    # The development LiveKit secret ("secret") is short; PyJWT warns on every token it signs.
    warnings.filterwarnings("ignore", message="The HMAC key is")
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 20.0)
    slice_seconds = min(args.slice, seconds)
    rounds = max(1, round(seconds / slice_seconds))
    warmup = args.warmup if args.warmup is not None else (20 if args.quick else 200)

    run_id = uuid.uuid4().hex[:10]
    results: dict[str, Any] = {"run_id": run_id, "rounds": rounds, "seconds": seconds, "slice": slice_seconds,
                               "load_before": load_average(), "pooler": args.pooler}
    bouncer = start_pgbouncer(args.pg) if args.pooler else None
    try:
        bench = Bench(args.pg, run_id, pooler_url=bouncer.url if bouncer else None)
    except BaseException:
        if bouncer is not None:
            bouncer.stop()
        raise
    results["schema"] = bench.schema
    try:
        results.update(topic=bench.topic, state_bytes=bench.state_size, events_per_start=bench.events_per_start)
        rows = bench.rows()
        for row in rows:
            for _ in range(warmup):
                row.operation()
        samples: dict[str, list[Sample]] = {row.key: [] for row in rows}
        for round_index in range(rounds):
            shift = round_index % len(rows)
            for row in rows[shift:] + rows[:shift]:
                samples[row.key].append(timed_loop(row.operation, slice_seconds))
            if (round_index + 1) % max(1, rounds // 4) == 0 or round_index + 1 == rounds:
                start, raw = samples["start"], samples["raw"]
                so_far = sum(x.ops for x in start) / sum(x.seconds for x in start) / (sum(x.ops for x in raw) / sum(x.seconds for x in raw))
                say(f"round {round_index + 1}/{rounds}: start / raw INSERT so far {so_far:.2f}")
        table: dict[str, Any] = {}
        raw_samples = samples["raw"]
        raw_per_s = sum(x.ops for x in raw_samples) / sum(x.seconds for x in raw_samples)
        for row in rows:
            runs = samples[row.key]
            ops, wall = sum(x.ops for x in runs), sum(x.seconds for x in runs)
            latencies = [latency for x in runs for latency in x.latencies]
            table[row.key] = {
                "label": row.label,
                "part": row.is_part,
                "per_s": ops / wall,
                "ratio": ops / wall / raw_per_s,
                "p50_ms": Sample(ops, wall, 0.0, latencies).percentile(0.5),
                "p99_ms": Sample(ops, wall, 0.0, latencies).percentile(0.99),
                "cpu_us": sum(x.cpu_seconds for x in runs) / ops * 1e6,
                "ops": ops,
                "seconds": wall,
                "round_ratios": [x.per_s / r.per_s for x, r in zip(runs, raw_samples, strict=True)],
            }
        results["rows"] = table
        results["ratio"] = table["start"]["ratio"]
        results["ratio_paired"] = statistics.median(table["start"]["round_ratios"])
        results["stored"] = dict(zip(("events", "raw"), bench.stored_rows(), strict=True))
        if args.profile:
            results["profile"] = profile_starts(bench, args.profile_count)
    finally:
        try:
            bench.close()
        finally:
            if bouncer is not None:
                bouncer.stop()
    results["load_after"] = load_average()
    results["markdown"] = markdown(results)
    if results.get("profile"):
        print(results["profile"])
    print(results["markdown"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in results.items() if k != "profile"}, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    run_main(main)

"""Conversation starts with a verified visitor (ES256 and EdDSA tokens) beside anonymous starts, in one run.

    uv run python -m tests.bench.bench_visitor_tokens            # full: 20 s per row, in 80 slices of 0.25 s
    uv run python -m tests.bench.bench_visitor_tokens --quick    # 1 s per row

Each row calls `ConversationService.start` in a loop, single-threaded, on the
production-wired PostgreSQL `EventStore` (`bench_conversations` says how), in a
fresh schema, with the production `VisitorTokenVerifier`. The baseline is the
same start without a token, on the same widget. The token rows pass a token the
site signed (prepared before timing: the site signs, not us), one of a pool of
tokens for distinct visitors, so each start verifies a signature, checks the
claims and derives the visitor's lookup value. Parsed keys are cached per widget
and key; nothing caches a verified token. Diagnostic rows time the verification
alone. Rows are measured in alternated slices, as in `bench_conversations`, and
the table gives each row's throughput and the quartiles of the ratios of slices
measured side by side. Target: a verified start at >= 0.8 of an anonymous one.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tests.bench.bench_conversations import Row, Sample, quartiles, timed_loop
from tests.bench.common import load_average, run_main
from tests.conftest import PRODUCTION_SECRETS

DEFAULT_PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RATIO_TARGET = 0.8
ORG = "org_bench"
ORIGIN = "https://example.com"
VISITOR = {"name": "Ada", "locale": "en-GB"}
POOL = 500


class Bench:
    def __init__(self, pg_url: str, run_id: str) -> None:
        import psycopg

        from application.conversations import ConversationService, LiveWidget
        from application.store import EventStore
        from domain.identity import parse_identity_key
        from infrastructure.eventstore import postgres_env
        from infrastructure.livekit import LiveKitIssuer
        from infrastructure.settings import Settings
        from infrastructure.visitor_tokens import VisitorTokenVerifier
        from tests.visitors import SiteKey

        self.pg_url = pg_url
        self.schema = f"benchvis_{run_id}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        defaults = Settings(**PRODUCTION_SECRETS)
        issuer = LiveKitIssuer(url=defaults.livekit_url, api_key=defaults.livekit_api_key, api_secret=defaults.livekit_api_secret,
                               agent_name=defaults.livekit_agent_name, ttl_seconds=defaults.livekit_token_ttl)
        self.store = EventStore(env=postgres_env(pg_url, pool_size=2, schema=self.schema))
        self.verifier = VisitorTokenVerifier(defaults.data_key)
        self.service = ConversationService(self.store, issuer, self.verifier)
        self.sites = {alg: SiteKey.generate(alg, f"{alg.lower()}-1") for alg in ("ES256", "EdDSA")}
        widget_id = str(uuid.uuid4())
        self.widget = LiveWidget(
            widget_id=widget_id, organization_id=ORG, agent_id=str(uuid.uuid4()), agent_version_id=str(uuid.uuid4()),
            config={"v1": {"identity": {"mode": "optional"}}},
            identity_keys=tuple(parse_identity_key(site.public_jwk) for site in self.sites.values()),
        )
        self.tokens = {
            alg: itertools.cycle([site.token(widget_id, sub=f"visitor-{i}", name="Ada", lifetime=24 * 3600) for i in range(POOL)])
            for alg, site in self.sites.items()
        }

    def start_anonymous(self) -> None:
        self.service.start(self.widget, ORIGIN, VISITOR)

    def start_with(self, alg: str) -> Callable[[], None]:
        tokens = self.tokens[alg]
        return lambda: self.service.start(self.widget, ORIGIN, VISITOR, next(tokens))

    def verify_with(self, alg: str) -> Callable[[], None]:
        tokens, widget = self.tokens[alg], self.widget
        return lambda: self.verifier.verify(next(tokens), widget.widget_id, widget.identity_keys)

    def rows(self) -> list[Row]:
        return [
            Row("anonymous", "ConversationService.start, no token", self.start_anonymous),
            Row("es256", "start with an ES256 visitor token", self.start_with("ES256")),
            Row("eddsa", "start with an EdDSA visitor token", self.start_with("EdDSA")),
            Row("verify_es256", "  ES256 token verification alone (diagnostic)", self.verify_with("ES256"), is_part=True),
            Row("verify_eddsa", "  EdDSA token verification alone (diagnostic)", self.verify_with("EdDSA"), is_part=True),
        ]

    def started(self) -> int:
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            return int(conn.execute(f'SELECT count(*) FROM "{self.schema}".widgets_events').fetchone()[0])

    def close(self) -> None:
        import psycopg

        try:
            self.store.close()
        finally:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    lines = [
        f"Conversation starts on PostgreSQL, single thread, {results['seconds']:g} s per row in {results['rounds']} alternated "
        f"slices of {results['slice']:g} s. Load average {results['load_before']} -> {results['load_after']}.",
        "",
        "| operation | ops/s | p50 ms | p99 ms | client CPU µs/op | vs start without a token | side by side: quartiles |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, row in rows.items():
        spread = "" if key == "anonymous" else " / ".join(f"{q:.2f}" for q in quartiles(row["round_ratios"]))
        ratio = "" if row["part"] else f"{row['ratio']:.2f}"
        lines.append(f"| {row['label'].strip()} | {row['per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                     f"| {row['cpu_us']:,.0f} | {ratio} | {'' if row['part'] else spread} |")
    for key in ("es256", "eddsa"):
        verdict = "met" if rows[key]["ratio"] >= RATIO_TARGET else "not met"
        lines.append(f"\n{rows[key]['label']} / without: **{rows[key]['ratio']:.2f}** (target >= {RATIO_TARGET}: {verdict})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s per row (the CI smoke size)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per row in all (default 20; quick 1)")
    parser.add_argument("--slice", type=float, default=0.25, help="seconds per row and round (default 0.25)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls of each row first (default 200; quick 20)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a fresh schema is made and dropped)")
    args = parser.parse_args(argv)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    warnings.filterwarnings("ignore", message="The HMAC key is")  # the development LiveKit secret is short
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 20.0)
    slice_seconds = min(args.slice, seconds)
    rounds = max(1, round(seconds / slice_seconds))
    warmup = args.warmup if args.warmup is not None else (20 if args.quick else 200)
    run_id = uuid.uuid4().hex[:10]
    results: dict[str, Any] = {"run_id": run_id, "rounds": rounds, "seconds": seconds, "slice": slice_seconds,
                               "load_before": load_average()}
    bench = Bench(args.pg, run_id)
    results["schema"] = bench.schema
    try:
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
                say(f"round {round_index + 1}/{rounds}")
        base = samples["anonymous"]
        base_per_s = sum(x.ops for x in base) / sum(x.seconds for x in base)
        table: dict[str, Any] = {}
        for row in rows:
            runs = samples[row.key]
            ops, wall = sum(x.ops for x in runs), sum(x.seconds for x in runs)
            latencies = [latency for x in runs for latency in x.latencies]
            summary = Sample(ops, wall, 0.0, latencies)
            table[row.key] = {
                "label": row.label, "part": row.is_part, "per_s": ops / wall, "ratio": ops / wall / base_per_s,
                "p50_ms": summary.percentile(0.5), "p99_ms": summary.percentile(0.99),
                "cpu_us": sum(x.cpu_seconds for x in runs) / ops * 1e6, "ops": ops,
                "round_ratios": [x.per_s / b.per_s for x, b in zip(runs, base, strict=True)],
            }
        results["rows"] = table
        results["ratios"] = {key: table[key]["ratio"] for key in ("es256", "eddsa")}
        results["ratios_paired"] = {key: statistics.median(table[key]["round_ratios"]) for key in ("es256", "eddsa")}
        results["started"] = bench.started()
        results["expected_started"] = sum(table[k]["ops"] for k in ("anonymous", "es256", "eddsa")) + 3 * warmup
    finally:
        bench.close()
    results["load_after"] = load_average()
    results["markdown"] = markdown(results)
    print(results["markdown"])
    return results


if __name__ == "__main__":
    run_main(main)

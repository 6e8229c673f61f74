"""Personal data benchmarks (issue 13): rebuilding over sealed conversations beside a raw scan, and the cost of
`widgets rotate-data-key` per 10,000 conversations, each beside a baseline measured in the same run.

    uv run python -m tests.bench.bench_personal_data            # 20,000 conversations, 3 rounds
    uv run python -m tests.bench.bench_personal_data --quick    # 300 conversations, 1 round

Two fresh PostgreSQL schemas get the same conversations (a start with the visitor's name, a submitted form, a
feedback comment: three events each), saved 100 aggregates at a time: one through the event store as production
wires it (`open_event_store`: values sealed under a data key per conversation, its wrapped key written with the
start), one through a store without the vault (as the code before encryption stored them).

1. Rebuild: `rebuild_sql` of the conversation list (one transaction, as `widgets rebuild` runs it) over each
   schema, beside the raw scan the projection bench uses as its baseline (the same rows paged by 500,
   `SELECT` + `json.loads`, in the sealed schema: ciphertext is longer). Diagnostic: every event decoded with its
   personal values opened (what an admin read does per event: a key-table query per conversation and an AES-GCM
   open per value). Target: the rebuild at least 0.25 of the raw scan.
2. Rotation: `PersonalDataVault.rotate` over every key (batches of 1,000, one transaction each), alternately from
   the first deployment key to a second and back, so that every round rewraps every key; its final
   `VACUUM FULL` of the key table is timed alone as well. Baseline: a raw psycopg pass over the same table
   (`SELECT` a page of 1,000, `UPDATE` each row to the same bytes, one transaction per page). Diagnostic: unwrap
   and wrap alone, in memory. Figures are given per 10,000 conversations.

Rounds alternate the rows measured, so that this shared machine's drift hits each alike; the median is printed.
Everything runs on 127.0.0.1; both schemas are dropped at the end, even on failure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from tests.bench.common import load_average, run_main

DEFAULT_PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REBUILD_TARGET = 0.25
BATCH = 100
PER_10K = 10_000


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def conversations(n: int, seed: str) -> list[Any]:
    from domain.conversation import Conversation

    widget, agent, version = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    made = []
    for i in range(n):
        c = Conversation(id=uuid.uuid4(), organization_id="org_bench", widget_id=widget, agent_id=agent,
                         agent_version_id=version, channel="webrtc", room=f"conv_{seed}{i}", participant_identity=f"v{i}",
                         resume_token_hash="0" * 64, visitor={"name": f"Visitor {i}", "locale": "en-GB"},
                         origin="https://example.com")
        c.submit_form("pre", {"email": f"visitor{i}@mail.example", "topic": "Sales", "note": "Please call me back"})
        c.give_feedback(4, f"Helpful, thank you ({i})")
        made.append(c)
    return made


def fill(store: Any, items: Sequence[Any]) -> float:
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        store.save(*items[i : i + BATCH])
    return time.perf_counter() - started


def raw_scan(pg_url: str, schema: str, topics: Sequence[str]) -> int:
    import psycopg

    table = f'"{schema}"."widgets_events"'
    n, last = 0, 0
    with psycopg.connect(pg_url) as conn:
        while True:
            rows = conn.execute(
                f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table}"
                " WHERE notification_id > %s AND topic = ANY(%s) ORDER BY notification_id LIMIT 500",
                [last, list(topics)]).fetchall()
            for row in rows:
                json.loads(row[4])
            n += len(rows)
            if len(rows) < 500:
                return n
            last = rows[-1][0]


def rebuild(store: Any, db: Any) -> int:
    from projections.rebuild import rebuild_sql

    counted = {"n": 0, "last": 0}

    def on_page(_position: int, count: int) -> None:
        if count < counted["last"]:
            counted["last"] = 0
        counted["n"] += count - counted["last"]
        counted["last"] = count

    rebuild_sql(store, db, "conversation_list", on_page=on_page)
    return counted["n"]


def decode_opened(store: Any, topics: Sequence[str]) -> int:
    n, start = 0, 1
    stop = store.recorder.max_notification_id() or 0
    while start <= stop:
        page = store.recorder.select_notifications(start=start, limit=500, stop=stop, topics=list(topics))
        for notification in page:
            store.mapper.to_domain_event(notification)  # the event store's mapper: personal values opened
        n += len(page)
        if len(page) < 500:
            return n
        start = page[-1].id + 1
    return n


def raw_rewrite(pg_url: str, schema: str) -> int:
    import psycopg

    table = f'"{schema}"."widgets_data_keys"'
    n, after = 0, uuid.UUID(int=0)
    with psycopg.connect(pg_url) as conn:
        while True:
            with conn.transaction():
                rows = conn.execute(f"SELECT conversation_id, wrapped FROM {table} WHERE conversation_id > %s "
                                    "ORDER BY conversation_id LIMIT 1000", [after]).fetchall()
                if not rows:
                    return n
                with conn.cursor() as cur:
                    cur.executemany(f"UPDATE {table} SET wrapped = %s WHERE conversation_id = %s AND wrapped = %s",
                                    [(w, cid, w) for cid, w in rows])
            n += len(rows)
            after = rows[-1][0]


def timed(operation: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    n = operation()
    return time.perf_counter() - started, n


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 conversations, 1 round (the CI smoke size)")
    parser.add_argument("--conversations", type=int, default=None, help="conversations (default 20,000; quick 300)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every row (default 3; quick 1)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (WIDGETS_TEST_DATABASE_URL)")
    args = parser.parse_args(argv)
    n = args.conversations or (300 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)

    from application.store import EventStore
    from infrastructure.eventstore import open_event_store, store_env
    from infrastructure.personal_data import DeploymentKeys, PersonalDataVault, decode_deployment_key
    from infrastructure.settings import Settings
    from infrastructure.sql import Database
    from projections.conversation_list import ConversationListProjection
    from tests.servers import fresh_schema

    topics = list(ConversationListProjection.topics)
    first, second = new_key(), new_key()
    results: dict[str, Any] = {"conversations": n, "rounds": rounds, "load_start": load_average()}
    with ExitStack() as stack:
        sealed_schema = stack.enter_context(fresh_schema(args.pg))
        plain_schema = stack.enter_context(fresh_schema(args.pg))
        sealed_settings = Settings(database_url=args.pg, database_schema=sealed_schema, data_key=first, pg_pool_size=4)
        plain_settings = Settings(database_url=args.pg, database_schema=plain_schema, data_key=first, pg_pool_size=4)
        sealed = open_event_store(sealed_settings)
        stack.callback(sealed.close)
        plain = EventStore(env=store_env(plain_settings))
        stack.callback(plain.close)
        sealed_db, plain_db = Database(sealed_settings), Database(plain_settings)
        stack.callback(sealed_db.close)
        stack.callback(plain_db.close)

        seconds = fill(sealed, conversations(n, "s"))
        results["fill_sealed_per_s"] = n / seconds
        seconds = fill(plain, conversations(n, "p"))
        results["fill_plain_per_s"] = n / seconds
        import psycopg

        with psycopg.connect(args.pg, autocommit=True) as conn:
            for schema in (sealed_schema, plain_schema):
                conn.execute(f'ANALYZE "{schema}"."widgets_events"')  # as autovacuum would have
        log(f"stored {n:,} conversations twice ({3 * n:,} events each): sealed {results['fill_sealed_per_s']:,.0f}/s, "
            f"plain {results['fill_plain_per_s']:,.0f}/s (conversations saved per second, 100 a save)")

        rebuild_rows: dict[str, tuple[str, Callable[[], int]]] = {
            "raw": ("raw scan (SELECT + json.loads, pages of 500)", lambda: raw_scan(args.pg, sealed_schema, topics)),
            "rebuild_sealed": ("`rebuild_sql` conversation list, sealed conversations", lambda: rebuild(sealed, sealed_db)),
            "rebuild_plain": ("`rebuild_sql` conversation list, plaintext conversations (as before encryption)",
                              lambda: rebuild(plain, plain_db)),
            "decode_opened": ("every event decoded with its personal values opened (the admin edge's work)",
                              lambda: decode_opened(sealed, topics)),
        }
        samples: dict[str, list[float]] = {key: [] for key in rebuild_rows}
        for r in range(rounds):
            keys = list(rebuild_rows)
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                seconds, events = timed(rebuild_rows[key][1])
                assert events == 3 * n, (key, events)
                samples[key].append(events / seconds)
                log(f"  round {r + 1}: {key:15} {events:,} events in {seconds:.2f} s ({events / seconds:,.0f}/s)")
        table = {key: {"label": label, "per_s": statistics.median(samples[key]), "all": samples[key]}
                 for key, (label, _) in rebuild_rows.items()}
        for row in table.values():
            row["ratio"] = row["per_s"] / table["raw"]["per_s"]
        results["rebuild"] = table

        # Rotation: alternate the direction so that each round rewraps every key.
        raw_keys = [decode_deployment_key("WIDGETS_DATA_KEY", k) for k in (first, second)]
        rotation: dict[str, list[float]] = {"rotate": [], "vacuum_full": [], "raw_rewrite": [], "aes_only": []}
        current = 0
        for r in range(rounds):
            target = 1 - current
            vault = PersonalDataVault(DeploymentKeys(raw_keys[target], raw_keys[current]))
            vault.bind(sealed.recorder)
            order = ["rotate", "raw_rewrite"] if r % 2 == 0 else ["raw_rewrite", "rotate"]
            for row in order:
                if row == "rotate":
                    seconds, (rewrapped, already) = timed(lambda v=vault: v.rotate(1000))  # type: ignore[misc,return-value]
                    assert (rewrapped, already) == (n, 0), (rewrapped, already)
                    rotation["rotate"].append(seconds)
                    seconds, _ = timed(lambda: (sealed.recorder.scrub_data_keys(), 0)[1])
                    rotation["vacuum_full"].append(seconds)
                else:
                    seconds, rows = timed(lambda: raw_rewrite(args.pg, sealed_schema))
                    assert rows == n, rows
                    rotation["raw_rewrite"].append(seconds)
            current = target
            wrapped = [w for batch in sealed.recorder.iter_data_keys() for _, w in batch]
            ids = [cid for batch in sealed.recorder.iter_data_keys() for cid, _ in batch]
            back = DeploymentKeys(raw_keys[1 - current], raw_keys[current])
            started = time.perf_counter()
            for cid, w in zip(ids, wrapped, strict=True):
                back.rewrap(cid, w)
            rotation["aes_only"].append(time.perf_counter() - started)
            log(f"  round {r + 1}: rotate {rotation['rotate'][-1]:.2f} s (its VACUUM FULL alone "
                f"{rotation['vacuum_full'][-1]:.2f} s), raw rewrite {rotation['raw_rewrite'][-1]:.2f} s, "
                f"unwrap + wrap alone {rotation['aes_only'][-1]:.2f} s, over {n:,} keys")
        per_10k = {k: statistics.median(v) * PER_10K / n for k, v in rotation.items()}
        results["rotation"] = {"per_10k_seconds": per_10k, "all": rotation}
        # After the rounds, the new key alone reads every conversation.
        check = PersonalDataVault(DeploymentKeys(raw_keys[current]))
        check.bind(sealed.recorder)
        opened = check.load([cid for batch in sealed.recorder.iter_data_keys() for cid, _ in batch])
        assert len(opened) == n
    results["load_end"] = load_average()
    results["markdown"] = markdown(results)
    log(results["markdown"])
    return results


def markdown(results: dict[str, Any]) -> str:
    n, table = results["conversations"], results["rebuild"]
    lines = [f"{n:,} conversations ({3 * n:,} events), {results['rounds']} rounds, median; load average "
             f"{results['load_start']} at the start, {results['load_end']} at the end.", "",
             "| rebuild row | events/s | vs raw scan |", "|---|---:|---:|"]
    for key, row in table.items():
        mark = ""
        if key == "rebuild_sealed":
            met = "met" if row["ratio"] >= REBUILD_TARGET else "not met"
            mark = f" (target {REBUILD_TARGET}: {met})"
        ratio = f"**{row['ratio']:.2f}**{mark}" if key == "rebuild_sealed" else f"{row['ratio']:.2f}"
        lines.append(f"| {row['label']} | {row['per_s']:,.0f} | {ratio} |")
    sealed, plain = table["rebuild_sealed"]["per_s"], table["rebuild_plain"]["per_s"]
    lines += ["", f"Sealed against plaintext rebuild: {sealed / plain:.2f}.", "",
              "| rotation, per 10,000 conversations | seconds | vs raw rewrite |", "|---|---:|---:|"]
    per = results["rotation"]["per_10k_seconds"]
    labels = {"rotate": "`widgets rotate-data-key` (`PersonalDataVault.rotate`, batches of 1,000, with its VACUUM FULL)",
              "vacuum_full": "its final `VACUUM FULL` of the key table alone",
              "raw_rewrite": "raw psycopg: SELECT 1,000 + UPDATE each to the same bytes, a transaction a page",
              "aes_only": "unwrap + wrap alone, in memory"}
    for key, label in labels.items():
        lines.append(f"| {label} | {per[key]:.2f} | {per[key] / per['raw_rewrite']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)

"""`widgets verify`: replay every read model into scratch space and compare it with the live one.

Nothing live is touched: SQL models replay into a scratch schema (PostgreSQL)
or file (SQLite), the Redis lookup into a scratch key prefix, each up to the
position the live model has reached. A model still moving is compared again
at its new position, so only differences that persist are reported.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
import redis

from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_entry import decode_entry
from projections.public_views import RedisKeys, RedisPublicView, current_generation
from projections.rebuild import drop_generation
from projections.runner import EventLog, ProjectionRunner
from projections.setup import PUBLIC_LOOKUP, SQL_PROJECTIONS, sync_redis

ROUNDS = 5


@dataclass(frozen=True)
class Difference:
    model: str
    item: str
    field: str
    live: Any
    replayed: Any

    def __str__(self) -> str:
        return f"{self.model} {self.item} {self.field}: live={self.live!r} replayed={self.replayed!r}"


def _json(text: str) -> Any:
    return msgspec.json.decode(text)


def dump_sql(db: Database, name: str) -> dict[str, Any]:
    """Every row of one SQL read model, keyed by kind and id."""
    out: dict[str, Any] = {}
    if name == "widget_list":
        out |= {f"widget {i}": _json(j) for i, j in db.query("SELECT id, row_json FROM widget_list")}
        out |= {f"version {v}": bool(p) for v, p in db.query("SELECT version_id, published FROM widget_list_versions")}
        for version_id, widget_id in db.query("SELECT version_id, widget_id FROM widget_list_pins"):
            out.setdefault(f"pins {version_id}", set()).add(widget_id)
    elif name == "conversation_list":
        out |= {f"conversation {i}": _json(j) for i, j in db.query("SELECT id, row_json FROM conversation_list")}
        out |= {f"visitor of {i}": [o, w, r, s] for i, o, w, r, s in
                db.query("SELECT id, organization_id, widget_id, visitor_ref, started_at FROM conversation_visitors")}
        out |= {f"activity of {i}": [o, w, t, e, x] for i, o, w, t, e, x in
                db.query("SELECT id, organization_id, widget_id, last_active_at, ended, erased FROM conversation_activity")}
    elif name == "audit_feed":
        out |= {f"event {p}": {"organization_id": o, **_json(j)} for p, o, j in
                db.query("SELECT position, organization_id, event_json FROM audit_feed")}
        out |= {f"owner {a}": o for a, o in db.query("SELECT aggregate_id, organization_id FROM audit_owners")}
    elif name == "widget_stats":
        out |= {f"day {w} {d}": [c, r, f, _json(j)] for w, d, c, r, f, j in
                db.query("SELECT widget_id, day, conversations, resumes, forms_submitted, ratings_json FROM widget_stats_days")}
        out |= {f"conversation {i}": [w, d, r] for i, w, d, r in
                db.query("SELECT id, widget_id, feedback_day, rating FROM widget_stats_conversations")}
        out |= {f"form {i} {f}": d for i, f, d in db.query("SELECT id, form_id, day FROM widget_stats_forms")}
    elif name == "webhook_endpoints":
        out |= {f"endpoint {i}": _json(j) for i, j in db.query("SELECT id, row_json FROM webhook_endpoints")}
    elif name == "webhook_outbox":  # what the projection queued (the delivery columns are the dispatcher's)
        out |= {f"delivery {m}": [e, o, p, t] for m, e, o, p, t in
                db.query("SELECT message_id, endpoint_id, organization_id, position, event_type FROM webhook_outbox")}
        out |= {f"route {e}": [o, _json(j), bool(a)] for e, o, j, a in
                db.query("SELECT endpoint_id, organization_id, events_json, active FROM webhook_routes")}
        out |= {f"owner {a}": o for a, o in db.query("SELECT aggregate_id, organization_id FROM webhook_owners")}
    return out


def dump_redis(client: redis.Redis, keys: RedisKeys) -> dict[str, Any]:
    """Every entry of one generation (not the positions applied to them, which depend on page boundaries)."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{keys.base}*", count=1000):
        kind, ident = keys.id_of(raw.decode())
        if kind == "w":
            entry = decode_entry(client.get(raw))
            out[f"widget {ident}"] = {**msgspec.to_builtins(entry.row), "matcher": sorted(entry.matcher.exact | {f"*{w}" for w in entry.matcher.wildcard}),
                                      "body": _json(entry.body), "etag": entry.etag}
        elif kind == "v":
            out[f"version {ident}"] = client.get(raw).decode()
        elif kind == "p":
            out[f"pins {ident}"] = {m.decode() for m in client.smembers(raw)}
    return out


def compare(model: str, live: dict[str, Any], replayed: dict[str, Any]) -> list[Difference]:
    found: list[Difference] = []
    for item in sorted(live.keys() | replayed.keys()):
        a, b = live.get(item, _MISSING), replayed.get(item, _MISSING)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found += [Difference(model, item, f, a.get(f, _MISSING), b.get(f, _MISSING))
                      for f in sorted(a.keys() | b.keys()) if a.get(f, _MISSING) != b.get(f, _MISSING)]
        else:
            found.append(Difference(model, item, "(value)", a, b))
    return found


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


@contextmanager
def scratch_database(settings: Settings) -> Iterator[Database]:
    if settings.database_url:
        schema = f"verify_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        db = Database(dataclasses.replace(settings, database_schema=schema))
        try:
            yield db
        finally:
            db.close()
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    else:
        folder = tempfile.mkdtemp(prefix="widgets-verify-")
        db = Database(dataclasses.replace(settings, data_dir=folder))
        try:
            yield db
        finally:
            db.close()
            shutil.rmtree(folder, ignore_errors=True)


def _converge(model: str, live_position: Any, dump_live: Any, runner: ProjectionRunner, dump_replayed: Any) -> list[Difference]:
    differences: list[Difference] = []
    for _ in range(ROUNDS):
        position = live_position()
        runner.catch_up(stop_at=position)
        differences = compare(model, dump_live(), dump_replayed())
        if not differences or live_position() == position:
            return differences
    return differences


def verify(settings: Settings, store: EventLog, db: Database) -> tuple[list[Difference], list[str]]:
    """Compare every read model with a replay; returns the differences and the models checked."""
    differences: list[Difference] = []
    checked: list[str] = []
    with scratch_database(settings) as scratch:
        for name, (view_class, projection_class) in SQL_PROJECTIONS.items():
            live_view = view_class(db)
            replayed = view_class(scratch)
            view_class.prepare_replay(db, scratch)
            runner = ProjectionRunner(f"verify-{name}", store, replayed, projection_factory=projection_class, read_ahead=True)
            differences += _converge(name, live_view.position, lambda n=name: dump_sql(db, n), runner,
                                     lambda n=name: dump_sql(scratch, n))
            checked.append(name)
    differences += verify_erasures(store, db)
    checked.append("personal_data")
    if settings.redis_url:
        client = sync_redis(settings)
        try:
            differences += verify_redis(client, settings.redis_prefix, store)
            checked.append(PUBLIC_LOOKUP)
        finally:
            client.close()
    return differences, checked


def verify_erasures(store: EventLog, db: Database) -> list[Difference]:
    """Whether the key table, the events and the conversation list agree about which conversations are erased: a
    destroyed key without `conversation.personal_data_erased` (a crash between the two: erase it again to finish), an
    erased conversation whose key survives, or one the key table does not know as erased."""
    recorder = store.recorder
    if not hasattr(recorder, "erased_data_key_ids"):
        return []  # a store without personal data keys (in memory, for tests)
    destroyed = set(recorder.erased_data_key_ids())
    erased_rows = {uuid.UUID(i) for i, j in db.query("SELECT id, row_json FROM conversation_list")
                   if _json(j).get("erased_at") is not None}
    found: list[Difference] = []
    for cid in sorted(destroyed - erased_rows):
        conversation = _aggregate(store, cid)
        if conversation is not None and not getattr(conversation, "erased", False):
            found.append(Difference("personal_data", f"conversation {cid}", "erasure", "data key destroyed",
                                    "no conversation.personal_data_erased: erase it again to complete"))
    for cid in sorted(erased_rows - destroyed):
        found.append(Difference("personal_data", f"conversation {cid}", "erasure", "erased", "data key not recorded as destroyed"))
    for cid in sorted(recorder.select_data_keys(sorted(erased_rows))):
        found.append(Difference("personal_data", f"conversation {cid}", "data_key", "present", "destroyed"))
    return found


def _aggregate(store: EventLog, aggregate_id: uuid.UUID) -> Any:
    try:
        return store.repository.get(aggregate_id)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - gone or undecodable: nothing to say about its erasure here
        return None


def verify_redis(client: redis.Redis, prefix: str, store: EventLog) -> list[Difference]:
    live_keys = RedisKeys(prefix, current_generation(client, prefix))
    scratch_prefix = f"{prefix}verify-{uuid.uuid4().hex[:8]}:"
    client.set(RedisKeys(scratch_prefix, 1).current, 1)
    scratch = RedisPublicView(client, scratch_prefix, 1)
    try:
        runner = ProjectionRunner("verify-public_lookup", store, scratch, read_ahead=True)
        return _converge(PUBLIC_LOOKUP, lambda: int(client.get(live_keys.position) or 0),
                         lambda: dump_redis(client, live_keys), runner, lambda: dump_redis(client, scratch.keys))
    finally:
        drop_generation(client, scratch_prefix, 1)
        client.delete(scratch.keys.current)

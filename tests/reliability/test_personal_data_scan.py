"""No visitor's value is anywhere at rest, in any byte the stores keep, before erasure (sealed) or after it.

The scanner reads what the stores really keep, not what they answer: every
value of every PostgreSQL row in the test's schema; every file of those
tables, their indexes and TOAST tables (`pg_relation_filepath` under
`data_directory`, after a `CHECKPOINT`, so dead tuples and free space are
read too); every WAL segment in `pg_wal` (recycled ones too); every file under
the data folder (SQLite's databases with their free pages, `-wal` and `-shm`);
every Redis key of the test's prefix, its `DUMP` and its decoded members
(`DUMP` compresses long strings); every log line; every error answer. Webhooks
are delivered first, to an endpoint that accepts and one that fails (bodies are
rendered from the log when sent: the outbox, its errors and the delivery logs
must hold none of the values the bodies carried).

Before trusting a clean result, the test plants control values of its own the
scanner must find: a live row and a dead (deleted) row in PostgreSQL and in
SQLite, a Redis key and value, a file, a log line. A conversation written the
way the code before encryption wrote it (plaintext events) is a control too:
found before its erasure, and after it nowhere but PostgreSQL's WAL, which
keeps what was written until its segments are recycled (like a backup).

The visitors' values are unique tokens inside the name, the form values, the
feedback comment, the page context, and a verified visitor's external id,
name, email and token context; a token is searched for alone, so a value that
was cut, lowered or wrapped is still found. Limits: PostgreSQL compresses a
value over about 2 kB in its files (rows here are shorter, and the row scan
reads every live value uncompressed), and the server's own log is not read.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import structlog
from litestar.testing import TestClient

from api.app import create_app
from application.store import EventStore
from domain.conversation import Conversation
from infrastructure.eventstore import store_env
from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from tests.api.conftest import Admin
from tests.api.public_helpers import CONFIG, conversation_call, conversations_of, live_widget, start, sync
from tests.api.test_visitor_identity import CONTEXT
from tests.visitors import SiteKey
from tests.webhook_receiver import Receiver, receiving

Found = dict[str, set[str]]


def token(kind: str) -> str:
    return f"{kind}{uuid.uuid4().hex[:16]}"


class Scanner:
    """Where each needle is, among every byte the stores of one wiring keep."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.wal_control: str | None = None

    def find(self, needles: dict[str, str], logs: bytes, answers: bytes, wal: bool = True) -> Found:
        found: Found = defaultdict(set)
        wanted = {name: value.encode() for name, value in needles.items()}

        def look(where: str, blob: bytes) -> None:
            for name, needle in wanted.items():
                if needle in blob:
                    found[name].add(where)

        self.wal_control = token("ctlwal") if wal and self.settings.database_url else None
        if self.wal_control is not None:
            wanted["wal control"] = self.wal_control.encode()
        for where, blob in self._blobs(wal):
            look(where, blob)
        look("log", logs)
        look("error answer", answers)
        return dict(found)

    def _blobs(self, wal: bool) -> Iterable[tuple[str, bytes]]:
        data_dir = Path(self.settings.data_dir)
        if data_dir.exists():
            for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
                yield f"file {path.name}", path.read_bytes()
        if self.settings.database_url:
            yield from self._postgres(wal)
        if self.settings.redis_url:
            yield from self._redis()

    def _postgres(self, wal: bool) -> Iterable[tuple[str, bytes]]:
        schema = self.settings.database_schema
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            data_directory = Path(conn.execute("SHOW data_directory").fetchone()[0])
            if wal:
                # Every segment in pg_wal, recycled ones included (they keep their bytes until reused), read before
                # the CHECKPOINT below may recycle the one holding a control written just now.
                conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".scan_control (v text) WITH (autovacuum_enabled = false)')
                conn.execute(f'INSERT INTO "{schema}".scan_control VALUES (%s)', [self.wal_control])
                for segment in sorted((data_directory / "pg_wal").iterdir()):
                    if segment.is_file() and len(segment.name) == 24:
                        yield f"pg wal {segment.name}", segment.read_bytes()
            conn.execute("CHECKPOINT")  # every page written out to the table files
            tables = [r[0] for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'r'", [schema])]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{schema}"."{table}"'):
                    yield f"pg row {table}", b"\x00".join(_as_bytes(v) for v in row)
            relations = conn.execute(
                """WITH ours AS (SELECT oid, relname, reltoastrelid FROM pg_class WHERE relnamespace = %s::regnamespace),
                        toast AS (SELECT t.oid, o.relname || ' (toast)' AS relname FROM ours o JOIN pg_class t ON t.oid = o.reltoastrelid),
                        toast_index AS (SELECT i.indexrelid AS oid, t.relname || ' index' AS relname FROM toast t
                                        JOIN pg_index i ON i.indrelid = t.oid)
                   SELECT relname, pg_relation_filepath(oid) FROM (SELECT oid, relname FROM ours UNION ALL
                        SELECT oid, relname FROM toast UNION ALL SELECT oid, relname FROM toast_index) r""", [schema]).fetchall()
            for relname, filepath in relations:
                if filepath is None:
                    continue
                base = data_directory / filepath
                for segment in [base, *sorted(base.parent.glob(f"{base.name}.[0-9]*"))]:
                    if segment.exists():
                        yield f"pg file {relname}", segment.read_bytes()

    def _redis(self) -> Iterable[tuple[str, bytes]]:
        client = sync_client(self.settings.redis_url)
        try:
            for key in client.scan_iter(match=f"{self.settings.redis_prefix}*", count=1000):
                yield "redis key", key
                yield "redis dump", client.dump(key) or b""
                kind = client.type(key)
                members: list[bytes] = []
                if kind == b"string":
                    members = [client.get(key) or b""]
                elif kind == b"set":
                    members = list(client.smembers(key))
                elif kind == b"hash":
                    members = [k + b"=" + v for k, v in client.hgetall(key).items()]
                elif kind == b"list":
                    members = list(client.lrange(key, 0, -1))
                elif kind == b"zset":
                    members = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
                elif kind == b"stream":
                    members = [json.dumps([[k.decode(), {f.decode(): v.decode() for f, v in e.items()}]
                                           for k, e in client.xrange(key)]).encode()]
                yield "redis value", b"\x00".join(members)
        finally:
            client.close()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).encode()
    return str(value).encode()


def plant_controls(settings: Settings) -> dict[str, set[str]]:
    """Values the scanner must find, each where it is expected (a location prefix)."""
    expected: dict[str, set[str]] = {}
    marker = token("ctlfile")
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    (Path(settings.data_dir) / "scan-control.txt").write_text(f"a file holds {marker}\n")
    expected[marker] = {"file scan-control.txt"}
    live, dead = token("ctllive"), token("ctldead")
    if settings.database_url:
        schema = settings.database_schema
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{schema}".scan_control (v text) WITH (autovacuum_enabled = false)')
            conn.execute(f'INSERT INTO "{schema}".scan_control VALUES (%s), (%s)', [live, dead])
            conn.execute(f'DELETE FROM "{schema}".scan_control WHERE v = %s', [dead])
        expected[live] = {"pg row scan_control", "pg file scan_control"}
        expected[dead] = {"pg file scan_control"}  # a dead tuple: in the file, in no row
    else:
        path = Path(settings.data_dir) / "read_models.sqlite3"
        assert path.exists(), sorted(p.name for p in Path(settings.data_dir).iterdir())
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA secure_delete = OFF")  # what a delete leaves when nobody scrubs
            conn.execute("CREATE TABLE scan_control (v TEXT)")
            conn.execute("INSERT INTO scan_control VALUES (?), (?)", [live, dead])
            conn.commit()
            conn.execute("DELETE FROM scan_control WHERE v = ?", [dead])
            conn.commit()
        expected[live] = {"file read_models.sqlite3"}
        expected[dead] = {"file read_models.sqlite3"}
    if settings.redis_url:
        key, value = token("ctlkey"), token("ctlvalue")
        client = sync_client(settings.redis_url)
        client.set(f"{settings.redis_prefix}control:{key}", f"a value long enough to be compressed in a dump: {value}" * 3)
        client.close()
        expected[key] = {"redis key"}
        expected[value] = {"redis value"}
    logged = token("ctllog")
    structlog.get_logger("scan").warning("scan_control", marker=logged)
    expected[logged] = {"log"}
    return expected


def legacy_conversation(settings: Settings, widget: dict[str, Any], values: dict[str, str]) -> uuid.UUID:
    """A conversation as the code before encryption stored it: its personal values in the clear, no data key."""
    store = EventStore(env=store_env(settings))  # no personal-data vault: nothing sealed
    try:
        conversation = Conversation(
            id=uuid.uuid4(), organization_id="org_a", widget_id=uuid.UUID(widget["id"]),
            agent_id=uuid.UUID(widget["agent_id"]), agent_version_id=uuid.UUID(widget["agent_version_id"]), channel="webrtc",
            room=f"conv_{uuid.uuid4().hex[:8]}", participant_identity="visitor_legacy", resume_token_hash="0" * 64,
            visitor={"name": f"Old {values['legacy name']}"}, origin="https://example.com")
        conversation.submit_form("pre", {"email": f"{values['legacy email']}@old.example"})
        conversation.give_feedback(2, f"old comment {values['legacy comment']}")
        store.save(conversation)
    finally:
        store.close()
    return conversation.id


def matched(found: Found, expected: set[str]) -> set[str]:
    return {prefix for prefix in expected if any(where.startswith(prefix) for where in found)}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def test_no_visitor_value_is_at_rest_anywhere_before_or_after_erasure(
    settings: Settings, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, receiver: Receiver
) -> None:
    # Webhooks go to a receiver on loopback (the development switch), one endpoint answering 200, one 500.
    settings = dataclasses.replace(settings, log_format="json", log_level="debug", webhook_allow_private=True,
                                   webhook_retry_schedule="0.2,0.2", webhook_deliveries=True)
    values = {name: token(name.replace(" ", "")[:6]) for name in (
        "name", "email", "note", "comment", "page context", "bad form value",
        "verified id", "verified name", "verified email", "token context", "verified page context", "verified comment")}
    values["token context"] = uuid.uuid4().hex[:10]  # the widget's `plan` holds 10 characters
    legacy = {name: token(name.replace(" ", "")[:6]) for name in ("legacy name", "legacy email", "legacy comment")}
    answers: list[httpx.Response] = []
    scanner = Scanner(settings)
    key = SiteKey.generate("ES256", "k")
    app = create_app(settings)
    with TestClient(app) as client:
        client.event_hooks = {"request": [], "response": [answers.append]}
        admin = Admin(client, settings, "org_a", "alice")
        widget = live_widget(admin, app)
        for path in ("/ok", "/fail"):
            created = admin.call("POST", "/v1/webhook-endpoints", json={"url": receiver.url(path), "events": ["*"]})
            assert created.status_code == 201, created.text
        receiver.statuses["/fail"] = [500]
        verified_widget = live_widget(admin, app, config={"v1": {**CONFIG["v1"], "identity": {"mode": "optional"}, "context": CONTEXT}})
        assert admin.call("POST", f"/v1/widgets/{verified_widget['id']}/identity-keys", json={"jwk": key.public_jwk}).status_code == 201
        sync(app)

        # An anonymous visitor: a name, a form, feedback; a bad form value refused (400) without being echoed.
        grant = start(client, verified_widget["id"], body={"visitor": {"name": f"Ada {values['name']}"},
                                                           "context": {"page": f"/pricing/{values['page context']}"}}).json()
        cid, resume = grant["conversation_id"], grant["resume_token"]
        bad = conversation_call(client, verified_widget["id"], cid, "forms/pre",
                                {"resume_token": resume, "values": {"email": f"not an email {values['bad form value']}"}})
        assert bad.status_code == 400, bad.text
        form = {"email": f"{values['email']}@mail.example", "note": f"call me {values['note']}"}
        assert conversation_call(client, verified_widget["id"], cid, "forms/pre", {"resume_token": resume, "values": form}).status_code == 202
        assert conversation_call(client, verified_widget["id"], cid, "feedback",
                                 {"resume_token": resume, "rating": 5, "comment": f"great {values['comment']}"}).status_code == 202
        # A verified visitor: the claims and the token's context, the page's context beside them.
        visitor_token = key.token(verified_widget["id"], sub=f"ext-{values['verified id']}", name=f"Bo {values['verified name']}",
                                  email=f"{values['verified email']}@corp.example", context={"plan": values["token context"]})
        verified = start(client, verified_widget["id"], body={"visitor_token": visitor_token,
                                                              "context": {"page": f"/docs/{values['verified page context']}"}})
        assert verified.status_code == 201, verified.text
        vcid = verified.json()["conversation_id"]
        assert conversation_call(client, verified_widget["id"], vcid, "feedback",
                                 {"resume_token": verified.json()["resume_token"], "rating": 3,
                                  "comment": f"ok {values['verified comment']}"}).status_code == 202
        values["visitor token"] = visitor_token
        old = legacy_conversation(settings, widget, legacy)

        def wait_for_legacy() -> None:  # the projections of a conversation appended by another store
            from tests.api.public_helpers import eventually
            eventually(lambda: str(old) in conversations_of(admin, app, widget["id"]), what="the legacy conversation projected")

        wait_for_legacy()
        rows = conversations_of(admin, app, verified_widget["id"])
        assert rows[cid]["visitor"]["name"] == f"Ada {values['name']}" and rows[cid]["forms"][0]["values"] == form
        assert rows[vcid]["visitor"]["external_id"] == f"ext-{values['verified id']}"
        assert conversations_of(admin, app, widget["id"])[str(old)]["visitor"]["name"] == f"Old {legacy['legacy name']}"

        # The webhooks were rendered (bodies are made from the log at send time, the one place values leave in
        # the clear) and attempted, successfully and not, before anything is scanned.
        def delivered(path: str) -> bool:
            return any(cid.encode() in r.body for r in receiver.at(path))

        from tests.api.public_helpers import eventually
        eventually(lambda: delivered("/ok") and len([r for r in receiver.at("/fail") if cid.encode() in r.body]) >= 2,
                   timeout=30, what="the conversation's webhooks delivered and failed")
        assert any(values["name"].encode() in r.body for r in receiver.at("/ok")), "webhook bodies carry the opened values"
        controls = plant_controls(settings)

        def scan(needles: dict[str, str], wal: bool = True) -> Found:
            out, err = capfd.readouterr()
            logs.append((out + err + "\n".join(r.getMessage() for r in caplog.records)).encode())
            errors = b"\n".join(r.content for r in answers if r.status_code >= 400)
            return scanner.find(needles, b"\n".join(logs), errors, wal)

        logs: list[bytes] = []
        sealed = scan({**values, **controls_needles(controls)})
        assert not settings.database_url or any(w.startswith("pg wal") for w in sealed["wal control"]), "the WAL was not read"
        assert b'"event": "request"' in b"".join(logs), "the access log was not captured: nothing was checked"
        for needle, where in controls.items():
            assert matched(sealed.get(needle, set()), where) == where, f"control {needle}: found only in {sealed.get(needle)}"
        if settings.database_url:
            assert not any(w.startswith("pg row") for w in sealed[next(n for n in controls if n.startswith("ctldead"))])
        leaks = {name: sorted(sealed[name]) for name in values if name in sealed}
        assert not leaks, f"before erasure, in plaintext: {leaks}"
        before = scan(legacy, wal=False)
        assert set(before) == set(legacy), "the legacy conversation's plaintext is where the old code put it"

        # Erasure: one conversation, a verified visitor, the legacy conversation (rewritten in place).
        assert admin.call("DELETE", f"/v1/widgets/{verified_widget['id']}/conversations/{cid}/personal-data").status_code == 204
        assert admin.call("DELETE", f"/v1/visitors/ext-{values['verified id']}/personal-data").status_code == 204
        assert admin.call("DELETE", f"/v1/widgets/{widget['id']}/conversations/{old}/personal-data").status_code == 204
        sync(app)
        rows = conversations_of(admin, app, verified_widget["id"])
        assert rows[cid]["erased_at"] and rows[vcid]["erased_at"] and rows[cid]["visitor"] == {} == rows[vcid]["visitor"]
        assert conversations_of(admin, app, widget["id"])[str(old)]["visitor"] == {}

        after = scan({**values, **controls_needles(controls)})
        assert not settings.database_url or any(w.startswith("pg wal") for w in after["wal control"]), "the WAL was not read"
        for needle, where in controls.items():
            assert matched(after.get(needle, set()), where) == where, f"control {needle}: found only in {after.get(needle)}"
        leaks = {name: sorted(after[name]) for name in values if name in after}
        assert not leaks, f"after erasure, in plaintext: {leaks}"
        # The read models are scrubbed by the projection right after it commits the erasure (sync returns at the
        # commit): give it the moment. PostgreSQL's WAL keeps what was written until it is recycled: not read here.
        for _ in range(60):
            legacy_after = scan(legacy, wal=False)
            if not legacy_after:
                break
            time.sleep(0.5)
        leaks = {name: sorted(legacy_after[name]) for name in legacy if name in legacy_after}
        assert not leaks, f"the legacy conversation after its erasure: {leaks}"


def controls_needles(controls: dict[str, set[str]]) -> dict[str, str]:
    return {needle: needle for needle in controls}

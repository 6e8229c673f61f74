"""Stores of the public lookup: Redis (one server or a Redis Cluster) in production, in-process when embedded.

Both apply each event exactly once however often a page is delivered. In Redis
nothing rests on one global position inside a script, so the same code holds
on a cluster, where a script may only touch keys of one hash slot:
- every key of one widget (its entry and the position last applied to it)
  shares the hash tag `{widget-id}`, and every key of one agent version (its
  published flag, its pinned widgets, its applied position) the tag
  `{version-id}`;
- a page first asks whether the view (its generation's position and owner, all
  under the deployment's `{meta}` tag) has already passed it;
- then each widget and version the page changed is written by one script in
  its own slot, which refuses a page at or below the entry's applied position
  and one whose entry changed since the page read it (`CONFLICT`: the runner
  reads it again and re-applies the page); versions are written before
  widgets, so that a page applied again never meets a widget ahead of it;
- then one script in the `{meta}` slot moves the position (never backwards)
  and tells readers which widgets changed (sharded pub/sub on a cluster).
A crash between these steps leaves entries ahead of the position; the page is
then applied again, and the entries already at its end refuse it. Deleted
widgets keep their applied position, so a late page cannot bring them back.
Redis keeps each rebuild in its own generation of keys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import redis
from redis.cluster import RedisCluster

from infrastructure.redis_clients import queue_script
from projections.public_entry import PublicEntry, decode_entry, encode_entry, entry_for
from projections.widget_rows import Changes, WidgetRow

APPLIED, STALE, NOT_OWNER, CONFLICT = 1, 0, -1, 2

# KEYS: owner key, position key. ARGV: generation, first position.
CHECK_PAGE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 0 end
return 1
"""

# KEYS: the entry's applied-position key, then the keys it writes. ARGV: the applied position the page read
# ('' if it read none), the page's last position, then (op, key index, value) triples.
COMMIT_ENTRY = """
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if applied >= tonumber(ARGV[2]) then return 0 end
if ARGV[1] ~= '' and applied ~= tonumber(ARGV[1]) then return 2 end
for i = 3, #ARGV, 3 do
  local op, key, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if op == 'set' then redis.call('SET', key, value)
  elseif op == 'del' then redis.call('DEL', key)
  elseif op == 'sadd' then redis.call('SADD', key, value)
  elseif op == 'srem' then redis.call('SREM', key, value) end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: owner key, position key, invalidation channel. ARGV: generation, last position, publish command
# ('' for none), then the ids of the widgets changed.
COMMIT_POSITION = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
if ARGV[3] ~= '' then
  for i = 4, #ARGV do redis.call(ARGV[3], KEYS[3], ARGV[i]) end
end
return 1
"""

# KEYS: a version's pins, its applied-position key.
READ_PINS = "return {redis.call('SMEMBERS', KEYS[1]), redis.call('GET', KEYS[2])}"


class RedisKeys:
    """Key names of one deployment (prefix) and one generation, each with the hash tag of its slot."""

    def __init__(self, prefix: str, generation: int) -> None:
        self.prefix = prefix
        self.generation = generation
        self.base = f"{prefix}g{generation}:"
        self.meta = f"{prefix}{{meta}}:"  # pointers, positions and the channel: one slot, so one script moves them

    current = property(lambda self: f"{self.meta}generation")
    building = property(lambda self: f"{self.meta}building")
    counter = property(lambda self: f"{self.meta}generation_counter")
    channel = property(lambda self: f"{self.meta}invalidate")
    position = property(lambda self: f"{self.meta}g{self.generation}:position")
    ready = property(lambda self: f"{self.meta}g{self.generation}:ready")

    def widget(self, widget_id: str) -> str:
        return f"{self.base}w:{{{widget_id}}}"

    def widget_applied(self, widget_id: str) -> str:
        return f"{self.base}aw:{{{widget_id}}}"

    def version(self, version_id: str) -> str:
        return f"{self.base}v:{{{version_id}}}"

    def pins(self, version_id: str) -> str:
        return f"{self.base}p:{{{version_id}}}"

    def version_applied(self, version_id: str) -> str:
        return f"{self.base}av:{{{version_id}}}"

    def generation_keys(self) -> list[str]:
        """The keys of this generation outside its `base` (under the meta tag)."""
        return [self.position, self.ready]

    def id_of(self, key: str) -> tuple[str, str]:
        """(kind, id) of one of this generation's entry keys: `w`, `aw`, `v`, `p` or `av`."""
        kind, _, tagged = key[len(self.base):].partition(":")
        return kind, tagged.strip("{}")


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def current_generation(client: redis.Redis, prefix: str) -> int:
    keys = RedisKeys(prefix, 0)
    client.set(keys.current, "1", nx=True)
    return int(client.get(keys.current) or 1)


class RedisPublicView:
    """The public lookup in Redis, for one generation; `owner_key` says who may write it."""

    def __init__(self, client: redis.Redis, prefix: str, generation: int, building: bool = False) -> None:
        self.client = client
        self.keys = RedisKeys(prefix, generation)
        self.owner_key = self.keys.building if building else self.keys.current
        self.cluster = is_cluster_client(client)
        self.publish = "SPUBLISH" if self.cluster else "PUBLISH"
        self._check = client.register_script(CHECK_PAGE)
        self._position_script = client.register_script(COMMIT_POSITION)
        self._pins = client.register_script(READ_PINS)
        self._ready = False
        self._read: dict[str, int] = {}  # applied-position key -> what this page read there
        self._conflict = False

    def announce_when_caught_up(self) -> None:
        """After an outage, tell readers again once caught up: what they cached may predate it."""
        self._ready = False

    def mark_caught_up(self) -> None:
        """Readers trust this generation only once it has caught up with the log (after a rebuild, or
        after Redis lost its data); until then they read through to the event store."""
        if not self._ready:
            self.client.set(self.keys.ready, "1")
            if self.owner_key == self.keys.current:
                self.client.execute_command(self.publish, self.keys.channel, "*")
            self._ready = True

    @property
    def generation(self) -> int:
        return self.keys.generation

    def position(self) -> int:
        return int(self.client.get(self.keys.position) or 0)

    def is_current(self) -> bool:
        return self.client.get(self.owner_key) == str(self.keys.generation).encode()

    def _mget(self, keys: list[str]) -> list[Any]:
        if not keys:
            return []
        return self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys)

    def _note(self, applied_key: str, raw: Any) -> None:
        value = int(raw or 0)
        if self._read.setdefault(applied_key, value) != value:
            self._conflict = True  # read twice in one page, and written in between by another runner

    def load(self, widget_ids: set[str], version_ids: set[str]) -> tuple[dict[str, WidgetRow], dict[str, bool]]:
        widget_list, version_list = sorted(widget_ids), sorted(version_ids)
        keys: list[str] = []
        for w in widget_list:
            keys += [self.keys.widget(w), self.keys.widget_applied(w)]  # one slot: read together
        for v in version_list:
            keys += [self.keys.version(v), self.keys.version_applied(v)]
        values = self._mget(keys)
        rows: dict[str, WidgetRow] = {}
        for i, w in enumerate(widget_list):
            entry, applied = values[2 * i], values[2 * i + 1]
            self._note(self.keys.widget_applied(w), applied)
            if entry is not None:
                rows[w] = decode_entry(entry).row
        versions: dict[str, bool] = {}
        offset = 2 * len(widget_list)
        for i, v in enumerate(version_list):
            flag, applied = values[offset + 2 * i], values[offset + 2 * i + 1]
            self._note(self.keys.version_applied(v), applied)
            if flag is not None:
                versions[v] = flag == b"1"
        return rows, versions

    def pinned_widgets(self, version_id: str) -> set[str]:
        members, applied = self._pins(keys=[self.keys.pins(version_id), self.keys.version_applied(version_id)])
        self._note(self.keys.version_applied(version_id), applied)
        return {m.decode() for m in members}

    def commit(self, changes: Changes, first: int, last: int) -> int:
        read, conflict = self._read, self._conflict
        self._read, self._conflict = {}, False
        checked = int(self._check(keys=[self.owner_key, self.keys.position], args=[str(self.keys.generation), str(first)]))
        if checked != APPLIED:
            return checked
        if conflict:
            return CONFLICT
        entries: dict[str, tuple[list[str], list[str]]] = {}  # applied key -> (keys, op triples)

        def op(applied_key: str, name: str, key: str, value: str | bytes) -> None:
            keys, args = entries.setdefault(applied_key, ([applied_key], []))
            if key not in keys:
                keys.append(key)
            args += [name, str(keys.index(key) + 1), value]

        for widget_id, row in changes.rows.items():
            if row is None or row.deleted:
                op(self.keys.widget_applied(widget_id), "del", self.keys.widget(widget_id), "")
            else:
                op(self.keys.widget_applied(widget_id), "set", self.keys.widget(widget_id), encode_entry(entry_for(row)))
        for version_id, published in changes.versions.items():
            op(self.keys.version_applied(version_id), "set", self.keys.version(version_id), "1" if published else "0")
        for version_id, widget_id in changes.pinned:
            op(self.keys.version_applied(version_id), "sadd", self.keys.pins(version_id), widget_id)
        for version_id, widget_id in changes.unpinned:
            op(self.keys.version_applied(version_id), "srem", self.keys.pins(version_id), widget_id)
        # Versions first, widgets after they are written: a page applied again over versions that are
        # ahead gives the same widgets, but over a widget that is ahead it would derive the wrong pins
        # (a re-pin unpins the version the row names).
        for phase in (self.keys.version_applied(""), self.keys.widget_applied("")):
            prefix = phase[: phase.index("{")]
            group = [(k, v) for k, v in entries.items() if k.startswith(prefix)]
            if not group:
                continue
            pipe = self.client.pipeline(transaction=False)
            for applied_key, (keys, args) in group:
                expected = read.get(applied_key)
                queue_script(pipe, COMMIT_ENTRY, keys, ["" if expected is None else str(expected), str(last), *args])
            if any(int(result) == CONFLICT for result in pipe.execute()):
                return CONFLICT  # what was written is at this page's end; the page's next try skips it
        publish = self.publish if self.owner_key == self.keys.current else ""
        return int(self._position_script(keys=[self.owner_key, self.keys.position, self.keys.channel],
                                         args=[str(self.keys.generation), str(last), publish, *changes.rows]))

    def get(self, widget_id: str) -> PublicEntry | None:
        data = self.client.get(self.keys.widget(widget_id))
        return decode_entry(data) if data is not None else None

    def widget_ids(self) -> Iterable[str]:
        for key in self.client.scan_iter(match=f"{self.keys.base}w:*", count=1000):
            yield self.keys.id_of(key.decode())[1]


class InProcessPublicView:
    """The same public lookup in this process's memory, for the embedded mode."""

    def __init__(self) -> None:
        self.entries: dict[str, PublicEntry] = {}
        self.versions: dict[str, bool] = {}
        self.pins: dict[str, set[str]] = {}
        self._position = 0
        self._lock = threading.Lock()
        self.generation = 1

    def position(self) -> int:
        return self._position

    def is_current(self) -> bool:
        return True

    def load(self, widget_ids: set[str], version_ids: set[str]) -> tuple[dict[str, WidgetRow], dict[str, bool]]:
        rows = {w: _copy(self.entries[w].row) for w in widget_ids if w in self.entries}
        return rows, {v: self.versions[v] for v in version_ids if v in self.versions}

    def pinned_widgets(self, version_id: str) -> set[str]:
        return set(self.pins.get(version_id, ()))

    def commit(self, changes: Changes, first: int, last: int) -> int:
        prepared = {w: (entry_for(r) if r is not None and not r.deleted else None) for w, r in changes.rows.items()}
        with self._lock:
            if self._position >= first:
                return STALE
            for widget_id, entry in prepared.items():
                if entry is None:
                    self.entries.pop(widget_id, None)
                else:
                    self.entries[widget_id] = entry
            self.versions.update(changes.versions)
            for version_id, widget_id in changes.pinned:
                self.pins.setdefault(version_id, set()).add(widget_id)
            for version_id, widget_id in changes.unpinned:
                self.pins.get(version_id, set()).discard(widget_id)
            self._position = last
        return APPLIED

    def get(self, widget_id: str) -> PublicEntry | None:
        return self.entries.get(widget_id)

    def widget_ids(self) -> Iterable[str]:
        return list(self.entries)


def _copy(row: WidgetRow) -> WidgetRow:
    # Handlers change rows in place; the live entry must not change before the commit.
    return WidgetRow(**{f: getattr(row, f) for f in row.__struct_fields__})

"""Stores of the public lookup: Redis in production, in-process when embedded.

Both write a page's changes and its position atomically and refuse a page at
or below the position they hold, so each event counts exactly once however
often it is delivered. Redis keeps each rebuild in its own generation of keys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import redis

from projections.public_entry import PublicEntry, decode_entry, encode_entry, entry_for
from projections.widget_rows import Changes, WidgetRow

APPLIED, STALE, NOT_OWNER = 1, 0, -1

# KEYS: owner key, position key. ARGV: generation, first position, last position, then op/key/value triples.
COMMIT_PAGE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local position = tonumber(redis.call('GET', KEYS[2]) or '0')
if position >= tonumber(ARGV[2]) then return 0 end
for i = 4, #ARGV, 3 do
  local op, key, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'set' then redis.call('SET', key, value)
  elseif op == 'del' then redis.call('DEL', key)
  elseif op == 'sadd' then redis.call('SADD', key, value)
  elseif op == 'srem' then redis.call('SREM', key, value)
  elseif op == 'pub' then redis.call('PUBLISH', key, value) end
end
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""


class RedisKeys:
    """Key names of one deployment (prefix) and one generation."""

    def __init__(self, prefix: str, generation: int) -> None:
        self.prefix = prefix
        self.generation = generation
        self.base = f"{prefix}g{generation}:"

    current = property(lambda self: f"{self.prefix}generation")
    building = property(lambda self: f"{self.prefix}building")
    channel = property(lambda self: f"{self.prefix}invalidate")
    position = property(lambda self: f"{self.base}position")
    ready = property(lambda self: f"{self.base}ready")

    def widget(self, widget_id: str) -> str:
        return f"{self.base}w:{widget_id}"

    def version(self, version_id: str) -> str:
        return f"{self.base}v:{version_id}"

    def pins(self, version_id: str) -> str:
        return f"{self.base}p:{version_id}"


def current_generation(client: redis.Redis, prefix: str) -> int:
    client.set(f"{prefix}generation", "1", nx=True)
    return int(client.get(f"{prefix}generation") or 1)


class RedisPublicView:
    """The public lookup in Redis, for one generation; `owner_key` says who may write it."""

    def __init__(self, client: redis.Redis, prefix: str, generation: int, building: bool = False) -> None:
        self.client = client
        self.keys = RedisKeys(prefix, generation)
        self.owner_key = self.keys.building if building else self.keys.current
        self._commit = client.register_script(COMMIT_PAGE)
        self._ready = False

    def announce_when_caught_up(self) -> None:
        """After an outage, tell readers again once caught up: what they cached may predate it."""
        self._ready = False

    def mark_caught_up(self) -> None:
        """Readers trust this generation only once it has caught up with the log (after a rebuild, or
        after Redis lost its data); until then they read through to the event store."""
        if not self._ready:
            self.client.set(self.keys.ready, "1")
            if self.owner_key == self.keys.current:
                self.client.publish(self.keys.channel, "*")
            self._ready = True

    @property
    def generation(self) -> int:
        return self.keys.generation

    def position(self) -> int:
        return int(self.client.get(self.keys.position) or 0)

    def is_current(self) -> bool:
        return self.client.get(self.owner_key) == str(self.keys.generation).encode()

    def load(self, widget_ids: set[str], version_ids: set[str]) -> tuple[dict[str, WidgetRow], dict[str, bool]]:
        widget_list, version_list = sorted(widget_ids), sorted(version_ids)
        keys = [self.keys.widget(w) for w in widget_list] + [self.keys.version(v) for v in version_list]
        values = self.client.mget(keys) if keys else []
        rows = {w: decode_entry(v).row for w, v in zip(widget_list, values[: len(widget_list)], strict=True) if v is not None}
        versions = {v: value == b"1" for v, value in zip(version_list, values[len(widget_list):], strict=True) if value is not None}
        return rows, versions

    def pinned_widgets(self, version_id: str) -> set[str]:
        return {m.decode() for m in self.client.smembers(self.keys.pins(version_id))}

    def commit(self, changes: Changes, first: int, last: int) -> int:
        args: list[str | bytes] = [str(self.keys.generation), str(first), str(last)]
        for widget_id, row in changes.rows.items():
            if row is None or row.deleted:
                args += ["del", self.keys.widget(widget_id), ""]
            else:
                args += ["set", self.keys.widget(widget_id), encode_entry(entry_for(row))]
        for version_id, published in changes.versions.items():
            args += ["set", self.keys.version(version_id), "1" if published else "0"]
        for version_id, widget_id in changes.pinned:
            args += ["sadd", self.keys.pins(version_id), widget_id]
        for version_id, widget_id in changes.unpinned:
            args += ["srem", self.keys.pins(version_id), widget_id]
        if self.owner_key == self.keys.current:
            for widget_id in changes.rows:
                args += ["pub", self.keys.channel, widget_id]
        return int(self._commit(keys=[self.owner_key, self.keys.position], args=args))

    def get(self, widget_id: str) -> PublicEntry | None:
        data = self.client.get(self.keys.widget(widget_id))
        return decode_entry(data) if data is not None else None

    def widget_ids(self) -> Iterable[str]:
        marker = len(self.keys.widget(""))
        for key in self.client.scan_iter(match=self.keys.widget("*"), count=1000):
            yield key.decode()[marker:]


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

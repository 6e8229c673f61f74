"""Installations: which origins asked for a widget, allowed or refused, and its config reads per UTC day.

Config reads are far too many to be events. Each process counts them in
memory on the hot path (`InstallationCounter.record`: a few dict operations,
no I/O), and a background task hands what it counted to a store every few
seconds: Redis in production (one script per widget, every key of the widget
under its `{widget-id}` hash tag, so it runs on one Redis Cluster slot), SQL
when embedded. Each flush adds this process's deltas to the shared totals, so
counts are exact across workers and replicas.

Cardinality is bounded, allowed and refused origins each on their own: a
widget keeps at most `CAP` of each. A new origin is admitted while there is
room; once full, only origins already recorded keep counting, and `truncated`
turns true. A process remembers which origins the store holds for each widget
it served (learned from every flush), so a flood of forged `Origin` headers
neither grows memory nor pushes a recorded origin out of this process's next
flush.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

import structlog

from infrastructure.redis_clients import queue_script

log = structlog.get_logger("installations")

CAP = 100  # origins kept per widget, allowed and refused each
EPOCH = date(1970, 1, 1)
DAY_SECONDS = 86400
Clock = Callable[[], float]


def day_of(timestamp: float) -> date:
    """The UTC day of a Unix time."""
    return EPOCH + timedelta(days=int(timestamp // DAY_SECONDS))


@dataclass(slots=True)
class Sighting:
    """What one process saw of one origin since its last flush."""

    loads: int
    first_seen: float
    last_seen: float


@dataclass
class Tally:
    """One widget's counts since the last flush."""

    allowed: dict[str, Sighting] = field(default_factory=dict)
    refused: dict[str, Sighting] = field(default_factory=dict)
    days: dict[int, list[int]] = field(default_factory=dict)  # UTC day number -> [loads, refused loads]
    truncated: bool = False
    new: list[int] = field(default_factory=lambda: [0, 0])  # origins admitted that the store did not hold (allowed, refused)


@dataclass(frozen=True)
class Installation:
    origin: str
    allowed: bool
    loads: int
    first_seen: float
    last_seen: float


class InstallationStore(Protocol):
    """Where the counts of every process add up. Synchronous: called from a worker thread, the CLI or a handler."""

    def add(self, tallies: dict[str, Tally]) -> dict[str, tuple[set[str], set[str]]]:
        """Add the tallies; returns, per widget, the origins now recorded (allowed, refused)."""
        ...

    def installations(self, widget_id: str) -> tuple[list[Installation], bool]:
        """The widget's origins, most recently seen first, and whether any was left out."""
        ...

    def daily_loads(self, widget_id: str, first: date, last: date) -> dict[date, tuple[int, int]]:
        """(loads, refused loads) per UTC day from `first` to `last`, both included; days without reads are absent."""
        ...

    def close(self) -> None: ...


class InstallationCounter:
    """The per-process, in-memory side: counting on the hot path, handing over on `flush`."""

    def __init__(self, store: InstallationStore | None, clock: Clock = time.time, cap: int = CAP) -> None:
        self.store = store
        self.clock = clock
        self.cap = cap
        self.pending: dict[str, Tally] = {}
        # Per widget served here: the origins the store holds (allowed, refused), as of the last flush.
        self.recorded: dict[str, tuple[set[str], set[str]]] = {}
        # `record_load`'s shortcut: per (widget, allowed origin) counted since the last `take`, its sighting and
        # its day's counts, with that day's bounds in Unix time. Emptied by `take`, with the tallies it points into.
        self._loads: dict[tuple[str, str], tuple[float, float, Sighting, list[int]]] = {}

    def record(self, widget_id: str, origin: str, allowed: bool, load: bool = True) -> None:
        """Count one config read (`load`) or conversation start from `origin` for a live widget. No I/O."""
        self._record(widget_id, origin, allowed, load, self.clock())

    def record_load(self, widget_id: str, origin: str) -> None:
        """`record(widget_id, origin, True)`: the hot path's case (an allowed config read), in fewer steps once seen."""
        now = self.clock()
        known = self._loads.get((widget_id, origin))
        if known is not None and known[0] <= now < known[1]:
            sighting = known[2]
            sighting.loads += 1
            sighting.last_seen = now
            known[3][0] += 1
            return
        sighting, counts = self._record(widget_id, origin, True, True, now)
        if sighting is not None and counts is not None:  # admitted (a full table counts only the day's load)
            day = int(now // DAY_SECONDS)
            self._loads[(widget_id, origin)] = (day * DAY_SECONDS, (day + 1) * DAY_SECONDS, sighting, counts)

    def _record(self, widget_id: str, origin: str, allowed: bool, load: bool, now: float) -> tuple[Sighting | None, list[int] | None]:
        """`record` at `now`; returns the origin's sighting (None when not admitted) and the day's counts (None unless `load`)."""
        tally = self.pending.get(widget_id)
        if tally is None:
            tally = self.pending[widget_id] = Tally()
        counts = None
        if load:
            day = int(now // DAY_SECONDS)
            counts = tally.days.get(day)
            if counts is None:
                counts = tally.days[day] = [0, 0]
            counts[0 if allowed else 1] += 1
        seen = tally.allowed if allowed else tally.refused
        sighting = seen.get(origin)
        if sighting is None:
            if not self._admit(widget_id, origin, allowed, tally):
                tally.truncated = True
                return None, counts
            sighting = seen[origin] = Sighting(0, now, now)
        if load:
            sighting.loads += 1
        sighting.last_seen = now
        return sighting, counts

    def _admit(self, widget_id: str, origin: str, allowed: bool, tally: Tally) -> bool:
        """Room for one more origin: always for one the store holds; for a new one, while store and table have room."""
        known = self.recorded.get(widget_id)
        kind = 0 if allowed else 1
        recorded = known[kind] if known is not None else ()
        if origin in recorded:
            return True
        if len(recorded) + tally.new[kind] >= self.cap:
            return False
        tally.new[kind] += 1
        return True

    def take(self) -> dict[str, Tally]:
        """What was counted since the last call; counting carries on into a fresh table."""
        taken, self.pending = self.pending, {}
        self._loads = {}
        return taken

    def give_back(self, tallies: dict[str, Tally]) -> None:
        """A flush failed: add its tallies back, to be tried with the next one (bounds still hold)."""
        for widget_id, old in tallies.items():
            tally = self.pending.setdefault(widget_id, Tally())
            for day, (loads, refused) in old.days.items():
                counts = tally.days.setdefault(day, [0, 0])
                counts[0] += loads
                counts[1] += refused
            for allowed, seen in ((True, old.allowed), (False, old.refused)):
                target = tally.allowed if allowed else tally.refused
                for origin, s in seen.items():
                    mine = target.get(origin)
                    if mine is None:
                        if self._admit(widget_id, origin, allowed, tally):
                            target[origin] = s
                        else:
                            tally.truncated = True
                    else:
                        mine.loads += s.loads
                        mine.first_seen = min(mine.first_seen, s.first_seen)
                        mine.last_seen = max(mine.last_seen, s.last_seen)
            tally.truncated = tally.truncated or old.truncated

    def flush(self) -> int:
        """Hand what was counted to the store (blocking: run it in a worker thread); returns widgets flushed.

        Call `take()` on the event loop first when counting runs there; `flush_taken` does the rest."""
        return self.flush_taken(self.take())

    async def flush_now(self) -> int:
        """Take on the event loop, write in a worker thread."""
        import anyio

        return await anyio.to_thread.run_sync(self.flush_taken, self.take())

    async def run(self, interval: float) -> None:
        """Flush every `interval` seconds until cancelled; a failed flush keeps its counts for the next."""
        import asyncio

        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                pass  # logged by flush_taken; the counts were given back

    def flush_taken(self, tallies: dict[str, Tally]) -> int:
        if not tallies or self.store is None:
            return 0
        try:
            recorded = self.store.add(tallies)
        except Exception as error:
            self.give_back(tallies)
            log.warning("installations_flush_failed", error=type(error).__name__, widgets=len(tallies))
            raise
        self.recorded.update(recorded)
        return len(tallies)


def day_fields(tally: Tally) -> Iterable[tuple[str, int, int]]:
    """(ISO day, loads, refused loads) of a tally."""
    for day, (loads, refused) in sorted(tally.days.items()):
        yield (EPOCH + timedelta(days=day)).isoformat(), loads, refused


# --------------------------------------------------------------------------------------------
# Redis: per widget, every key under the widget's hash tag


ADD_SCRIPT = """
-- KEYS: allowed loads, allowed first, allowed last, refused loads, refused first, refused last, days, truncated
-- ARGV: cap, truncated (0/1), n allowed, (origin, loads, first, last)*, n refused, (...)*, n days, (day, loads, refused)*
local cap = tonumber(ARGV[1])
local truncated = ARGV[2] == '1'
local i = 3
local function apply(loads_key, first_key, last_key)
  local n = tonumber(ARGV[i]); i = i + 1
  local size = redis.call('HLEN', loads_key)
  for _ = 1, n do
    local origin, loads, first, last = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local known = redis.call('HEXISTS', loads_key, origin) == 1
    if not known and size >= cap then
      truncated = true
    else
      if not known then size = size + 1 end
      redis.call('HINCRBY', loads_key, origin, loads)
      local f = redis.call('HGET', first_key, origin)
      if not f or tonumber(first) < tonumber(f) then redis.call('HSET', first_key, origin, first) end
      local l = redis.call('HGET', last_key, origin)
      if not l or tonumber(last) > tonumber(l) then redis.call('HSET', last_key, origin, last) end
    end
  end
end
apply(KEYS[1], KEYS[2], KEYS[3])
apply(KEYS[4], KEYS[5], KEYS[6])
local days = tonumber(ARGV[i]); i = i + 1
for _ = 1, days do
  local day, loads, refused = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  if loads > 0 then redis.call('HINCRBY', KEYS[7], day .. ':a', loads) end
  if refused > 0 then redis.call('HINCRBY', KEYS[7], day .. ':r', refused) end
end
if truncated then redis.call('SET', KEYS[8], '1') end
return {redis.call('HKEYS', KEYS[1]), redis.call('HKEYS', KEYS[4])}
"""


class RedisKeys:
    """A widget's installation keys: `{prefix}i:{<widget id>}:<name>`, one hash tag, one cluster slot."""

    NAMES = ("an", "af", "al", "rn", "rf", "rl", "days", "truncated")

    def __init__(self, prefix: str, widget_id: str) -> None:
        base = f"{prefix}i:{{{widget_id}}}:"
        self.all = [base + name for name in self.NAMES]
        (self.allowed_loads, self.allowed_first, self.allowed_last, self.refused_loads, self.refused_first,
         self.refused_last, self.days, self.truncated) = self.all


def _fmt(value: float) -> str:
    return f"{value:.3f}"


class RedisInstallationStore:
    def __init__(self, client: Any, prefix: str, cap: int = CAP) -> None:
        self.client = client
        self.prefix = prefix
        self.cap = cap

    def close(self) -> None:
        self.client.close()

    def add(self, tallies: dict[str, Tally]) -> dict[str, tuple[set[str], set[str]]]:
        ids = list(tallies)
        pipe = self.client.pipeline(transaction=False)
        for widget_id in ids:
            tally = tallies[widget_id]
            args: list[Any] = [self.cap, 1 if tally.truncated else 0]
            for seen in (tally.allowed, tally.refused):
                args.append(len(seen))
                for origin, s in seen.items():
                    args += [origin, s.loads, _fmt(s.first_seen), _fmt(s.last_seen)]
            days = list(day_fields(tally))
            args.append(len(days))
            for day, loads, refused in days:
                args += [day, loads, refused]
            queue_script(pipe, ADD_SCRIPT, RedisKeys(self.prefix, widget_id).all, args)  # one widget, one slot
        results = pipe.execute()
        return {widget_id: ({o.decode() for o in allowed}, {o.decode() for o in refused})
                for widget_id, (allowed, refused) in zip(ids, results, strict=True)}

    def installations(self, widget_id: str) -> tuple[list[Installation], bool]:
        keys = RedisKeys(self.prefix, widget_id)
        pipe = self.client.pipeline(transaction=False)
        for key in keys.all[:6]:
            pipe.hgetall(key)
        pipe.get(keys.truncated)
        an, af, al, rn, rf, rl, truncated = pipe.execute()
        items = []
        for allowed, loads, first, last in ((True, an, af, al), (False, rn, rf, rl)):
            for origin, count in loads.items():
                items.append(Installation(origin.decode(), allowed, int(count), float(first.get(origin, 0)),
                                          float(last.get(origin, 0))))
        return newest_first(items), truncated == b"1"

    def daily_loads(self, widget_id: str, first: date, last: date) -> dict[date, tuple[int, int]]:
        wanted = days_between(first, last)
        fields = [f"{d.isoformat()}:{kind}" for d in wanted for kind in ("a", "r")]
        values = self.client.hmget(RedisKeys(self.prefix, widget_id).days, fields) if fields else []
        found = {}
        for index, day in enumerate(wanted):
            loads, refused = values[2 * index], values[2 * index + 1]
            if loads is not None or refused is not None:
                found[day] = (int(loads or 0), int(refused or 0))
        return found


def newest_first(items: list[Installation]) -> list[Installation]:
    return sorted(items, key=lambda i: (-i.last_seen, i.origin, not i.allowed))


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --------------------------------------------------------------------------------------------
# SQL (embedded, or PostgreSQL without Redis): the read-model database


SQL_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS installation_widgets (widget_id TEXT PRIMARY KEY, truncated INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS installations (
        widget_id TEXT NOT NULL, allowed INTEGER NOT NULL, origin TEXT NOT NULL, loads BIGINT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (widget_id, allowed, origin))""",
    """CREATE TABLE IF NOT EXISTS installation_days (
        widget_id TEXT NOT NULL, day TEXT NOT NULL, loads BIGINT NOT NULL, refused_loads BIGINT NOT NULL,
        PRIMARY KEY (widget_id, day))""",
]


class SqlInstallationStore:
    """One transaction per widget; the widget's row is locked first, so concurrent flushes keep the bound."""

    def __init__(self, db: Any, cap: int = CAP) -> None:
        self.db = db
        self.cap = cap
        with db.transaction() as tx:
            for statement in SQL_SCHEMA:
                tx.execute(statement)

    def close(self) -> None:
        """The database is the read models'; its owner closes it."""

    def add(self, tallies: dict[str, Tally]) -> dict[str, tuple[set[str], set[str]]]:
        return {widget_id: self._add_one(widget_id, tally) for widget_id, tally in tallies.items()}

    def _add_one(self, widget_id: str, tally: Tally) -> tuple[set[str], set[str]]:
        recorded: list[set[str]] = []
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO installation_widgets (widget_id, truncated) VALUES (?, 0) ON CONFLICT (widget_id) DO NOTHING",
                       [widget_id])
            if tx.postgres:  # SQLite's BEGIN IMMEDIATE already serialises writers
                tx.execute("SELECT truncated FROM installation_widgets WHERE widget_id = ? FOR UPDATE", [widget_id])
            truncated = tally.truncated
            for allowed, seen in ((1, tally.allowed), (0, tally.refused)):
                rows = tx.query("SELECT origin, first_seen, last_seen FROM installations WHERE widget_id = ? AND allowed = ?",
                                [widget_id, allowed])
                known = {origin: (first, last) for origin, first, last in rows}
                for origin, s in seen.items():
                    if origin in known:
                        first, last = known[origin]
                        tx.execute("UPDATE installations SET loads = loads + ?, first_seen = ?, last_seen = ? "
                                   "WHERE widget_id = ? AND allowed = ? AND origin = ?",
                                   [s.loads, min(first, s.first_seen), max(last, s.last_seen), widget_id, allowed, origin])
                    elif len(known) < self.cap:
                        tx.execute("INSERT INTO installations (widget_id, allowed, origin, loads, first_seen, last_seen) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", [widget_id, allowed, origin, s.loads, s.first_seen, s.last_seen])
                        known[origin] = (s.first_seen, s.last_seen)
                    else:
                        truncated = True
                recorded.append(set(known))
            tx.executemany(
                """INSERT INTO installation_days (widget_id, day, loads, refused_loads) VALUES (?, ?, ?, ?)
                   ON CONFLICT (widget_id, day) DO UPDATE SET loads = installation_days.loads + excluded.loads,
                   refused_loads = installation_days.refused_loads + excluded.refused_loads""",
                [(widget_id, day, loads, refused) for day, loads, refused in day_fields(tally)],
            )
            if truncated:
                tx.execute("UPDATE installation_widgets SET truncated = 1 WHERE widget_id = ?", [widget_id])
        return recorded[0], recorded[1]

    def installations(self, widget_id: str) -> tuple[list[Installation], bool]:
        rows = self.db.query("SELECT origin, allowed, loads, first_seen, last_seen FROM installations WHERE widget_id = ?",
                             [widget_id])
        items = [Installation(origin, bool(allowed), int(loads), float(first), float(last)) for origin, allowed, loads, first, last in rows]
        flag = self.db.query("SELECT truncated FROM installation_widgets WHERE widget_id = ?", [widget_id])
        return newest_first(items), bool(flag and flag[0][0])

    def daily_loads(self, widget_id: str, first: date, last: date) -> dict[date, tuple[int, int]]:
        rows = self.db.query("SELECT day, loads, refused_loads FROM installation_days WHERE widget_id = ? AND day >= ? AND day <= ?",
                             [widget_id, first.isoformat(), last.isoformat()])
        return {date.fromisoformat(day): (int(loads), int(refused)) for day, loads, refused in rows}

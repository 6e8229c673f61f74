"""Runs a projection: follows the notification log in commit order, a page at a time.

On PostgreSQL the runner is woken by LISTEN/NOTIFY through the library's
subscription; on SQLite (whose recorder has no subscription) by this process's
own saves, with a slow timer as a safety net for other processes. A page that
cannot be applied stops the runner loudly, naming the position: it never skips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from infrastructure.metrics import PROJECTION_LAG, PROJECTION_POSITION
from projections.widget_rows import Changes, RowSource, WidgetRowsProjection

log = structlog.get_logger("projections")
APPLIED, STALE, NOT_OWNER, CONFLICT = 1, 0, -1, 2
CONFLICT_RETRIES = 20  # another runner wrote an entry this page read: read again and re-apply the page
PAGE_SIZE = 500
SQLITE_SAFETY_WAKE = 1.0
LISTENING_SAFETY_WAKE = 2.0  # also how soon a read model that lost its data (Redis restarted empty) is noticed


RETRY_FIRST, RETRY_MAX = 0.2, 5.0


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means a store is unreachable for now (worth waiting for), not that an event is bad."""
    import sqlite3

    import psycopg
    import psycopg_pool
    import redis
    from eventsourcing.persistence import InterfaceError, OperationalError

    transient = (redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError, psycopg.InterfaceError,
                 psycopg_pool.PoolTimeout, OperationalError, InterfaceError, sqlite3.OperationalError, ConnectionError,
                 TimeoutError)
    while error is not None:
        if isinstance(error, transient):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


class EventLog(Protocol):
    """The event store as projections see it: its notification log, its mapper, and its saves."""

    recorder: Any
    mapper: Any
    projection_mapper: Any  # leaves personal fields sealed: read models hold ciphertext only

    def on_saved(self, listener: Callable[[int], None]) -> None: ...


class View(RowSource, Protocol):
    generation: int

    def position(self) -> int: ...

    def is_current(self) -> bool: ...

    def commit(self, changes: Changes, first: int, last: int) -> int: ...


@dataclass
class _Page:
    """Notifications `first`..`last` of the projection's topics, and their events (or why one cannot be decoded)."""

    first: int
    last: int
    notifications: list[Any]
    events: list[Any] = field(default_factory=list)
    error: Exception | None = None
    undecodable: int | None = None  # the notification being decoded when `error` was raised


class ProjectionFailedError(Exception):
    """A page of events could not be applied; the runner stopped at this position."""


class ProjectionRunner:
    def __init__(
        self,
        name: str,
        store: EventLog,
        view: View,
        projection_factory: Callable[[], WidgetRowsProjection] = WidgetRowsProjection,
        page_size: int = PAGE_SIZE,
        reopen: Callable[[], View] | None = None,
        listen_url: str = "",
        read_ahead: bool = False,
    ) -> None:
        self.name = name
        self.store = store
        self.view = view
        self.projection_factory = projection_factory
        self.page_size = page_size
        self.reopen = reopen
        self.listen_url = listen_url  # a direct PostgreSQL URL for LISTEN (the store's may go through a pooler)
        self.read_ahead = read_ahead  # read the next page while applying this one (a rebuild's long replay)
        self.topics = tuple(projection_factory().topics)
        self.failure: BaseException | None = None
        self._position = view.position()
        self._reached = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: Any = None

    @property
    def position(self) -> int:
        return self._position

    def lag(self) -> int:
        return max(0, (self.store.recorder.max_notification_id() or 0) - self._position)

    def catch_up(self, stop_at: int | None = None, on_page: Callable[[int, int], None] | None = None) -> int:
        """Apply every notification after the view's position (up to `stop_at`); returns events applied.

        With `read_ahead`, the next page is read and decoded in a second thread while this one applies and
        writes the current page: each side's waits on its database overlap with the other's Python work. A page
        read ahead is used only if it starts where the view got to; otherwise it is dropped and read again."""
        applied = 0
        target = stop_at if stop_at is not None else (self.store.recorder.max_notification_id() or 0)
        bounded = stop_at is not None
        pool: ThreadPoolExecutor | None = None
        ahead: tuple[int, Future[_Page]] | None = None
        try:
            while self._position < target and not self._stop.is_set():
                start = self._position + 1
                if ahead is not None and ahead[0] == start:
                    page = ahead[1].result()
                else:
                    page = self._read_page(start, target, bounded)
                ahead = None
                if self.read_ahead and page.last < target:
                    pool = pool or ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-read-ahead")
                    ahead = (page.last + 1, pool.submit(self._read_page, page.last + 1, target, bounded))
                self._apply_page(page)
                applied += len(page.notifications)
                PROJECTION_LAG.labels(self.name).set(max(0, target - self._position))
                if on_page:
                    on_page(self._position, applied)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # a page still being read is dropped (its error, if any, with it)
        if self._position >= target and hasattr(self.view, "mark_caught_up"):
            self.view.mark_caught_up()
        return applied

    def _read_page(self, start: int, target: int, bounded: bool) -> _Page:
        """One page of notifications from `start`, decoded; a notification that cannot be decoded is kept as the
        page's error, for `_apply_page` to report (this may run in the read-ahead thread)."""
        # No upper bound in the query: with one, PostgreSQL may scan the whole remaining range for every
        # page when its statistics are stale (after a restore or bulk load), making a replay quadratic.
        found = self.store.recorder.select_notifications(start=start, limit=self.page_size, topics=self.topics)
        notifications = [n for n in found if n.id <= target] if bounded else list(found)
        full = len(found) == self.page_size and len(notifications) == len(found)
        last = notifications[-1].id if full else max(target, notifications[-1].id if notifications else 0)
        page = _Page(start, last, notifications)
        mapper = getattr(self.store, "projection_mapper", self.store.mapper)
        read = getattr(self.projection_factory, "read_event", None)  # a projection may read its stored events itself
        decode: Callable[[Any], Any] = mapper.to_domain_event if read is None else lambda n: read(n, mapper)
        try:
            for notification in notifications:
                page.undecodable = notification.id
                page.events.append(decode(notification))
            page.undecodable = None
        except Exception as error:
            page.error = error
        return page

    def _apply_page(self, page: _Page) -> None:
        notifications, first, last = page.notifications, page.first, page.last
        try:
            if page.error is not None:
                raise page.error
            for attempt in range(CONFLICT_RETRIES):
                changes = self.projection_factory().apply(page.events, self.view, positions=[n.id for n in notifications])
                result = self.view.commit(changes, first, last)
                if result != CONFLICT:
                    break
                log.info("projection_page_conflict", projection=self.name, first=first, last=last, attempt=attempt)
                time.sleep(0.01 * (attempt + 1))
            else:
                raise ProjectionFailedError(f"{self.name}: entries kept changing under the page {first}..{last}")
        except Exception as error:
            if is_unavailable(error):
                raise  # a store is down: the caller waits and tries the same page again
            undecodable = page.undecodable if page.error is not None else None
            position = notifications[0].id if notifications else first
            culprit = f" (notification {undecodable} cannot be decoded)" if undecodable is not None else ""
            log.error("projection_failed", projection=self.name, position=position, last=last, undecodable=undecodable,
                      error=repr(error))
            raise ProjectionFailedError(f"{self.name} stopped at notification {position}{culprit}: {error!r}") from error
        if result == APPLIED:
            self._advance(last)
        elif result == STALE:
            # Another delivery got there first (a restart, or a second runner): resume after it.
            self._advance(self.view.position())
        elif self.reopen is not None:
            # A rebuild switched generations: carry on from the new one's position.
            self.view = self.reopen()
            log.info("projection_generation_switched", projection=self.name, generation=self.view.generation)
            self._advance(self.view.position())
        else:
            raise ProjectionFailedError(f"{self.name}: generation {self.view.generation} is no longer the one to write")

    def _advance(self, position: int) -> None:
        PROJECTION_POSITION.labels(self.name).set(position)
        with self._reached:
            self._position = position
            self._reached.notify_all()

    def wait(self, position: int, timeout: float) -> bool:
        """Block until the view has reached `position` (read-your-writes); False on timeout."""
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._reached:
            while self._position < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.failure is not None:
                    return False
                self._reached.wait(remaining)
        return True

    def _resync(self) -> None:
        """Notice a read model that moved or lost its data, and carry on from where it really is."""
        if self.reopen is not None and not self.view.is_current():
            self.view = self.reopen()
        stored = self.view.position()
        if stored < self._position:
            log.warning("projection_read_model_behind", projection=self.name, stored=stored, expected=self._position)
            self._advance(stored)

    def wake(self, _position: int | None = None) -> None:
        self._wake.set()

    def start(self) -> ProjectionRunner:
        """Run in a background thread until `stop()`."""
        self._thread = threading.Thread(target=self.run_forever, name=f"projection-{self.name}", daemon=True)
        self._thread.start()
        return self

    def run_forever(self) -> None:
        self.store.on_saved(self.wake)
        listening = self._listen()
        backoff = RETRY_FIRST
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self._resync()
                    self.catch_up()
                except Exception as error:
                    if not is_unavailable(error):
                        raise
                    # A store is down (Redis restarting, PostgreSQL failing over): wait, then carry on from
                    # the position the view really holds. Never skip: the page is tried again.
                    log.warning("projection_store_unavailable", projection=self.name, error=type(error).__name__,
                                retry_in=backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    if hasattr(self.view, "announce_when_caught_up"):
                        self.view.announce_when_caught_up()  # readers drop what they cached from before
                    continue
                backoff = RETRY_FIRST
                self._wake.wait(LISTENING_SAFETY_WAKE if listening else SQLITE_SAFETY_WAKE)
        except BaseException as error:
            self.failure = error
            with self._reached:
                self._reached.notify_all()
            raise
        finally:
            if self._subscription is not None:
                self._subscription.stop()

    def _listen(self) -> bool:
        """Wake on every new notification, through the library's LISTEN/NOTIFY subscription (or, given a
        listen URL, a LISTEN on a direct connection of our own)."""
        if self.listen_url and hasattr(self.store.recorder, "channel_name"):
            threading.Thread(target=self._listen_directly, name=f"listen-{self.name}", daemon=True).start()
            return True
        if getattr(getattr(self.store.recorder, "datastore", None), "transaction_pooler", False):
            # LISTEN through a transaction pooler would leave a subscribed session behind for strangers.
            log.warning("projection_not_listening", projection=self.name, reason="behind a pooler without a listen URL")
            return False
        try:
            subscription = self.store.recorder.subscribe(gt=self.store.recorder.max_notification_id(), topics=self.topics)
        except NotImplementedError:
            return False  # SQLite: woken by this process's saves
        self._subscription = subscription

        def pump() -> None:
            try:
                for _ in subscription:
                    self._wake.set()
            except Exception as error:  # the subscription's connection died: keep catching up on a timer
                if not self._stop.is_set():
                    log.warning("projection_subscription_lost", projection=self.name, error=repr(error))

        threading.Thread(target=pump, name=f"subscription-{self.name}", daemon=True).start()
        return True

    def _listen_directly(self) -> None:
        """LISTEN on a session of our own, reconnecting while the runner runs; the safety wake covers the gaps."""
        import psycopg
        from psycopg.sql import SQL, Identifier

        statement = SQL("LISTEN {}").format(Identifier(self.store.recorder.channel_name))
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.listen_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(statement)
                    self._wake.set()  # anything committed before the LISTEN took hold
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake.set()
            except Exception as error:  # noqa: BLE001 - PostgreSQL restarting: try again shortly
                log.warning("projection_listen_lost", projection=self.name, error=type(error).__name__)
                self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop between pages; a page in flight is committed or not at all."""
        self._stop.set()
        self._wake.set()
        if self._subscription is not None:
            self._subscription.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

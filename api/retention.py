"""Retention: the conversations of widgets that keep personal data for N days are erased once past them.

The projection process runs a sweep every 30 s (in the server itself when embedded), and `widgets retention`
runs one on demand. A sweep reads the read models (which conversations were last active when) and erases each
conversation past its widget's retention with reason `retention`, by the same path as a request: an erasure
already made, or made meanwhile by another process, changes nothing.

Both models must have reached the log's head as the sweep starts (`projections.positions`): a conversation resumed
a moment ago, or a retention lengthened, that the models have not applied yet would otherwise be erased too early.
When they are behind, the sweep is put off to the next one (`ModelBehindError`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import structlog

from application.commands import Caller
from application.personal_data import SCOPE, PersonalDataService
from application.store import EventStore
from domain.errors import NotFoundError
from infrastructure.sql import Database
from projections.conversation_list import ConversationListView
from projections.positions import ModelBehindError, reached
from projections.widget_list import WidgetListView

INTERVAL = 30.0
WAIT = 5.0  # how long a sweep waits for the models to reach the log's head before it is put off
ACTOR = "retention"
log = structlog.get_logger("retention")


def utc_now() -> datetime:
    return datetime.now(UTC)


class RetentionSweep:
    def __init__(self, store: EventStore, db: Database, clock: Callable[[], datetime] = utc_now, wait: float | None = None) -> None:
        self.store = store
        self.service = PersonalDataService(store)
        self.widgets = WidgetListView(db, create=False)
        self.conversations = ConversationListView(db, create=False)
        self.clock = clock
        self.wait = WAIT if wait is None else wait

    def run_once(self, now: datetime | None = None) -> int:
        """Erase every conversation past its widget's retention; returns how many were erased now. Raises
        `ModelBehindError`, erasing nothing, when the models have not reached the log's head within the wait."""
        head = self.store.recorder.max_notification_id() or 0
        at = reached((self.widgets, self.conversations), head, self.wait)
        if at < head:
            raise ModelBehindError(head, at)
        now = now or self.clock()
        erased = 0
        for widget in self.widgets.with_retention():
            assert widget.retention_days is not None
            for conversation_id, organization_id in self.conversations.past_retention(widget.id, widget.retention_days, now):
                caller = Caller(organization_id, ACTOR, frozenset({SCOPE}))
                try:
                    erased += self.service.erase(caller, UUID(widget.id), UUID(conversation_id), "retention")
                except NotFoundError:
                    continue  # not this widget's any more, or gone: nothing to erase here
        if erased:
            log.info("retention_erased", conversations=erased)
        return erased

    def run_forever(self, stopping: threading.Event, interval: float = INTERVAL) -> None:
        while not stopping.wait(interval):
            try:
                self.run_once()
            except ModelBehindError as behind:
                log.info("retention_sweep_put_off", needed=behind.needed, reached=behind.at)
            except Exception as error:  # noqa: BLE001 - a store outage: the next sweep tries again
                log.warning("retention_sweep_failed", error=type(error).__name__)

    def start(self, stopping: threading.Event, interval: float = INTERVAL) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, args=(stopping, interval), name="retention", daemon=True)
        thread.start()
        return thread

"""The event store: one eventsourcing Application holds every aggregate, so one
notification log orders all events in commit order for the projections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, ClassVar, Protocol
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, Recording, Transcoder

from domain.agent import Agent
from domain.widget import Widget

# The request's list of positions saved while serving it; the HTTP edge reports the last as X-Event-Position.
saved_positions: ContextVar[list[int] | None] = ContextVar("saved_positions", default=None)


class PersonalData(Protocol):
    """Seals conversations' personal fields under their own data keys (infrastructure/personal_data.py)."""

    def mapper(self, transcoder: Transcoder, reveal: bool = True) -> Mapper[UUID]: ...

    def bind(self, store: Any) -> None: ...

    def destroy(self, conversation_ids: Sequence[UUID]) -> int: ...

    def shred_plaintext(self, conversation_id: UUID, transcoder: Transcoder) -> int: ...


class EventStore(Application[UUID]):
    name = "widgets"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Widget: 50, Agent: 50}

    def __init__(self, env: dict[str, str] | None = None, personal_data: PersonalData | None = None) -> None:
        """`personal_data`: how personal fields are sealed (without it, in memory for tests, they are not).
        `mapper` opens them for the application; `projection_mapper` leaves them sealed, for the read models."""
        self.personal_data = personal_data
        super().__init__(env)
        self._saved_listeners: list[Callable[[int], None]] = []
        self.projection_mapper: Mapper[UUID] = self.mapper
        if personal_data is not None:
            personal_data.bind(self.recorder)
            self.projection_mapper = personal_data.mapper(self.construct_transcoder(), reveal=False)

    def construct_mapper(self) -> Mapper[UUID]:
        if self.personal_data is None:
            return super().construct_mapper()
        return self.personal_data.mapper(self.construct_transcoder())

    def on_saved(self, listener: Callable[[int], None]) -> None:
        """Call `listener(position)` after each save of this process (wakes embedded projections)."""
        self._saved_listeners.append(listener)

    def save(self, *objs: Any, meanwhile: Callable[[], object] | None = None, **kwargs: Any) -> list[Recording[UUID]]:
        """`Application.save`, collecting our aggregates' events without the library's two runtime Protocol
        checks per object (`isinstance` against a Protocol walks its members each time on Python 3.11: about
        13 µs of a conversation start's budget). Anything that is not an `Aggregate` takes the library's path.

        `meanwhile` is work the caller needs done anyway, run while the events travel to the database
        where the recorder can (PostgreSQL, one event: during the round trip), else just before or after
        they are recorded. It runs exactly once if the save succeeds; if the save fails, once or not at all."""
        once = _Once(meanwhile) if meanwhile is not None else None
        if once is not None:
            if getattr(self.recorder, "runs_meanwhile", False):
                kwargs["meanwhile"] = once
            else:
                once()
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        if once is not None:
            once()  # a no-op if the recorder ran it
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        if not recordings:
            return
        position = max(r.notification.id for r in recordings)
        sink = saved_positions.get()
        if sink is not None:
            sink.append(position)
        for listener in self._saved_listeners:
            listener(position)


class _Once:
    """Calls `function` the first time it is called, and never again (a recorder may retry a failed insert)."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[[], object]) -> None:
        self.function: Callable[[], object] | None = function

    def __call__(self) -> None:
        function, self.function = self.function, None
        if function is not None:
            function()

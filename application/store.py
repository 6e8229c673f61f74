"""The event store: one eventsourcing Application holds every aggregate, so one
notification log orders all events in commit order for the projections."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application

from domain.agent import Agent
from domain.conversation import Conversation
from domain.widget import Widget


class EventStore(Application[UUID]):
    name = "widgets"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Widget: 50, Agent: 50}

    def aggregate_types(self) -> tuple[type[Any], ...]:
        return (Widget, Agent, Conversation)

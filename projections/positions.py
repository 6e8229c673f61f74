"""Reading one read model to act on another's event: see that model at least at the position the event needs.

Each read model follows the log on its own and records, in the same transaction as its rows, the position it has
reached. Two models are therefore at two different positions at any moment: the webhook outbox may have queued an
event whose endpoint change the endpoints model has not applied yet. A consumer that acts on an event (or on a
request) by reading another model asks `reached` for the position the act needs first (the event's own; the
log's head for "everything so far"), and reads the model's rows only when it is there: rows read after the position
hold at least what it says. When the model is behind, the consumer waits (a bound in `wait`) or puts the act off
and tries again later; it never acts on an older state, and never caches a state without the position it was read at.

Used by the webhook dispatcher (endpoint targets), the retention sweep (widgets and conversations) and the
erasure of a verified visitor's conversations; docs/architecture.md lists them, and where it is not needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

POLL = 0.01  # seconds between two looks at a model's position while waiting


class ModelBehindError(Exception):
    """The read models an act needs had not reached its position within the wait: the act is put off."""

    def __init__(self, needed: int, at: int) -> None:
        super().__init__(f"the read models are at position {at}, the act needs {needed}")
        self.needed, self.at = needed, at


class HasPosition(Protocol):
    """A read model's view: the log position it has applied (SqlView, RedisPublicView, InProcessPublicView)."""

    def position(self) -> int: ...


def reached(models: HasPosition | Iterable[HasPosition], position: int, wait: float = 0.0, poll: float = POLL) -> int:
    """The lowest log position `models` have applied, looked at again every `poll` seconds until it is at least
    `position` or `wait` seconds have passed (0: looked at once). Below `position`, the models are behind: the
    caller puts its act off (or raises `ModelBehindError`)."""
    views = list(models) if isinstance(models, Iterable) else [models]
    deadline = time.monotonic() + wait
    while True:
        lowest = min(view.position() for view in views)
        if lowest >= position or time.monotonic() >= deadline:
            return lowest
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

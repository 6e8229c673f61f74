"""`InstallationCounter.record_load` (the hot path's shortcut) counts exactly what `record(..., True)` counts."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from infrastructure.installations import DAY_SECONDS, InstallationCounter

MIDNIGHT = 20_000 * DAY_SECONDS
# Steps: a load of (widget, origin) at a time around a UTC midnight, or a hand-over (`take`) of what was counted.
STEPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["w1", "w2"]), st.sampled_from(["https://a.test", "https://b.test", "https://c.test"]),
              st.floats(-3, 3, allow_nan=False)),
    st.just("take"),
), max_size=60)


def state(counter: InstallationCounter, taken: list[dict]) -> list:
    return [*taken, {w: dataclasses.asdict(t) for w, t in counter.pending.items()}]


@given(steps=STEPS, cap=st.integers(1, 3))
def test_the_shortcut_and_record_leave_the_same_tallies(steps: list, cap: int) -> None:
    now = [0.0]
    plain = InstallationCounter(None, clock=lambda: now[0], cap=cap)
    shortcut = InstallationCounter(None, clock=lambda: now[0], cap=cap)
    taken_plain: list[dict] = []
    taken_shortcut: list[dict] = []
    clock = MIDNIGHT - 2.0
    for step in steps:
        if step == "take":
            taken_plain.append({w: dataclasses.asdict(t) for w, t in plain.take().items()})
            taken_shortcut.append({w: dataclasses.asdict(t) for w, t in shortcut.take().items()})
            continue
        widget, origin, delta = step
        clock = max(clock, MIDNIGHT + delta)  # time goes forward, across the midnight
        now[0] = clock
        plain.record(widget, origin, True)
        shortcut.record_load(widget, origin)
    assert state(shortcut, taken_shortcut) == state(plain, taken_plain)

"""`SharedWindowCounter.hit_locally` (infrastructure/ratelimit.py) decides alone exactly when `hit` would need no I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from limits import RateLimitItemPerMinute

from infrastructure.ratelimit import SharedWindowCounter


def needs_no_io(counter: SharedWindowCounter, total: int) -> bool:
    """`hit`'s own test (as written there) for allowing a hit without asking Redis."""
    if counter.client is not None and (counter.limit <= counter.EXACT_UP_TO or total + 1 >= counter.limit * counter.NEAR):
        return False
    return total < counter.limit


@given(limit=st.integers(1, 5000), shared=st.booleans(), near=st.booleans(), offset=st.integers(-3, 3), mine=st.integers(0, 3))
def test_it_counts_and_allows_only_where_hit_would_decide_alone(limit: int, shared: bool, near: bool, offset: int,
                                                                 mine: int) -> None:
    # Totals around the two edges that matter: the limit itself and the share of it where Redis is asked.
    known = max(0, int(limit * (SharedWindowCounter.NEAR if near else 1)) + offset - mine)
    counter = SharedWindowCounter(RateLimitItemPerMinute(limit), object() if shared else None, "p:")
    assert counter.hit_locally("warm-up") in (True, False)  # rolls into the current window
    counter.known["k"] = known
    if mine:
        counter.unsynced["k"] = mine
    expected = needs_no_io(counter, known + mine)
    assert counter.hit_locally("k") is expected
    assert counter.unsynced.get("k", 0) == mine + (1 if expected else 0)  # counted once when allowed, not at all otherwise

"""`RequestTally` (infrastructure/metrics.py) adds to Prometheus exactly what one `inc` and `observe` per request would."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from infrastructure.metrics import LATENCY, RequestTally

# Durations around every bound (equal to it, just under, just over), tiny ones, and ones past the largest bound.
BOUNDS = [float(b) for b in LATENCY._upper_bounds if math.isfinite(b)]
DURATIONS = st.one_of(
    st.sampled_from([*BOUNDS, *(math.nextafter(b, 0) for b in BOUNDS), *(math.nextafter(b, math.inf) for b in BOUNDS)]),
    st.floats(min_value=0, max_value=10, allow_nan=False),
)


def pair() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("requests_total", "requests", ["route"], registry=registry)
    histogram = Histogram("duration_seconds", "durations", ["route"], buckets=LATENCY._upper_bounds[:-1], registry=registry)
    return registry, counter, histogram


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples
            if not s.name.endswith("_created")}


@given(batches=st.lists(st.lists(DURATIONS, max_size=30), min_size=1, max_size=4))
def test_a_flushed_tally_shows_the_samples_of_one_observation_per_request(batches: list[list[float]]) -> None:
    one_by_one, counter, histogram = pair()
    batched, batch_counter, batch_histogram = pair()
    tally = RequestTally(batch_counter.labels("r"), batch_histogram.labels("r"))
    counter.labels("r"), histogram.labels("r")  # both registries show the labelled series from the start
    for batch in batches:
        for elapsed in batch:
            counter.labels("r").inc()
            histogram.labels("r").observe(elapsed)
            tally.observe(elapsed)
        tally.flush()
        expected, got = samples(one_by_one), samples(batched)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), key


def test_a_flush_with_nothing_counted_adds_nothing_and_counting_goes_on_after_it() -> None:
    registry, counter, histogram = pair()
    tally = RequestTally(counter.labels("r"), histogram.labels("r"))
    tally.flush()
    assert samples(registry)[("requests_total", (("route", "r"),))] == 0
    tally.observe(0.0001)
    tally.flush()
    tally.flush()
    tally.observe(3.0)
    tally.flush()
    found = samples(registry)
    assert found[("requests_total", (("route", "r"),))] == 2
    assert found[("duration_seconds_bucket", (("le", "0.0005"), ("route", "r")))] == 1
    assert found[("duration_seconds_bucket", (("le", "2.5"), ("route", "r")))] == 1
    assert found[("duration_seconds_bucket", (("le", "+Inf"), ("route", "r")))] == 2
    assert math.isclose(found[("duration_seconds_sum", (("route", "r"),))], 3.0001)

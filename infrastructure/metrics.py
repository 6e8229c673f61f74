"""Prometheus metrics (prometheus-client). With several worker processes, set
PROMETHEUS_MULTIPROC_DIR and every process's samples are collected together."""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("widgets_http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"])
LATENCY = Histogram(
    "widgets_http_request_duration_seconds", "HTTP request latency by route template", ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class _ByReasonOnly:
    """A counter whose callers name the widget and the reason, labelled by the reason alone: whoever reads /metrics
    would otherwise get a list of every widget's id. Per widget, refusals are in `widgets stats` and the stats API."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def labels(self, widget_id: str, reason: str) -> Any:
        return self.counter.labels(reason)


ORIGIN_REFUSALS = _ByReasonOnly(Counter("widgets_origin_refusals_total", "Public requests refused for their origin, by reason",
                                        ["reason"]))
CONVERSATIONS_STARTED = Counter("widgets_conversations_started_total", "Conversations started")
LIVEKIT_ROOM_ENDS = Counter("widgets_livekit_room_ends_total",
                            "Rooms left at a resume, ended through LiveKit's DeleteRoom, by outcome: ended, absent (gone "
                            "already), and the failures timeout (no answer within a second), refused, error", ["outcome"])
PROJECTION_POSITION = Gauge("widgets_projection_position", "Notification id a projection has reached", ["projection"],
                            multiprocess_mode="max")
PROJECTION_LAG = Gauge("widgets_projection_lag_events", "Events a projection is behind the event store", ["projection"],
                       multiprocess_mode="max")
REBUILD_PROGRESS = Gauge("widgets_rebuild_position", "Position reached by a running rebuild", ["projection"],
                         multiprocess_mode="max")
WEBHOOK_DELIVERIES = Counter("widgets_webhook_deliveries_total",
                             "Webhook delivery attempts by outcome: succeeded, retrying (failed, another attempt is scheduled), "
                             "failed (no attempt left, or 410)", ["outcome"])
WEBHOOK_DELIVERY_LAG = Histogram(
    "widgets_webhook_delivery_lag_seconds", "From an event's commit to the endpoint's 2xx, for each succeeded delivery",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000),
)
WEBHOOK_ENDPOINTS_DISABLED = Counter("widgets_webhook_endpoints_disabled_total",
                                     "Webhook endpoints disabled by the dispatcher, by reason (gone_410, failing_5_days)", ["reason"])
WEBHOOK_DELIVERIES_DEFERRED = Counter(
    "widgets_webhook_deliveries_deferred_total",
    "Webhook deliveries put off rather than sent, by reason: endpoints_behind (the endpoints read model had not reached "
    "the event yet), signing_secret_missing (a secret the endpoint names is not in the secrets table)", ["reason"])


class RequestTally:
    """The requests of one (route, method, status), counted in plain numbers and added to Prometheus in one go.

    For the public config read's front (api/hot_path.py), where one `Counter.inc` and one `Histogram.observe`
    per request (three locked increments) cost more than the rest of its bookkeeping. `flush` adds what was
    counted since the last one: the same samples as an `inc` and an `observe` per request (the histogram's
    buckets are filled through its own value objects, which prometheus-client keeps per bucket, not
    cumulated; tests/unit/test_metrics.py holds that equality, so an upgrade that changes it fails there).
    Not thread-safe: `observe` and `flush` are called on one event loop."""

    __slots__ = ("counter", "histogram", "bounds", "count", "total", "buckets")

    def __init__(self, counter: Any, histogram: Any) -> None:
        self.counter, self.histogram = counter, histogram
        self.bounds: list[float] = list(histogram._upper_bounds)
        self.count, self.total, self.buckets = 0, 0.0, [0] * len(self.bounds)

    def observe(self, elapsed: float) -> None:
        self.count += 1
        self.total += elapsed
        self.buckets[bisect_left(self.bounds, elapsed)] += 1  # the first bucket whose bound is >= elapsed, as `observe`

    def flush(self) -> None:
        if not self.count:
            return
        count, total, buckets = self.count, self.total, self.buckets
        self.count, self.total, self.buckets = 0, 0.0, [0] * len(buckets)
        self.counter.inc(count)
        self.histogram._sum.inc(total)
        for value, observed in zip(self.histogram._buckets, buckets, strict=True):
            if observed:
                value.inc(observed)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST

"""Prometheus metrics (prometheus-client). With several worker processes, set
PROMETHEUS_MULTIPROC_DIR and every process's samples are collected together."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("widgets_http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"])
LATENCY = Histogram(
    "widgets_http_request_duration_seconds", "HTTP request latency by route template", ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ORIGIN_REFUSALS = Counter("widgets_origin_refusals_total", "Public requests refused for their origin, by widget and reason",
                          ["widget_id", "reason"])
CONVERSATIONS_STARTED = Counter("widgets_conversations_started_total", "Conversations started")
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


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST

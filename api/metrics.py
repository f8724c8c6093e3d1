"""Prometheus metrics of the API, in a registry of its own per app instance."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Creates answer in milliseconds; the tail buckets show a struggling primary.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Prometheus' rate() needs two samples of a series, so a series born at 1 by a
# stack's first request shows no increase until the second one. The series the
# console and the 5xx alert take a rate of exist from the start, at 0.
STARTING_REQUESTS = tuple(
    (route, "POST", status)
    for route in ("/v1/payments", "/v1/refunds")
    for status in ("201", "500", "503")
)


class Metrics:
    """Counters and histograms; one registry per app so several apps can share a process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "paystream_api_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "paystream_api_request_duration_seconds",
            "Time to answer, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "paystream_api_idempotent_replays_total",
            "Responses replayed for a repeated Idempotency-Key, by where the answer came from.",
            ["source"],
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "paystream_api_stripe_webhook_events_total",
            "Stripe webhook deliveries by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "paystream_api_redis_errors_total",
            "Redis failures that were absorbed (idempotency falls back to Postgres, "
            "rate limiting fails open).",
            ["operation"],
            registry=self.registry,
        )
        self.replica_fallbacks = Counter(
            "paystream_api_replica_fallbacks_total",
            "Reads served by the primary instead of a replica, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for labels in STARTING_REQUESTS:
            self.requests.labels(*labels)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several API processes (api/server.py): sum every process's samples.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    """The route template ("/v1/payments/{id}"), never the raw path, to bound cardinality."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return str(resource.canonical)


def metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Outermost middleware: counts and times every request with its final status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_label(request)
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route, request.method).observe(time.perf_counter() - started)

    return middleware


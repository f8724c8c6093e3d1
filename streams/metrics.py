"""Prometheus metrics of the worker, and the JSON snapshot behind ``/stats/``."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from paystream.domain.status import PaymentStatus

# Our own registry: the default one would also export every import-time
# collector of every library, and tests import this module repeatedly.
REGISTRY = CollectorRegistry()

EVENTS = Counter("paystream_stream_events", "Messages processed, per agent",
                 ["agent"], registry=REGISTRY)
ERRORS = Counter("paystream_stream_errors", "Messages an agent could not process",
                 ["agent"], registry=REGISTRY)
DEAD_LETTERS = Counter("paystream_dead_letters", "Messages sent to the dead-letter topic",
                       ["agent"], registry=REGISTRY)
CDC_LAG = Gauge("paystream_cdc_lag_seconds",
                "now - source.ts_ms of the last change event each agent saw",
                ["agent"], registry=REGISTRY)
STALE_ACKS = Counter("paystream_stale_acks_refused",
                     "Acks refused (the event is redelivered): the worker was stopping, "
                     "a rebalance was in progress, or the event was fetched before it",
                     registry=REGISTRY)
COMMITS_HELD = Counter("paystream_commits_held",
                       "Commits of a partition held back: the event at its committed "
                       "offset is not acked yet while later ones are", registry=REGISTRY)
HEAD_REFETCHES = Counter("paystream_commit_head_refetches",
                         "Partitions sought back to their committed offset: a commit held "
                         "so long that the event at its head was never delivered",
                         registry=REGISTRY)
STRIPE_CALLS = Counter("paystream_stripe_calls", "Stripe calls by operation and outcome",
                       ["operation", "outcome"], registry=REGISTRY)
CIRCUIT_STATE = Gauge("paystream_stripe_circuit_open",
                      "1 while the Stripe circuit breaker is open or half-open",
                      registry=REGISTRY)
CIRCUIT_OPENINGS = Counter("paystream_stripe_circuit_openings",
                           "Times the Stripe circuit breaker opened", registry=REGISTRY)
STRIPE_IN_FLIGHT = Gauge("paystream_stripe_in_flight", "Stripe calls awaiting an answer",
                         registry=REGISTRY)
STRIPE_BUDGET_WAITING = Gauge("paystream_stripe_budget_waiting",
                              "Stripe calls waiting for the request budget (rate limit)",
                              registry=REGISTRY)
TRANSITIONS = Counter("paystream_transitions", "Guarded status writes that took effect",
                      ["entity", "status", "source"], registry=REGISTRY)
# rate() needs two samples of a series: one born at 1 by a worker's first
# transition would not show on the console until the second. The outcomes of
# the submit stage, the path of nearly every payment, exist from the start.
for _status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.PROCESSING,
                PaymentStatus.REQUIRES_ACTION, PaymentStatus.BLOCKED):
    TRANSITIONS.labels("payment", _status.value, "submit")
FRAUD_DECISIONS = Counter("paystream_fraud_decisions", "Fraud decisions stored",
                          ["outcome"], registry=REGISTRY)
JOURNALS = Counter("paystream_ledger_journals", "Journals posted (new, not replays)",
                   ["source_type"], registry=REGISTRY)
NOTIFICATIONS = Counter("paystream_merchant_webhooks", "Merchant webhook delivery attempts",
                        ["outcome"], registry=REGISTRY)
PENDING = Gauge("paystream_pending_entries", "Non-terminal objects in this worker's table",
                registry=REGISTRY)
PENDING_OLDEST = Gauge("paystream_pending_oldest_age_seconds",
                       "Age of the oldest non-terminal object in this worker's table "
                       "(0 when none)", registry=REGISTRY)
CONSUMER_LAG = Gauge("paystream_consumer_lag_messages",
                     "High watermark minus committed offset, per partition an agent of "
                     "this worker consumes", ["topic", "partition"], registry=REGISTRY)
RECONCILE_DRIFT = Gauge("paystream_reconcile_drift",
                        "Drifts the last reconciliation found, per kind", ["kind"],
                        registry=REGISTRY)
RECONCILE_LAST = Gauge("paystream_reconcile_last_success_timestamp_seconds",
                       "When the worker's reconciliation last completed", registry=REGISTRY)
POLLS = Counter("paystream_poller_polls", "Pending entries the poller looked at",
                ["outcome"], registry=REGISTRY)
LATENCY = Histogram("paystream_cdc_to_effect_seconds",
                    "Commit (source.ts_ms) to effect written, per agent",
                    ["agent"], registry=REGISTRY,
                    # Up to 10 minutes: under a backlog, p99 must not read as "30 s".
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))


def observe_source(agent: str, source_ts_ms: int | None) -> None:
    """Record CDC lag for an event that carries Debezium's source.ts_ms."""
    if source_ts_ms is not None:
        CDC_LAG.labels(agent).set(max(0.0, time.time() - source_ts_ms / 1000))


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def snapshot() -> dict[str, Any]:
    """Every sample as {metric: {"label=value,...": number}}, for JSON views."""
    out: dict[str, Any] = {}
    for family in REGISTRY.collect():
        values: dict[str, float] = {}
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            suffix = sample.name[len(family.name):]
            values[(labels + suffix) or "value"] = sample.value
        out[family.name] = values
    return out

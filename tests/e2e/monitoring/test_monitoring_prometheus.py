"""Prometheus as `make up` runs it: every target up, every series the alerts read present."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testkit.waiting import eventually
from tests.e2e.monitoring.prom import api, query

ROOT = Path(__file__).resolve().parents[3]
JOBS = {"prometheus", "api", "worker", "connect", "kafka", "postgres", "redis"}
# One series per source the alerts and the console read; a renamed metric or a
# broken exporter rule shows here rather than as an alert that never fires.
SERIES = [
    'pg_cdc_table_changes{relname="payments"}',
    'pg_slot_active{slot_type="logical"}',
    "pg_slot_retained_bytes",
    "pg_standby_replay_lag_bytes",
    'pg_payments_open_oldest_age_seconds{status="pending"}',
    'pg_stat_database_xact_commit{datname="paystream"}',
    'kafka_connect_source_records_written_total{connector="paystream-payments"}',
    'kafka_connect_task_status{connector="paystream-payments"}',
    "debezium_streaming_connected",
    "debezium_streaming_milliseconds_behind_source",
    'kafka_log_logendoffset{topic="paystream.dlq"}',
    "kafka_server_brokertopicmetrics_messagesinpersec_total",
    "paystream_api_requests_total",
    "paystream_stripe_circuit_open",
    "paystream_stripe_circuit_openings_total",
    "redis_up",
]


async def test_every_scrape_target_is_up() -> None:
    async def all_up() -> dict[str, str] | None:
        targets = (await api("targets", state="active"))["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if set(health) == JOBS and set(health.values()) == {"up"} else None

    # A target started a moment ago is "unknown" until its first scrape (5 s).
    health = await eventually(all_up, timeout=60, interval=1, what="every target up")
    print(f"targets up: {sorted(health)}")


@pytest.mark.parametrize("series", SERIES)
async def test_the_alerts_inputs_are_scraped(series: str) -> None:
    async def present() -> list:
        return await query(series)

    await eventually(present, timeout=30, interval=1, what=series)


async def test_the_alert_rules_are_loaded() -> None:
    groups = (await api("rules", type="alert"))["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"CdcNotStreaming", "ConsumerLagGrowing", "PaymentsStuckPending",
            "DeadLettersReceived", "StripeCircuitOpen", "StripeRateLimited",
            "ReplicaLagHigh", "ReplicationSlotRetainingWal", "ApiErrorRatioHigh",
            "MerchantWebhooksFailing"} <= names
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"]), groups


def test_status_prints_the_alerts() -> None:
    out = subprocess.run([sys.executable, "-m", "stack", "status"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert "  alerts: " in out.stdout, out.stdout

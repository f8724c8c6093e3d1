"""CdcNotStreaming fires while Debezium is paused and payments are written, and clears after."""

from __future__ import annotations

import time

import pytest

from testkit import connector
from testkit.rows import insert_blocked_payment
from testkit.waiting import eventually
from tests.e2e.monitoring.prom import alerts

pytestmark = pytest.mark.disruptive

ALERT = "CdcNotStreaming"
# The rule looks one minute back and waits 30 s (monitoring/alerts.yml), and
# Prometheus scrapes and evaluates every 5 s: about 95 s after the last record.
FIRE_WITHIN = 180.0
CLEAR_WITHIN = 60.0
INSERT_EVERY = 5.0


async def test_cdc_alert_fires_while_paused_and_clears_after_resume(settings) -> None:
    async def inactive() -> bool:
        return not await alerts(ALERT)

    # An earlier test may have paused CDC too: start from a streaming pipeline.
    await eventually(inactive, timeout=CLEAR_WITHIN + 60, interval=1, what=f"{ALERT} inactive")

    last_insert = 0.0

    async def firing_while_payments_arrive() -> bool:
        nonlocal last_insert
        if time.monotonic() - last_insert >= INSERT_EVERY:
            await insert_blocked_payment(settings.database_url)
            last_insert = time.monotonic()
        # The instance of the rule's first branch (tables changed, nothing written to
        # Kafka) carries no slot_name or server label; the slot may go inactive too.
        return any(a["state"] == "firing" and set(a["labels"]) == {"alertname", "severity"}
                   for a in await alerts(ALERT))

    async with connector.paused_async(connector.connect_url()):
        paused = time.monotonic()
        await eventually(firing_while_payments_arrive, timeout=FIRE_WITHIN, interval=1,
                         what=f"{ALERT} firing")
        fired_after = time.monotonic() - paused
    resumed = time.monotonic()
    await eventually(inactive, timeout=CLEAR_WITHIN, interval=1, what=f"{ALERT} cleared")
    cleared_after = time.monotonic() - resumed
    print(f"{ALERT}: fired {fired_after:.0f}s after the pause, "
          f"cleared {cleared_after:.0f}s after the resume")

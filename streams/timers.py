"""Timers: the poller and the watchdog on every worker, the webhook sweeper on the leader."""

from __future__ import annotations

import logging

from . import notify, poller, watchdog
from .app import app

log = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0


@app.timer(interval=poller.poll_tick_seconds())
async def poll_pending() -> None:
    """Every worker polls the pending entries of the partitions it owns."""
    try:
        await poller.poll_due()
    except Exception:  # noqa: BLE001 - a raising timer would stop for good
        log.exception("poller tick failed")


@app.timer(interval=SWEEP_SECONDS, on_leader=True)
async def sweep_notifications() -> None:
    """One sweeper for the whole group: the outbox is global, so the leader does it."""
    try:
        await notify.sweep()
    except Exception:  # noqa: BLE001
        log.exception("notification sweep failed")


@app.timer(interval=watchdog.CHECK_EVERY_SECONDS)
async def watch_progress() -> None:
    """A worker out of its group or stalled too long stops, to be restarted."""
    health = watchdog.consumer_health(app)
    if health.unhealthy_for > watchdog.EXIT_AFTER_SECONDS:
        watchdog.stop_worker(f"assigned={health.assigned}, stalled={health.stalled}")

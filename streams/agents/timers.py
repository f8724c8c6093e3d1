"""Timers: the poller and the watchdog on every worker; the webhook sweeper and the
reconciliation on the leader."""

from __future__ import annotations

import logging
import time
from collections import Counter

from paystream.domain.reconcile import DriftKind
from streams import metrics, watchdog
from streams.adapters.stripe_gateway import BACKGROUND
from streams.agents import notify, poller
from streams.app import app, settings
from streams.ops import reconcile
from streams.runtime import runtime

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
    health = watchdog.consumer_health(app, settings.watchdog_stall_seconds)
    _export_lag(health.lag)
    if health.unhealthy_for > settings.watchdog_exit_after_seconds:
        watchdog.stop_worker(f"assigned={health.assigned}, stalled={health.stalled}")


_lag_series: set[tuple[str, str]] = set()


def _export_lag(lag: dict[tuple[str, int], int]) -> None:
    series = {(topic, str(partition)): n for (topic, partition), n in lag.items()}
    for gone in _lag_series - set(series):  # revoked partitions
        metrics.CONSUMER_LAG.remove(*gone)
    for labels, n in series.items():
        metrics.CONSUMER_LAG.labels(*labels).set(n)
    _lag_series.clear()
    _lag_series.update(series)


@app.timer(interval=settings.reconcile_interval_seconds, on_leader=True)
async def reconcile_recent() -> None:
    """Drift found within minutes, not at month end: the leader reconciles the recent
    window with Stripe (background share of the budget) and exports what it found."""
    BACKGROUND.set(True)
    scope = reconcile.Scope(since=time.time() - settings.reconcile_window_seconds,
                            settle_seconds=60.0)
    try:
        pool = await runtime.pool()
        async with pool.connection() as conn:
            report = await reconcile.run(conn, runtime.stripe, scope, fix=False)
    except Exception:  # noqa: BLE001
        log.exception("reconciliation failed")
        return
    counts = Counter(d.kind for d in report.drifts)
    for kind in DriftKind:
        metrics.RECONCILE_DRIFT.labels(kind.value).set(counts.get(kind, 0))
    metrics.RECONCILE_LAST.set(time.time())
    if report.drifts:
        log.warning("reconciliation: %d drift(s) over the last %.0fh: %s", len(report.drifts),
                    settings.reconcile_window_seconds / 3600,
                    ", ".join(f"{k.value}={n}" for k, n in counts.items()))

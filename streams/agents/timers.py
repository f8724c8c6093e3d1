"""Timers: the poller and the watchdog on every worker; the webhook sweeper and the
reconciliation on the leader."""

from __future__ import annotations

import logging

from streams import metrics, reconcile, watchdog
from streams.agents.notify import Notify
from streams.agents.poller import Poller, poll_tick_seconds
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0


class Timers:
    """The worker's periodic jobs, installed on its app."""

    def __init__(self, w: WorkerParts, poller: Poller, notify: Notify) -> None:
        self._w = w
        self._poller = poller
        self._notify = notify
        # The (topic, partition) series of CONSUMER_LAG this worker exports.
        self._lag_series: set[tuple[str, str]] = set()
        w.app.timer(interval=poll_tick_seconds(w.settings))(self.poll_pending)
        w.app.timer(interval=SWEEP_SECONDS, on_leader=True)(self.sweep_notifications)
        w.app.timer(interval=watchdog.CHECK_EVERY_SECONDS)(self.watch_progress)
        # Kept between runs: what was covered, the drift counts per minute, and which
        # listings the peer cannot filter by time.
        self._reconciler = reconcile.Incremental(
            window_seconds=w.settings.reconcile_window_seconds,
            interval_seconds=w.settings.reconcile_interval_seconds)
        self._lister: reconcile.StripeLister | None = None
        w.app.timer(interval=w.settings.reconcile_interval_seconds,
                    on_leader=True)(self.reconcile_recent)

    async def poll_pending(self) -> None:
        """Every worker polls the pending entries of the partitions it owns."""
        try:
            await self._poller.poll_due()
        except Exception:  # a raising timer would stop for good
            log.exception("poller tick failed")

    async def sweep_notifications(self) -> None:
        """One sweeper for the whole group: the outbox is global, so the leader does it."""
        try:
            await self._notify.sweep()
        except Exception:
            log.exception("notification sweep failed")

    async def watch_progress(self) -> None:
        """A worker out of its group or stalled too long stops, to be restarted."""
        settings = self._w.settings
        health = self._w.watch.health()
        self._export_lag(health.lag)
        if health.unhealthy_for > settings.watchdog_exit_after_seconds:
            watchdog.stop_worker(f"assigned={health.assigned}, stalled={health.stalled}")

    def _export_lag(self, lag: dict[tuple[str, int], int]) -> None:
        series = {(topic, str(partition)): n for (topic, partition), n in lag.items()}
        for gone in self._lag_series - set(series):  # revoked partitions
            metrics.CONSUMER_LAG.remove(*gone)
        for labels, n in series.items():
            metrics.CONSUMER_LAG.labels(*labels).set(n)
        self._lag_series.clear()
        self._lag_series.update(series)

    async def reconcile_recent(self) -> None:
        """Drift found within minutes, not at month end: the leader reconciles what was
        created since its last successful run, and the next share of the window on a
        rolling pass (streams.reconcile.Incremental), in the background share of the
        Stripe budget, and exports the drift counts over the whole window."""
        if self._lister is None:  # the gateway is made on first use, inside the loop
            self._lister = reconcile.StripeLister(self._w.runtime.stripe, background=True)
        try:
            pool = await self._w.runtime.pool()
            async with pool.connection() as conn:
                counts = await self._reconciler.run_once(conn, self._lister)
        except Exception:  # the next run covers what this one did not
            log.exception("reconciliation failed")
            return
        if counts:
            log.warning("reconciliation: %d drift(s) over the last %.0fh: %s",
                        sum(counts.values()),
                        self._w.settings.reconcile_window_seconds / 3600,
                        ", ".join(f"{k.value}={n}" for k, n in counts.items()))

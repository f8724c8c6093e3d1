"""Merchant notifications: an outbox row per terminal transition, signed deliveries, retries.

The agent writes each event to ``merchant_notifications`` (event id derived
from object and status, so replays insert nothing) and starts delivering it.
Failures are retried with exponential backoff by the leader's sweeper, which
survives restarts because the schedule lives in the table; after the last
attempt the event is marked failed and dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from faust.types import EventT

from paystream.domain import PaymentStatus, RefundStatus, sign
from paystream.domain.ids import notification_event_id
from paystream.domain.signing import SIGNATURE_HEADER
from paystream.settings import Settings
from streams import metrics
from streams.adapters import postgres
from streams.adapters.cdc import Change
from streams.dead_letters.envelope import envelope
from streams.dead_letters.sender import DeadLetters
from streams.messages import Notification
from streams.resilience import backoff_delay
from streams.rows import PaymentRow, RefundRow
from streams.runtime import Runtime
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)
AGENT = "notify"
# A delivery in flight holds its row this long; a crashed worker's rows come back after it.
LEASE_SECONDS = 30.0
SWEEP_BATCH = 100
MAX_PARALLEL_DELIVERIES = 32


_TERMINAL_PAYMENT = frozenset(s.value for s in PaymentStatus if s.is_terminal)
_TERMINAL_REFUND = frozenset(s.value for s in RefundStatus if s.is_terminal)


def notification_for(change: Change | None, *, payment: bool) -> Notification | None:
    """The merchant event a change causes: one per terminal status an object enters
    (``payment``: a change of the payments topic, else of the refunds topic)."""
    if change is None or change.op == "d" or change.new_status is None:
        return None
    status = change.new_status
    if not change.entered(status):
        return None
    obj: PaymentRow | RefundRow
    if payment:
        if status not in _TERMINAL_PAYMENT:
            return None
        obj, kind = PaymentRow.parse(change.row), "payment"
    else:
        if status not in _TERMINAL_REFUND:
            return None
        obj, kind = RefundRow.parse(change.row), "refund"
    event_id = notification_event_id(obj.id, status)
    event_type = f"{kind}.{status}"
    # created comes from the commit, not the clock: a replay builds the same body.
    created = (change.source_ts_ms or int(obj.created_at.timestamp() * 1000)) // 1000
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": created,
        "data": {"object": obj.public()},
    }
    return Notification(event_id, obj.merchant_id, event_type, obj.id,
                        json.dumps(body, separators=(",", ":"), sort_keys=True))


class Notify:
    """The outbox writer of changes.py's notify handler, and the leader's sweeper."""

    def __init__(self, w: WorkerParts) -> None:
        self._payments_topic = w.settings.payments_topic
        self._stage = w.stage(AGENT)
        self._deliverer = Deliverer(w.runtime, w.settings, w.dead_letters)
        # Stopped before the pool closes; leases expire and the sweeper redelivers
        # whatever was cut short.
        w.runtime.on_close(self._deliverer.stop)

    async def enqueue(self, changes: Sequence[tuple[EventT[Any], Change]]) -> None:
        """Put a batch's merchant events in the outbox, one round trip (a handler of
        changes.py)."""
        found: list[Notification] = []
        for event, change in changes:

            async def build(event: EventT[Any] = event, change: Change = change) -> None:
                note = notification_for(
                    change, payment=event.message.topic == self._payments_topic)
                if note is not None:
                    found.append(note)

            await self._stage.isolate(event, build)
        if not found:
            return
        new = await self._stage.with_db(lambda conn: postgres.enqueue_notifications(conn, found))
        if new:
            self._deliverer.start(new)

    async def sweep(self) -> int:
        """Deliver every due retry (and anything a crashed worker left): the leader's timer."""
        return await self._deliverer.deliver(None)


class Deliverer:
    """Delivers outbox rows in the background, a bounded number at a time."""

    def __init__(self, runtime: Runtime, settings: Settings, dead_letters: DeadLetters) -> None:
        self._runtime = runtime
        self._settings = settings
        self._dead_letters = dead_letters
        self._tasks: set[asyncio.Future[int]] = set()
        self._slots: asyncio.Semaphore | None = None

    def start(self, event_ids: list[str]) -> None:
        """Deliver these new events now, without holding up the agent."""
        task = asyncio.ensure_future(self.deliver(event_ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, event_ids: list[str] | None) -> int:
        """Claim due rows (these, or any due when None) and deliver them; how many."""
        try:
            rows = await self._runtime.with_db(
                lambda conn: postgres.claim_notifications(
                    conn, event_ids=event_ids, limit=SWEEP_BATCH if event_ids is None
                    else len(event_ids), lease_seconds=LEASE_SECONDS),
                what=AGENT,
            )
            await asyncio.gather(*(self._deliver_one(row) for row in rows))
            return len(rows)
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task has no one else to tell
            log.exception("merchant webhook delivery failed unexpectedly; the sweeper retries")
            return 0

    async def _deliver_one(self, row: dict[str, Any]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_PARALLEL_DELIVERIES)
        body = row["payload"].encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, row["webhook_secret"], int(time.time())),
            "User-Agent": "PayStream-Webhooks/1.0",
        }
        status: int | None = None
        error: str | None = None
        async with self._slots:
            try:
                session = await self._runtime.http()
                async with session.post(row["webhook_url"], data=body, headers=headers,
                                        allow_redirects=False) as resp:
                    status = resp.status
                    await resp.read()
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
                error = f"{type(err).__name__}: {err}"[:300] or type(err).__name__
        await self._record(row, status, error)

    async def _record(self, row: dict[str, Any], status: int | None, error: str | None) -> None:
        attempts = int(row["attempts"])
        settings = self._settings
        if error is None:
            outcome, retry_in = "delivered", None
        elif attempts < settings.notify_max_attempts:
            outcome = "retry"
            base = settings.notify_base_delay_seconds
            retry_in = backoff_delay(attempts, base=base,
                                     cap=base * 2 ** settings.notify_max_attempts)
        else:
            outcome, retry_in = "failed", None
        await self._runtime.with_db(
            lambda conn: postgres.record_delivery(conn, row["event_id"], delivered=error is None,
                                               status_code=status, error=error,
                                               retry_in=retry_in),
            what=AGENT,
        )
        metrics.NOTIFICATIONS.labels(outcome).inc()
        if outcome == "failed":
            body = envelope(
                topic=None, partition=None, offset=None, agent=AGENT,
                error=f"webhook {row['event_id']} to merchant {row['merchant_id']} failed "
                      f"after {attempts} attempts: {error}",
                key=row["event_id"].encode(), value=row["payload"].encode(),
            )
            body["event_id"] = row["event_id"]
            await self._dead_letters.send_envelope(body, key=row["event_id"].encode())
        elif outcome == "retry":
            # The URL may carry a merchant's token: log ids, never the URL or secret.
            log.info("webhook %s to merchant %s: %s; attempt %d, next in %.1fs",
                     row["event_id"], row["merchant_id"], error, attempts, retry_in)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

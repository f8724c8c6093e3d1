"""The poller: resolves the pending table's due entries by asking Stripe.

It runs on every worker over the partitions that worker owns, in the
background share of the Stripe budget, and sends its rescheduling to the
table's owner as commands (a timer cannot write tables).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from paystream.domain import PaymentStatus, RefundStatus
from paystream.settings import Settings
from streams import metrics
from streams.adapters import postgres
from streams.adapters.cdc import id_key
from streams.agents.fraud import Fraud, check_for
from streams.agents.submit import Submit
from streams.messages import PendingCommand
from streams.resilience import backoff_delay
from streams.rows import PaymentRow
from streams.stripe_sequence import PAYMENT, REFUND
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)
POLLER = "poller"
# At most this many due entries per tick; the rest wait for the next one.
MAX_DUE_PER_TICK = 500
# Backoff between polls of one entry grows up to this many poll intervals.
MAX_BACKOFF_INTERVALS = 32
# Outcomes that did not involve Stripe: the entry is only snoozed in memory
# (no command, no attempt), so a backlog upstream cannot turn the poller into
# a source of load. A restart forgets snoozes and looks at each entry once.
_QUIET = frozenset({"missing", "already_terminal", "awaiting_fraud", "fraud_restarted",
                    "blocked", "in_flight"})
# The fraud stages decide within a second; a payment still undecided this long
# after its commit has lost its check between stages (a verdict produced by a
# worker that died before sending it on), so the poller sends the check again.
# Repeats are harmless: the velocity windows count a payment once and the first
# stored decision wins.
FRAUD_STALL_SECONDS = 30.0
# ... but only while the worker keeps up: with messages waiting, an undecided
# payment is most likely just queued, and a re-sent check would only lengthen
# the queue it is waiting in (by one message per waiting payment and poll).
FRAUD_RESEND_MAX_LAG = 100


def poll_tick_seconds(settings: Settings) -> float:
    """How often the timer looks for due entries: a fraction of the poll interval."""
    return min(5.0, max(0.5, settings.poll_interval_seconds / 2))


# --- the poller (timers.py calls poll_due on every worker) ---------------------------


class Poller:
    """The poller of one worker, over the pending entries of the partitions it owns."""

    def __init__(self, w: WorkerParts, fraud: Fraud, submit: Submit) -> None:
        self._w = w
        self._fraud = fraud
        self._submit = submit
        # Entry id -> (not before, snoozes so far); see _QUIET.
        self._snoozed: dict[str, tuple[float, int]] = {}

    async def poll_due(self, now: float | None = None) -> int:
        """Poll every due entry once; returns how many were looked at."""
        if self._w.app.rebalancing:
            return 0
        now = time.time() if now is None else now
        entries = self._w.tables.local_pending_entries()
        metrics.PENDING.set(len(entries))
        metrics.PENDING_OLDEST.set(max((now - e["since"] for e in entries), default=0.0))
        snoozed = self._snoozed
        present = {e["id"] for e in entries}
        for gone in [k for k in snoozed if k not in present]:
            del snoozed[gone]
        due = sorted((e for e in entries
                      if max(e["next_poll_at"], snoozed.get(e["id"], (0.0, 0))[0]) <= now),
                     key=lambda e: e["next_poll_at"])[:MAX_DUE_PER_TICK]
        if not due:
            return 0
        payment_ids = [e["id"] for e in due if e["kind"] == "payment"]
        refund_ids = [e["id"] for e in due if e["kind"] == "refund"]

        async def load(conn: Any) -> dict[str, Any]:
            rows = await postgres.load_payments(conn, payment_ids) if payment_ids else {}
            if refund_ids:
                rows.update(await postgres.load_refunds(conn, refund_ids))
            return rows

        rows = await self._w.runtime.with_db(load, what=POLLER)
        commands = await asyncio.gather(*(self.poll_one(e, rows.get(e["id"])) for e in due))
        for entry, command in zip(due, commands, strict=True):
            if command is None:
                # Snoozes back off too: a payment stuck upstream is looked at less and less.
                times = snoozed.get(entry["id"], (0.0, 0))[1] + 1
                interval = self._w.settings.poll_interval_seconds
                snoozed[entry["id"]] = (
                    now + backoff_delay(times, base=interval,
                                        cap=interval * MAX_BACKOFF_INTERVALS),
                    times,
                )
                continue
            snoozed.pop(entry["id"], None)
            await self._w.topics.pending_commands.send(key=id_key(entry["id"]),
                                                     value=command.dumps(),
                                                     partition=entry["partition"])
        return len(due)

    async def poll_one(self, entry: dict[str, Any],
                       row: dict[str, Any] | None) -> PendingCommand | None:
        """Resolve one entry if Stripe knows more; when Stripe was asked, when to ask next."""
        attempts = int(entry["attempts"]) + 1
        error: str | None = None
        try:
            if entry["kind"] == "payment":
                outcome, error = await self._poll_payment(row, int(entry["partition"]))
            else:
                outcome, error = await self._poll_refund(row)
        except Exception as err:  # one entry must not stop the others
            log.exception("poller failed on %s %s", entry["kind"], entry["id"])
            metrics.ERRORS.labels(POLLER).inc()
            outcome, error = "error", f"{type(err).__name__}: {err}"
        metrics.POLLS.labels(outcome).inc()
        if outcome in _QUIET:
            return None
        interval = self._w.settings.poll_interval_seconds
        if outcome == "stripe_unavailable":
            # Try again soon after the breaker's next trial call, and at least every
            # interval: an outage's backlog is resolved minutes after it ends.
            delay = backoff_delay(attempts, base=self._w.settings.circuit_reset_seconds,
                                  cap=interval)
        else:
            delay = backoff_delay(attempts, base=interval, cap=interval * MAX_BACKOFF_INTERVALS)
        return PendingCommand(id=entry["id"], attempts=attempts,
                              next_poll_at=time.time() + delay,
                              last_error=error[:300] if error else None)

    async def _poll_payment(self, row: dict[str, Any] | None,
                            partition: int) -> tuple[str, str | None]:
        if row is None:
            return "missing", None
        status = PaymentStatus(row["status"])
        if status.is_terminal:
            # e.g. the webhook won; its change event drops the entry
            return "already_terminal", None
        if status is PaymentStatus.PENDING and not row["stripe_payment_intent_id"]:
            if row["approved"] is None:
                # Still in the fraud stages (a failure there is dead-lettered and
                # replayed with `paystream dlq replay`), or its check was lost.
                if time.time() - row["created_at"].timestamp() < FRAUD_STALL_SECONDS \
                        or self._w.watch.waiting_messages() > FRAUD_RESEND_MAX_LAG:
                    return "awaiting_fraud", None
                payment = PaymentRow.parse(row)
                await self._fraud.send_check(check_for(payment, partition=partition,
                                                       source_ts_ms=None))
                log.warning("payment %s still undecided by fraud; check sent again", row["id"])
                return "fraud_restarted", None
            if row["approved"] is False:
                await self._submit.block(row["id"], row["rules_hit"] or [])
                return "blocked", None
        # The poller spends only the Stripe budget no new payment or refund is waiting for.
        attempt = await self._w.sequence.run(PAYMENT, row, source=POLLER, background=True)
        return attempt.outcome, attempt.error

    async def _poll_refund(self, row: dict[str, Any] | None) -> tuple[str, str | None]:
        if row is None:
            return "missing", None
        if RefundStatus(row["status"]).is_terminal:
            return "already_terminal", None
        attempt = await self._w.sequence.run(REFUND, row, source=POLLER, background=True)
        return attempt.outcome, attempt.error

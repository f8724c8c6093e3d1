"""The pending table (every non-terminal payment and refund) and the poller that resolves it.

The ``pending`` agent is the only writer of the table: change events add,
update and remove entries, and the poller's commands reschedule them. The
poller runs on every worker over the partitions that worker owns (a timer
cannot write tables, so it sends commands to the owner's partition).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from faust.types import EventT, StreamT

from paystream.domain import PaymentStatus, RefundStatus

from . import metrics, store, topics, watchdog
from .app import app, settings
from .fraud import check_for, send_check
from .handling import count, in_scope, isolate, out_of_scope, with_db
from .records import PaymentRow, PendingCommand, decode_change, id_key
from .resilience import backoff_delay
from .stripe_gateway import BACKGROUND
from .stripe_sequence import PAYMENT, REFUND, lease_seconds, sequence
from .submit import block
from .tables import lookup, pending

log = logging.getLogger(__name__)
AGENT = "pending"
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
# after its commit lost its check between stages (seen once after a kill -9: a
# verdict produced by the dying worker never reached the submitter), so the
# poller sends the check again. Repeats are harmless: the velocity windows count
# a payment once and the first stored decision wins.
FRAUD_STALL_SECONDS = 30.0
# ... but only while the worker keeps up: with messages waiting, an undecided
# payment is most likely just queued, and sending its check again only deepens
# the queue (a 6,000-payment backlog once drew 20,000 re-sent checks in a minute).
FRAUD_RESEND_MAX_LAG = 100
_snoozed: dict[str, tuple[float, int]] = {}


def poll_tick_seconds() -> float:
    """How often the timer looks for due entries: a fraction of the poll interval."""
    return min(5.0, max(0.5, settings.poll_interval_seconds / 2))


def new_entry(kind: str, object_id: str, status: str, partition: int,
              stripe_id: str | None, now: float) -> dict[str, Any]:
    return {
        "id": object_id,
        "kind": kind,
        "status": status,
        "partition": partition,
        "stripe_id": stripe_id,
        "attempts": 0,
        "since": now,
        # First look one interval after the object appeared: the submitter or
        # the webhook normally settles it well before that. A pending one sooner:
        # its Stripe call may have died with a worker (the offset was committed
        # when it was handed to the sequence), and it is free once the lease expires.
        "next_poll_at": now + (min(settings.poll_interval_seconds, lease_seconds() + 20)
                               if status == "pending" else settings.poll_interval_seconds),
        "last_error": None,
    }


def is_terminal(kind: str, status: str | None) -> bool:
    if status is None:
        return True
    if kind == "payment":
        return PaymentStatus(status).is_terminal
    return RefundStatus(status).is_terminal


@app.agent(topics.pending_sources, name=AGENT, concurrency=1)
async def track(stream: StreamT) -> None:
    async for event in stream.events():
        count(AGENT, (event,))
        await isolate(event, AGENT, partial(apply_event, event))


async def apply_event(event: EventT) -> None:
    """Apply one change event or poller command to the pending table."""
    topic = event.message.topic
    if topic == topics.pending_commands.get_topic_name():
        command = PendingCommand.loads(event.value)
        entry = lookup(pending, command.id)
        if entry is not None:
            pending[command.id] = {**entry, "attempts": command.attempts,
                                   "next_poll_at": command.next_poll_at,
                                   "last_error": command.last_error}
        return
    kind = "payment" if topic == settings.payments_topic else "refund"
    if out_of_scope(event.value):
        return
    change = decode_change(event.key, event.value)
    # A tombstone needs nothing: the delete before it already removed the entry.
    if change is None or not in_scope(change):
        return
    metrics.observe_source(AGENT, change.source_ts_ms)
    object_id = change.key_id
    status = None if change.op == "d" else change.new_status
    entry = lookup(pending, object_id)
    if is_terminal(kind, status):
        if entry is not None:
            del pending[object_id]
        return
    row = change.row
    stripe_id = row.get("stripe_payment_intent_id" if kind == "payment" else "stripe_refund_id")
    if entry is None:
        pending[object_id] = new_entry(kind, object_id, str(status), event.message.partition,
                                       stripe_id, time.time())
    elif entry["status"] != status or entry["stripe_id"] != stripe_id:
        pending[object_id] = {**entry, "status": status, "stripe_id": stripe_id}


# --- the poller (timers.py calls poll_due on every worker) ---------------------------


def local_entries() -> list[dict[str, Any]]:
    """Entries of the partitions this worker owns (RocksDB iterates active partitions)."""
    return [entry for entry in pending.values() if entry]


async def poll_due(now: float | None = None) -> int:
    """Poll every due entry once; returns how many were looked at."""
    if app.rebalancing:
        return 0
    now = time.time() if now is None else now
    entries = local_entries()
    metrics.PENDING.set(len(entries))
    metrics.PENDING_OLDEST.set(max((now - e["since"] for e in entries), default=0.0))
    present = {e["id"] for e in entries}
    for gone in [k for k in _snoozed if k not in present]:
        del _snoozed[gone]
    due = sorted((e for e in entries
                  if max(e["next_poll_at"], _snoozed.get(e["id"], (0.0, 0))[0]) <= now),
                 key=lambda e: e["next_poll_at"])[:MAX_DUE_PER_TICK]
    if not due:
        return 0
    payment_ids = [e["id"] for e in due if e["kind"] == "payment"]
    refund_ids = [e["id"] for e in due if e["kind"] == "refund"]

    async def load(conn: Any) -> dict[str, Any]:
        rows = await store.load_payments(conn, payment_ids) if payment_ids else {}
        if refund_ids:
            rows.update(await store.load_refunds(conn, refund_ids))
        return rows

    rows = await with_db(load, what=POLLER)
    commands = await asyncio.gather(*(poll_one(e, rows.get(e["id"])) for e in due))
    for entry, command in zip(due, commands, strict=True):
        if command is None:
            # Snoozes back off too: a payment stuck upstream is looked at less and less.
            times = _snoozed.get(entry["id"], (0.0, 0))[1] + 1
            interval = settings.poll_interval_seconds
            _snoozed[entry["id"]] = (
                now + backoff_delay(times, base=interval, cap=interval * MAX_BACKOFF_INTERVALS),
                times,
            )
            continue
        _snoozed.pop(entry["id"], None)
        await topics.pending_commands.send(key=id_key(entry["id"]), value=command.dumps(),
                                           partition=entry["partition"])
    return len(due)


async def poll_one(entry: dict[str, Any], row: dict[str, Any] | None) -> PendingCommand | None:
    """Resolve one entry if Stripe knows more; when Stripe was asked, when to ask next."""
    attempts = int(entry["attempts"]) + 1
    error: str | None = None
    # The poller spends only the Stripe budget no new payment or refund is waiting for.
    BACKGROUND.set(True)
    try:
        if entry["kind"] == "payment":
            outcome, error = await _poll_payment(row, int(entry["partition"]))
        else:
            outcome, error = await _poll_refund(row)
    except Exception as err:  # noqa: BLE001 - one entry must not stop the others
        log.exception("poller failed on %s %s", entry["kind"], entry["id"])
        metrics.ERRORS.labels(POLLER).inc()
        outcome, error = "error", f"{type(err).__name__}: {err}"
    metrics.POLLS.labels(outcome).inc()
    if outcome in _QUIET:
        return None
    interval = settings.poll_interval_seconds
    if outcome == "stripe_unavailable":
        # Try again soon after the breaker's next trial call, and at least every
        # interval: an outage's backlog is resolved minutes after it ends.
        delay = backoff_delay(attempts, base=settings.circuit_reset_seconds, cap=interval)
    else:
        delay = backoff_delay(attempts, base=interval, cap=interval * MAX_BACKOFF_INTERVALS)
    return PendingCommand(id=entry["id"], attempts=attempts, next_poll_at=time.time() + delay,
                          last_error=error[:300] if error else None)


async def _poll_payment(row: dict[str, Any] | None, partition: int) -> tuple[str, str | None]:
    if row is None:
        return "missing", None
    status = PaymentStatus(row["status"])
    if status.is_terminal:
        return "already_terminal", None  # e.g. the webhook won; its change event drops the entry
    if status is PaymentStatus.PENDING and not row["stripe_payment_intent_id"]:
        if row["approved"] is None:
            # Still in the fraud stages (a failure there is dead-lettered and
            # replayed with `paystream dlq replay`), or its check was lost.
            if time.time() - row["created_at"].timestamp() < FRAUD_STALL_SECONDS \
                    or watchdog.waiting_messages() > FRAUD_RESEND_MAX_LAG:
                return "awaiting_fraud", None
            payment = PaymentRow.parse(row)
            await send_check(check_for(payment, partition=partition, source_ts_ms=None))
            log.warning("payment %s still undecided by fraud; check sent again", row["id"])
            return "fraud_restarted", None
        if row["approved"] is False:
            await block(row["id"], row["rules_hit"] or [])
            return "blocked", None
    attempt = await sequence.run(PAYMENT, row, source=POLLER)
    return attempt.outcome, attempt.error


async def _poll_refund(row: dict[str, Any] | None) -> tuple[str, str | None]:
    if row is None:
        return "missing", None
    if RefundStatus(row["status"]).is_terminal:
        return "already_terminal", None
    attempt = await sequence.run(REFUND, row, source=POLLER)
    return attempt.outcome, attempt.error

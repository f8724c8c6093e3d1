"""The pending table: every non-terminal payment and refund, on the worker that owns it.

The ``pending`` agent is the table's only writer: change events add, update and
remove entries, and the poller's commands (a timer cannot write tables) reschedule
them.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from faust.types import EventT, StreamT

from paystream.domain import PaymentStatus, RefundStatus
from streams import metrics
from streams.adapters import topics
from streams.adapters.tables import lookup, pending
from streams.app import app, settings
from streams.handling import change_in_scope, count, isolate
from streams.messages import PendingCommand
from streams.stripe_sequence import lease_seconds

AGENT = "pending"


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
async def track(stream: StreamT[Any]) -> None:
    async for event in stream.events():
        count(AGENT, (event,))
        await isolate(event, AGENT, partial(apply_event, event))


async def apply_event(event: EventT[Any]) -> None:
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
    change = change_in_scope(event)
    if change is None:
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

"""The pending table: every non-terminal payment and refund, on the worker that owns it.

The ``pending`` agent is the table's only writer: change events add, update and
remove entries, and the poller's commands (a timer cannot write tables) reschedule
them.
"""

from __future__ import annotations

import time
from typing import Any

from faust.types import EventT

from paystream.domain import PaymentStatus, RefundStatus
from streams import metrics
from streams.adapters.tables import lookup
from streams.handling import change_of, install_event_agent
from streams.messages import PendingCommand
from streams.stripe_sequence import lease_seconds
from streams.worker import Worker

AGENT = "pending"


def new_entry(kind: str, object_id: str, status: str, partition: int,
              stripe_id: str | None, now: float, *, poll_interval: float,
              lease: float) -> dict[str, Any]:
    """A pending table value; poll_interval is POLL_INTERVAL_SECONDS, lease the Stripe
    sequence's lease (stripe_sequence.lease_seconds)."""
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
        "next_poll_at": now + (min(poll_interval, lease + 20)
                               if status == "pending" else poll_interval),
        "last_error": None,
    }


def is_terminal(kind: str, status: str | None) -> bool:
    if status is None:
        return True
    if kind == "payment":
        return PaymentStatus(status).is_terminal
    return RefundStatus(status).is_terminal


class Pending:
    """The pending agent, the pending table's only writer."""

    def __init__(self, w: Worker) -> None:
        self._settings = w.settings
        self._topics = w.topics
        self._pending = w.tables.pending
        self._stage = w.stage(AGENT)
        install_event_agent(w.app, w.topics.pending_sources, self._stage, self.apply_event,
                            doc="Non-terminal payments and refunds into the pending table")

    async def apply_event(self, event: EventT[Any]) -> None:
        """Apply one change event or poller command to the pending table."""
        pending = self._pending
        topic = event.message.topic
        if topic == self._topics.pending_commands.get_topic_name():
            command = PendingCommand.loads(event.value)
            entry = lookup(pending, command.id)
            if entry is not None:
                pending[command.id] = {**entry, "attempts": command.attempts,
                                       "next_poll_at": command.next_poll_at,
                                       "last_error": command.last_error}
            return
        kind = "payment" if topic == self._settings.payments_topic else "refund"
        change = change_of(event)
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
        stripe_id = row.get("stripe_payment_intent_id" if kind == "payment"
                            else "stripe_refund_id")
        if entry is None:
            pending[object_id] = new_entry(
                kind, object_id, str(status), event.message.partition, stripe_id, time.time(),
                poll_interval=self._settings.poll_interval_seconds,
                lease=lease_seconds(self._settings))
        elif entry["status"] != status or entry["stripe_id"] != stripe_id:
            pending[object_id] = {**entry, "status": status, "stripe_id": stripe_id}

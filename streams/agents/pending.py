"""The pending table: every non-terminal payment and refund, on the worker that owns it.

Change events add, update and remove entries (the ``pending`` handler of the
changes agent), and the poller's commands reschedule them (the
``pending-commands`` agent: a timer cannot write tables).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from faust.types import EventT

from paystream.domain import PaymentStatus, RefundStatus
from streams import metrics
from streams.adapters.cdc import Change
from streams.adapters.tables import lookup, writing_for
from streams.handling import install_event_agent
from streams.messages import PendingCommand
from streams.stripe_sequence import lease_seconds
from streams.worker_parts import WorkerParts

AGENT = "pending"
COMMANDS = "pending-commands"


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
    """The pending table's writers: a handler of the changes agent for change events,
    and the pending agent for the poller's commands."""

    def __init__(self, w: WorkerParts) -> None:
        self._settings = w.settings
        self._pending = w.tables.pending
        self._stage = w.stage(AGENT)
        install_event_agent(w.app, w.topics.pending_commands, w.stage(COMMANDS),
                            self.apply_command,
                            doc="The poller's reschedules into the pending table")

    async def track(self, changes: Sequence[tuple[EventT[Any], Change]]) -> None:
        """Add, update and remove the entries of a batch of changes (a handler of
        changes.py: one subscription to the CDC topics instead of two)."""
        for event, change in changes:
            await self._stage.isolate(event, partial(self._apply_change, event, change))

    async def _apply_change(self, event: EventT[Any], change: Change) -> None:
        metrics.observe_source(AGENT, change.source_ts_ms)
        kind = "payment" if event.message.topic == self._settings.payments_topic else "refund"
        pending = self._pending
        object_id = change.key_id
        status = None if change.op == "d" else change.new_status
        with writing_for(event):
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
                    kind, object_id, str(status), event.message.partition, stripe_id,
                    time.time(), poll_interval=self._settings.poll_interval_seconds,
                    lease=lease_seconds(self._settings))
            elif entry["status"] != status or entry["stripe_id"] != stripe_id:
                pending[object_id] = {**entry, "status": status, "stripe_id": stripe_id}

    async def apply_command(self, event: EventT[Any]) -> None:
        """Apply one of the poller's commands (a timer cannot write tables)."""
        command = PendingCommand.loads(event.value)
        entry = lookup(self._pending, command.id)
        if entry is not None:
            self._pending[command.id] = {**entry, "attempts": command.attempts,
                                         "next_poll_at": command.next_poll_at,
                                         "last_error": command.last_error}

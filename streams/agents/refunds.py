"""Refunds: hand each new pending refund to the Stripe sequence, keep ``amount_refunded`` in step.

The Stripe side is the same sequence as a payment's (stripe_sequence.py: lease,
look-up before re-creating, guarded write). ``payments.amount_refunded`` is
recomputed from the succeeded refunds whenever one succeeds, whoever made it
succeed (the sequence, the poller or the webhook), so replaying the change is
harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from faust.types import EventT

from paystream.domain import RefundStatus
from streams import metrics
from streams.adapters import postgres
from streams.adapters.cdc import Change
from streams.handling import change_of, install_batch_agent
from streams.rows import RefundRow
from streams.stripe_sequence import REFUND
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)
AGENT = "refunds"
BATCH = 64


def _refund_change(event: EventT[Any]) -> tuple[Change, RefundRow] | None:
    change = change_of(event)
    if change is None or change.op == "d":
        return None
    metrics.observe_source(AGENT, change.source_ts_ms)
    return change, RefundRow.parse(change.row)


class Refunds:
    """The refunds agent: new pending refunds to the Stripe sequence, succeeded ones
    into their payment's ``amount_refunded``."""

    def __init__(self, w: WorkerParts) -> None:
        self._stage = w.stage(AGENT)
        self._sequence = w.sequence
        install_batch_agent(w.app, w.topics.refunds, self._stage, self._handle, size=BATCH,
                            doc="New refunds to Stripe; amount_refunded kept in step")

    async def _handle(self, events: Sequence[EventT[Any]]) -> None:
        changes = await self._stage.decode_each(events, _refund_change)
        created = [(event, refund.id) for event, (change, refund) in changes
                   if change.op in ("c", "r") and refund.status is RefundStatus.PENDING]
        succeeded = [(event, refund.payment_id) for event, (change, refund) in changes
                     if change.entered(RefundStatus.SUCCEEDED)]
        if created:
            # The rows as they are now (with their payment's PaymentIntent), in one read.
            rows = await self._stage.with_db(
                lambda conn: postgres.load_refunds(conn, [i for _, i in created]))
            for event, refund_id in created:
                row = rows.get(refund_id)
                if row is not None and row["status"] == RefundStatus.PENDING:
                    await self._sequence.start(event, self._stage, REFUND, row)
        for event, payment_id in succeeded:
            await self._stage.isolate(event, partial(self.sync_refunded, payment_id))

    async def sync_refunded(self, payment_id: str) -> None:
        await self._stage.with_db(lambda conn: postgres.sync_amount_refunded(conn, payment_id))

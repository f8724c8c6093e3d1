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

from faust.types import EventT, StreamT

from paystream.domain import RefundStatus
from streams import metrics
from streams.adapters import postgres, topics
from streams.adapters.cdc import Change
from streams.app import app
from streams.handling import batches, change_in_scope, decode_each, guard_batch, isolate, with_db
from streams.rows import RefundRow
from streams.stripe_sequence import REFUND, sequence

log = logging.getLogger(__name__)
AGENT = "refunds"
BATCH = 64


@app.agent(topics.refunds, name=AGENT, concurrency=1)
async def refunds(stream: StreamT[Any]) -> None:
    async for events in batches(stream, BATCH):
        await guard_batch(AGENT, events, _handle)


async def _handle(events: Sequence[EventT[Any]]) -> None:
    changes = await decode_each(events, AGENT, _refund_change)
    created = [(event, refund.id) for event, (change, refund) in changes
               if change.op in ("c", "r") and refund.status is RefundStatus.PENDING]
    succeeded = [(event, refund.payment_id) for event, (change, refund) in changes
                 if change.entered(RefundStatus.SUCCEEDED)]
    if created:
        # The rows as they are now (with their payment's PaymentIntent), in one read.
        rows = await with_db(lambda conn: postgres.load_refunds(conn, [i for _, i in created]),
                             what=AGENT)
        for event, refund_id in created:
            row = rows.get(refund_id)
            if row is not None and row["status"] == RefundStatus.PENDING:
                await sequence.start(event, AGENT, REFUND, row)
    for event, payment_id in succeeded:
        await isolate(event, AGENT, partial(sync_refunded, payment_id))


def _refund_change(event: EventT[Any]) -> tuple[Change, RefundRow] | None:
    change = change_in_scope(event)
    if change is None or change.op == "d":
        return None
    metrics.observe_source(AGENT, change.source_ts_ms)
    return change, RefundRow.parse(change.row)


async def sync_refunded(payment_id: str) -> None:
    await with_db(lambda conn: postgres.sync_amount_refunded(conn, payment_id), what=AGENT)

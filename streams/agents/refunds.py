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

from faust.types import EventT, StreamT

from paystream.domain import RefundStatus
from streams import metrics
from streams.adapters import postgres, topics
from streams.adapters.cdc import decode_change
from streams.app import app
from streams.handling import batches, guard_batch, in_scope, isolate, out_of_scope, with_db
from streams.rows import RefundRow
from streams.stripe_sequence import REFUND, sequence

log = logging.getLogger(__name__)
AGENT = "refunds"
BATCH = 64


@app.agent(topics.refunds, name=AGENT, concurrency=1)
async def refunds(stream: StreamT) -> None:
    async for events in batches(stream, BATCH):
        await guard_batch(AGENT, events, _handle)


async def _handle(events: Sequence[EventT]) -> None:
    created: list[tuple[EventT, str]] = []
    succeeded: list[tuple[EventT, str]] = []
    for event in events:

        async def decode(event: EventT = event) -> None:
            if out_of_scope(event.value):
                return
            change = decode_change(event.key, event.value)
            if change is None or change.op == "d" or not in_scope(change):
                return
            metrics.observe_source(AGENT, change.source_ts_ms)
            refund = RefundRow.parse(change.row)
            if change.op in ("c", "r") and refund.status is RefundStatus.PENDING:
                created.append((event, refund.id))
            elif change.entered(RefundStatus.SUCCEEDED):
                succeeded.append((event, refund.payment_id))

        await isolate(event, AGENT, decode)
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


async def sync_refunded(payment_id: str) -> None:
    await with_db(lambda conn: postgres.sync_amount_refunded(conn, payment_id), what=AGENT)

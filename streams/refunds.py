"""Refunds: send each new pending refund to Stripe, and keep ``amount_refunded`` in step.

Same guards as submit.py (lease, look-up before re-creating, guarded write).
``payments.amount_refunded`` is recomputed from the succeeded refunds whenever
one succeeds, whoever made it succeed (this agent, the poller or the webhook),
so replaying the change is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from faust.types import EventT, StreamT

from paystream.domain import RefundStatus, map_stripe_refund_status

from . import metrics, store, topics
from .app import app, runtime
from .errors import StripeRejected, StripeUnavailable
from .handling import (
    batches,
    each_concurrently,
    guard_batch,
    in_scope,
    isolate,
    out_of_scope,
    with_db,
)
from .records import RefundRow, decode_change
from .stripe_gateway import StripeObject
from .submit import lease_seconds

log = logging.getLogger(__name__)
AGENT = "refunds"
BATCH = 64


@app.agent(topics.refunds, name=AGENT, concurrency=1)
async def refunds(stream: StreamT) -> None:
    async for events in batches(stream, BATCH):
        await guard_batch(AGENT, events, _handle)


async def _handle(events: Sequence[EventT]) -> None:
    work: list[tuple[EventT, Callable[[], Awaitable[Any]]]] = []
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
                work.append((event, partial(submit_refund, refund.id, AGENT)))
            elif change.entered(RefundStatus.SUCCEEDED):
                work.append((event, partial(sync_refunded, refund.payment_id)))

        await isolate(event, AGENT, decode)
    await each_concurrently(work, AGENT)


async def sync_refunded(payment_id: str) -> None:
    await with_db(lambda conn: store.sync_amount_refunded(conn, payment_id), what=AGENT)


async def submit_refund(refund_id: str, source: str) -> None:
    """Create (or find) the Stripe Refund of a pending refund and write it back."""
    async with runtime.object_lock(refund_id):
        rows = await with_db(lambda conn: store.load_refunds(conn, [refund_id]), what=source)
        row = rows.get(refund_id)
        if row is None or row["status"] != RefundStatus.PENDING:
            return
        if row["stripe_refund_id"]:
            async with runtime.stripe_slots:
                refund = await runtime.stripe.retrieve_refund(row["stripe_refund_id"])
            await record_refund(refund_id, refund, source)
            return
        payment_intent = row["payment_intent"]
        if not payment_intent:
            await _fail(refund_id, StripeRejected(
                "The payment has no PaymentIntent to refund.", operation="refund.create",
                code="payment_not_captured"), source)
            return
        async with runtime.stripe_slots:
            claim = await with_db(
                lambda conn: store.claim_submission(conn, "refund", refund_id,
                                                    lease_seconds()),
                what=source,
            )
            if claim is None:
                return
            try:
                created: StripeObject | None = None
                if claim.stripe_id:
                    created = await runtime.stripe.retrieve_refund(claim.stripe_id)
                elif claim.attempts > 1:
                    created = await runtime.stripe.find_refund(refund_id, payment_intent)
                if created is None:
                    created = await runtime.stripe.create_refund(RefundRow.parse(row),
                                                                 payment_intent)
            except StripeRejected as rejected:
                await _fail(refund_id, rejected, source)
                return
            except StripeUnavailable as err:
                log.info("refund %s stays pending: %s", refund_id, err)
                await _release(refund_id, str(err))
                return
            except BaseException as err:
                await _release(refund_id, f"{type(err).__name__}: {err}")
                raise
        await record_refund(refund_id, created, source)


async def _release(refund_id: str, error: str) -> None:
    await with_db(lambda conn: store.release_submission(conn, "refund", refund_id,
                                                        error=error[:500]), what=AGENT)


async def _fail(refund_id: str, rejected: StripeRejected, source: str) -> None:
    async def write(conn: Any) -> Any:
        async with conn.transaction():
            row = await store.transition_refund(
                conn, refund_id, RefundStatus.FAILED, failure_code=rejected.code,
                failure_message=str(rejected)[:500])
            await store.release_submission(conn, "refund", refund_id, error=rejected.code)
            return row

    if await with_db(write, what=source) is not None:
        metrics.TRANSITIONS.labels("refund", "failed", source).inc()


async def record_refund(refund_id: str, refund: StripeObject, source: str) -> bool:
    """Write a Stripe Refund's status back with the guard; True if it changed the refund."""
    target = map_stripe_refund_status(refund.status)

    async def write(conn: Any) -> Any:
        async with conn.transaction():
            row = None
            if target is not RefundStatus.PENDING:
                columns: dict[str, Any] = {"stripe_refund_id": refund.id}
                if target is RefundStatus.FAILED:
                    columns["failure_code"] = refund.failure_code or "refund_failed"
                row = await store.transition_refund(conn, refund_id, target, **columns)
            if row is None:
                await conn.execute(
                    "UPDATE refunds SET stripe_refund_id = %s, updated_at = now() "
                    "WHERE id = %s AND stripe_refund_id IS NULL", (refund.id, refund_id))
            await store.release_submission(conn, "refund", refund_id, stripe_id=refund.id)
            return row

    row = await with_db(write, what=source)
    if row is not None:
        metrics.TRANSITIONS.labels("refund", target.value, source).inc()
    return row is not None

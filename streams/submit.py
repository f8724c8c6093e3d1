"""Submit: store each fraud verdict, block the rejected, create PaymentIntents for the approved.

Double-charge guards, in order: the payment must still be ``pending`` with an
approved decision stored; a lease in ``stripe_submissions`` lets one caller at
a time talk to Stripe about it; a second attempt first looks for the
PaymentIntent an earlier one may have created (by metadata.payment_id), since
localstripe ignores Idempotency-Key; the result is written with the guarded
UPDATE, so a webhook that got there first wins and we only bind the PI id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import psycopg
from faust.types import EventT, StreamT

from paystream.domain import FraudDecision, PaymentStatus, map_stripe_payment_intent_status

from . import metrics, store, topics
from .app import app, runtime, settings
from .errors import StripeRejected, StripeUnavailable
from .handling import batches, each_concurrently, guard_batch, isolate, with_db
from .records import PaymentRow, Verdict
from .stripe_gateway import StripeObject

log = logging.getLogger(__name__)
AGENT = "submit"
# Verdicts handled together; their Stripe calls overlap up to STRIPE_CONCURRENCY.
SUBMIT_BATCH = 64
FRAUD_BLOCKED = "fraud_blocked"
# Our clock against Stripe's when looking up what an earlier attempt created.
CLOCK_SKEW_SECONDS = 5.0


def lease_seconds() -> float:
    # Long enough for one Stripe call to time out, short enough that a crashed
    # holder's payment is picked up by the poller soon after.
    return 2 * settings.stripe_timeout_seconds + 5


@app.agent(topics.verdicts, name=AGENT, concurrency=1)
async def submit(stream: StreamT) -> None:
    async for events in batches(stream, SUBMIT_BATCH):
        await guard_batch(AGENT, events, _apply_verdicts)


async def _apply_verdicts(events: Sequence[EventT]) -> None:
    verdicts: list[tuple[EventT, Verdict]] = []
    for event in events:

        async def decode(event: EventT = event) -> None:
            verdicts.append((event, Verdict.loads(event.value)))

        await isolate(event, AGENT, decode)
    if not verdicts:
        return
    decisions = [
        (FraudDecision(v.payment_id, v.approved, v.score, tuple(v.rules_hit)), v.velocity)
        for _, v in verdicts
    ]
    ids = [v.payment_id for _, v in verdicts]

    async def load(conn: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        stored = await store.store_decisions(conn, decisions)
        return stored, await store.load_payments(conn, ids)

    stored, rows = await with_db(load, what=AGENT)
    work: list[tuple[EventT, Callable[[], Awaitable[Any]]]] = []
    blocked: list[tuple[EventT, str, Sequence[str]]] = []
    for event, verdict in verdicts:
        decision = stored.get(verdict.payment_id)
        row = rows.get(verdict.payment_id)
        if decision is None or row is None or row["status"] != PaymentStatus.PENDING:
            continue  # gone, or moved on (a replay): nothing left to do
        metrics.FRAUD_DECISIONS.labels("approved" if decision["approved"] else "blocked").inc()
        if decision["approved"]:
            work.append((event, partial(submit_payment, verdict.payment_id, AGENT)))
        else:
            blocked.append((event, verdict.payment_id, decision["rules_hit"]))
    if blocked:
        try:
            await block_payments([(pid, rules) for _, pid, rules in blocked])
        except psycopg.Error:
            # One bad row fails the whole pipeline: block one by one, so that only
            # the message that fails is dead-lettered.
            work += [(event, partial(block, pid, rules)) for event, pid, rules in blocked]
    await each_concurrently(work, AGENT)


async def block(payment_id: str, rules_hit: Sequence[str]) -> None:
    """pending -> blocked; the payment never reaches Stripe."""
    await block_payments([(payment_id, rules_hit)])


async def block_payments(blocked: Sequence[tuple[str, Sequence[str]]]) -> None:
    """block() for many payments in one round trip."""
    updates = [{"id": payment_id, "failure_code": FRAUD_BLOCKED,
                "failure_message": "Blocked by fraud rules: " + ", ".join(rules_hit)}
               for payment_id, rules_hit in blocked]
    moved = await with_db(
        lambda conn: store.transition_payments(conn, PaymentStatus.BLOCKED, updates),
        what=AGENT)
    metrics.TRANSITIONS.labels("payment", "blocked", AGENT).inc(len(moved))


async def submit_payment(payment_id: str, source: str) -> None:
    """Create (or find) the PaymentIntent of an approved pending payment and write it back.

    Stripe being unavailable leaves the payment pending for the poller; a
    refusal fails it with Stripe's code.
    """
    async with runtime.object_lock(payment_id):
        rows = await with_db(lambda conn: store.load_payments(conn, [payment_id]), what=source)
        row = rows.get(payment_id)
        # Approved must be stored, not just on its way: this is the fraud gate.
        if row is None or row["status"] != PaymentStatus.PENDING or row["approved"] is not True:
            return
        if row["stripe_payment_intent_id"]:
            async with runtime.stripe_slots:
                pi = await runtime.stripe.retrieve_payment_intent(
                    row["stripe_payment_intent_id"])
            await record_payment_intent(payment_id, pi, source)
            return
        # The lease is taken with a Stripe slot in hand: after a crash at most
        # STRIPE_CONCURRENCY payments are in doubt and need a look-up.
        async with runtime.stripe_slots:
            claim = await with_db(
                lambda conn: store.claim_submission(conn, "payment", payment_id,
                                                    lease_seconds()),
                what=source,
            )
            if claim is None:
                return  # another worker is on it; the poller looks again later
            try:
                intent: StripeObject | None = None
                if claim.stripe_id:
                    intent = await runtime.stripe.retrieve_payment_intent(claim.stripe_id)
                elif claim.attempts > 1:
                    # An earlier attempt may have created one and died before writing back.
                    intent = await runtime.stripe.find_payment_intent(
                        payment_id, since=claim.first_attempt_at - CLOCK_SKEW_SECONDS)
                if intent is None:
                    intent = await runtime.stripe.create_payment_intent(PaymentRow.parse(row))
            except StripeRejected as rejected:
                await _fail(payment_id, rejected, source)
                return
            except StripeUnavailable as err:
                log.info("payment %s stays pending: %s", payment_id, err)
                await _release(payment_id, error=str(err))
                return
            except BaseException as err:
                await _release(payment_id, error=f"{type(err).__name__}: {err}")
                raise
        await record_payment_intent(payment_id, intent, source)


async def _release(payment_id: str, *, error: str) -> None:
    await with_db(lambda conn: store.release_submission(conn, "payment", payment_id,
                                                        error=error[:500]), what=AGENT)


async def _fail(payment_id: str, rejected: StripeRejected, source: str) -> None:
    async def write(conn: Any) -> Any:
        async with conn.transaction():
            columns: dict[str, Any] = {"failure_code": rejected.code,
                                       "failure_message": str(rejected)[:500]}
            if rejected.stripe_id:
                columns["stripe_payment_intent_id"] = rejected.stripe_id
            row = await store.transition_payment(conn, payment_id, PaymentStatus.FAILED,
                                                 **columns)
            await store.release_submission(conn, "payment", payment_id,
                                           stripe_id=rejected.stripe_id, error=rejected.code)
            return row

    if await with_db(write, what=source) is not None:
        metrics.TRANSITIONS.labels("payment", "failed", source).inc()


async def record_payment_intent(payment_id: str, pi: StripeObject, source: str) -> bool:
    """Write the PaymentIntent's status back with the guard; True if it changed the payment."""
    target = map_stripe_payment_intent_status(pi.status)
    columns: dict[str, Any] = {"stripe_payment_intent_id": pi.id}
    if target is PaymentStatus.FAILED:
        columns["failure_code"] = pi.failure_code or "payment_failed"
        columns["failure_message"] = pi.failure_message

    async def write(conn: Any) -> Any:
        async with conn.transaction():
            row = await store.transition_payment(conn, payment_id, target, **columns)
            if row is None:
                # The webhook (or an earlier write) moved it already: keep only the id.
                await store.bind_payment_intent(conn, payment_id, pi.id)
            await store.release_submission(conn, "payment", payment_id, stripe_id=pi.id)
            return row

    row = await with_db(write, what=source)
    if row is not None:
        metrics.TRANSITIONS.labels("payment", target.value, source).inc()
    return row is not None

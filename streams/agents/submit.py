"""Submit: store each fraud verdict, block the rejected, hand the approved to Stripe.

An approved payment goes to the Stripe sequence (stripe_sequence.py) as its
own task: the agent moves on to the next verdicts while Stripe answers, so a
slow PaymentIntent never holds back the payments behind it. The verdict's
offset is committed once the payment is handed over; if the worker dies
before Stripe answers, the payment is still pending with a lease that
expires, and the poller finishes the sequence (looking for the PaymentIntent
the dead attempt may have created before creating one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import psycopg
from faust.types import EventT, StreamT

from paystream.domain import FraudDecision, PaymentStatus
from streams import metrics
from streams.adapters import postgres, topics
from streams.app import app
from streams.handling import batches, decode_each, guard_batch, isolate, with_db
from streams.messages import Verdict
from streams.stripe_sequence import PAYMENT, sequence

log = logging.getLogger(__name__)
AGENT = "submit"
SUBMIT_BATCH = 64
FRAUD_BLOCKED = "fraud_blocked"


@app.agent(topics.verdicts, name=AGENT, concurrency=1)
async def submit(stream: StreamT[Any]) -> None:
    async for events in batches(stream, SUBMIT_BATCH):
        await guard_batch(AGENT, events, _apply_verdicts)


async def _apply_verdicts(events: Sequence[EventT[Any]]) -> None:
    verdicts = await decode_each(events, AGENT, lambda event: Verdict.loads(event.value))
    if not verdicts:
        return
    decisions = [
        (FraudDecision(v.payment_id, v.approved, v.score, tuple(v.rules_hit)), v.velocity)
        for _, v in verdicts
    ]
    ids = [v.payment_id for _, v in verdicts]

    async def load(conn: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        stored = await postgres.store_decisions(conn, decisions)
        return stored, await postgres.load_payments(conn, ids)

    stored, rows = await with_db(load, what=AGENT)
    approved: list[tuple[EventT[Any], dict[str, Any]]] = []
    blocked: list[tuple[EventT[Any], str, Sequence[str]]] = []
    for event, verdict in verdicts:
        decision = stored.get(verdict.payment_id)
        row = rows.get(verdict.payment_id)
        if decision is None or row is None or row["status"] != PaymentStatus.PENDING:
            continue  # gone, or moved on (a replay): nothing left to do
        metrics.FRAUD_DECISIONS.labels("approved" if decision["approved"] else "blocked").inc()
        if decision["approved"]:
            approved.append((event, row))
        else:
            blocked.append((event, verdict.payment_id, decision["rules_hit"]))
    if blocked:
        try:
            await block_payments([(pid, rules) for _, pid, rules in blocked])
        except psycopg.Error:
            # One bad row fails the whole pipeline: block one by one, so that only
            # the message that fails is dead-lettered.
            for event, pid, rules in blocked:
                await isolate(event, AGENT, partial(block, pid, rules))
    for event, row in approved:
        await sequence.start(event, AGENT, PAYMENT, row)


async def block(payment_id: str, rules_hit: Sequence[str]) -> None:
    """pending -> blocked; the payment never reaches Stripe."""
    await block_payments([(payment_id, rules_hit)])


async def block_payments(blocked: Sequence[tuple[str, Sequence[str]]]) -> None:
    """block() for many payments in one round trip."""
    updates = [{"id": payment_id, "failure_code": FRAUD_BLOCKED,
                "failure_message": "Blocked by fraud rules: " + ", ".join(rules_hit)}
               for payment_id, rules_hit in blocked]
    moved = await with_db(
        lambda conn: postgres.transition_rows(conn, "payments", PaymentStatus.BLOCKED, updates),
        what=AGENT)
    metrics.TRANSITIONS.labels("payment", "blocked", AGENT).inc(len(moved))

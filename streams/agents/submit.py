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
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import psycopg
from faust.types import EventT

from paystream.domain import FraudDecision, PaymentStatus
from streams import metrics
from streams.adapters import postgres
from streams.handling import install_batch_agent
from streams.messages import Verdict
from streams.stripe_sequence import PAYMENT
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)
AGENT = "submit"
SUBMIT_BATCH = 64
FRAUD_BLOCKED = "fraud_blocked"


class Submit:
    """The submit agent: each verdict stored, the blocked blocked, the approved handed
    to the Stripe sequence."""

    def __init__(self, w: WorkerParts) -> None:
        self._stage = w.stage(AGENT)
        self._sequence = w.sequence
        install_batch_agent(w.app, w.topics.verdicts, self._stage, self._apply_verdicts,
                            size=SUBMIT_BATCH, doc="Fraud verdicts: block or hand to Stripe")

    async def _apply_verdicts(self, events: Sequence[EventT[Any]]) -> None:
        """Verdicts from the fraud-verdicts topic (workers before the fraud-method stage
        decided in place sent them there; the topic is still read for those)."""
        verdicts = await self._stage.decode_each(events, lambda event: Verdict.loads(event.value))
        await self.act([
            (event, FraudDecision(v.payment_id, v.approved, v.score, tuple(v.rules_hit)),
             v.velocity) for event, v in verdicts])

    async def act(self, decided: Sequence[tuple[EventT[Any], FraudDecision,
                                                 Mapping[str, int]]]) -> None:
        """Store each decision (the first one stored wins), block the rejected and hand
        the approved to the Stripe sequence; each event is the message that carried
        its payment (what a failure dead-letters)."""
        if not decided:
            return
        decisions = [(decision, velocity) for _, decision, velocity in decided]
        # Read after the verdict, not taken from the change event: the guard needs
        # the status now (a webhook or a replay may have moved it on), the stored
        # decision (the first one wins) and the whole row for Stripe.
        rows = await self._stage.with_db(
            lambda conn: postgres.decide_and_load(conn, decisions))
        approved: list[tuple[EventT[Any], dict[str, Any]]] = []
        blocked: list[tuple[EventT[Any], str, Sequence[str]]] = []
        for event, decision, _ in decided:
            row = rows.get(decision.payment_id)
            if row is None or row["approved"] is None or row["status"] != PaymentStatus.PENDING:
                continue  # gone, or moved on (a replay): nothing left to do
            metrics.FRAUD_DECISIONS.labels("approved" if row["approved"] else "blocked").inc()
            if row["approved"]:
                approved.append((event, row))
            else:
                blocked.append((event, decision.payment_id, row["rules_hit"] or []))
        if blocked:
            try:
                await self.block_payments([(pid, rules) for _, pid, rules in blocked])
            except psycopg.Error:
                # One bad row fails the whole pipeline: block one by one, so that only
                # the message that fails is dead-lettered.
                for event, pid, rules in blocked:
                    await self._stage.isolate(event, partial(self.block, pid, rules))
        for event, row in approved:
            await self._sequence.start(event, self._stage, PAYMENT, row)

    async def block(self, payment_id: str, rules_hit: Sequence[str]) -> None:
        """pending -> blocked; the payment never reaches Stripe."""
        await self.block_payments([(payment_id, rules_hit)])

    async def block_payments(self, blocked: Sequence[tuple[str, Sequence[str]]]) -> None:
        """block() for many payments in one round trip."""
        updates = [{"id": payment_id, "failure_code": FRAUD_BLOCKED,
                    "failure_message": "Blocked by fraud rules: " + ", ".join(rules_hit)}
                   for payment_id, rules_hit in blocked]
        moved = await self._stage.with_db(
            lambda conn: postgres.transition_rows(conn, "payments", PaymentStatus.BLOCKED,
                                                  updates))
        metrics.TRANSITIONS.labels("payment", "blocked", AGENT).inc(len(moved))

"""Fraud: route new payments through customer and payment-method velocity, then decide.

    payments CDC --fraud-route (a handler of changes.py)--> fraud-by-customer
        --fraud-customer--> fraud-by-method --fraud-method (decides a batch, and
        submit.py stores and acts on it in place)

Each velocity table is keyed by what its topic is keyed by, so with several
workers every key's window lives on exactly one of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from faust.types import EventT

from paystream.domain import FraudDecision, PaymentFacts, VelocitySnapshot, evaluate
from streams import metrics
from streams.adapters.cdc import Change
from streams.adapters.tables import json_key, writing_for
from streams.agents.submit import Submit
from streams.handling import install_batch_agent, install_event_agent
from streams.messages import FraudCheck
from streams.rows import PaymentRow
from streams.runtime import retry_db
from streams.worker_parts import WorkerParts

ROUTE = "fraud-route"
CUSTOMER = "fraud-customer"
METHOD = "fraud-method"


def check_for(payment: PaymentRow, *, partition: int, source_ts_ms: int | None) -> FraudCheck:
    return FraudCheck(
        payment_id=payment.id,
        merchant_id=payment.merchant_id,
        customer=payment.customer,
        payment_method=payment.payment_method,
        amount=payment.amount,
        currency=payment.currency,
        created_ms=int(payment.created_at.timestamp() * 1000),
        partition=partition,
        source_ts_ms=source_ts_ms,
    )


class Fraud:
    """The fraud route (a handler of the changes agent) and the two velocity stages,
    fraud-customer and fraud-method, on one worker."""

    def __init__(self, w: WorkerParts, submit: Submit) -> None:
        self._settings = w.settings
        self._runtime = w.runtime
        self._topics = w.topics
        self._tables = w.tables
        self._submit = submit
        self._route = w.stage(ROUTE)
        self._method = w.stage(METHOD)
        install_event_agent(
            w.app, w.topics.fraud_by_customer, w.stage(CUSTOMER), self._by_customer,
            doc="Customer velocity: count and amount (same currency) over the sliding window")
        install_batch_agent(
            w.app, w.topics.fraud_by_method, self._method, self._by_method,
            doc="Payment-method velocity, blocklists and amount limits: the decision, "
                "stored and acted on (submit)")

    async def send_check(self, check: FraudCheck) -> None:
        await self._topics.fraud_by_customer.send(key=json_key(check.customer),
                                                  value=check.dumps())

    async def route(self, changes: Sequence[tuple[EventT[Any], Change]]) -> None:
        """New pending payments into the velocity stages (a handler of changes.py).

        The check is made from the change event's row, with no read of the payment:
        a replayed event for a payment decided or settled since goes through the
        stages again harmlessly (its velocity is counted once, the first stored
        decision wins, and submit acts only on a payment still pending).
        """
        for event, change in changes:
            # Only a payment's arrival starts fraud; later updates are its consequences.
            if change.op not in ("c", "r") or change.new_status != "pending":
                continue

            async def send(event: EventT[Any] = event, change: Change = change) -> None:
                metrics.observe_source(ROUTE, change.source_ts_ms)
                await self.send_check(check_for(PaymentRow.parse(change.row),
                                                partition=event.message.partition,
                                                source_ts_ms=change.source_ts_ms))

            await self._route.isolate(event, send)

    def _observe(self, windowed: Any, kind: str, key: str,
                 check: FraudCheck) -> tuple[int, dict[str, int]]:
        return self._tables.observe(windowed, kind, key, check.payment_id, check.created_ms,
                                    check.amount, check.currency)

    async def _by_customer(self, event: EventT[Any]) -> None:
        check = FraudCheck.loads(event.value)
        count_, amounts = self._observe(self._tables.customer_velocity, "customer",
                                        check.customer, check)
        forwarded = dataclasses.replace(check, customer_count=count_,
                                        customer_amount=amounts.get(check.currency, 0))
        await self._topics.fraud_by_method.send(key=json_key(check.payment_method),
                                                value=forwarded.dumps())

    async def _by_method(self, events: Sequence[EventT[Any]]) -> None:
        """Decide a batch and hand it to submit in place: the decision does not travel
        back to the payment's partition first (no verdict message, no second delivery);
        the Stripe sequence's lease in Postgres, not partition ownership, is what
        keeps a payment to one caller."""
        checks = await self._method.decode_each(events, lambda e: FraudCheck.loads(e.value))
        if not checks:
            return
        customers, methods = await retry_db(self._runtime.blocklist, what=METHOD)
        decided: list[tuple[EventT[Any], FraudDecision, dict[str, int]]] = []
        for event, check in checks:

            async def decide(event: EventT[Any] = event, check: FraudCheck = check) -> None:
                # A batch's table writes belong to each event's own partition.
                with writing_for(event):
                    count_, _ = self._observe(self._tables.method_velocity, "method",
                                              check.payment_method, check)
                snapshot = VelocitySnapshot(customer_count=check.customer_count,
                                            customer_amount=check.customer_amount,
                                            payment_method_count=count_)
                decision = evaluate(
                    PaymentFacts(payment_id=check.payment_id, customer=check.customer,
                                 payment_method=check.payment_method, amount=check.amount,
                                 currency=check.currency),
                    snapshot,
                    self._settings.fraud,
                    blocked_customers=customers,
                    blocked_payment_methods=methods,
                )
                decided.append((event, decision, dataclasses.asdict(snapshot)))

            await self._method.isolate(event, decide)
        await self._submit.act(decided)

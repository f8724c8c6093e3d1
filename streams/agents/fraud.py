"""Fraud: route new payments through customer and payment-method velocity, then decide.

    payments CDC --fraud-route (a handler of changes.py)--> fraud-by-customer
        --fraud-customer--> fraud-by-method --fraud-method--> fraud-verdicts
        (keyed like the payment; submit.py stores and acts)

Each velocity table is keyed by what its topic is keyed by, so with several
workers every key's window lives on exactly one of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import EventT, StreamT

from paystream.domain import PaymentFacts, VelocitySnapshot, evaluate
from streams import metrics
from streams.adapters import postgres, topics
from streams.adapters.cdc import Change, id_key
from streams.adapters.tables import customer_velocity, json_key, method_velocity, observe
from streams.app import app, settings
from streams.handling import count, isolate, retry_db, with_db
from streams.messages import FraudCheck, Verdict
from streams.rows import PaymentRow
from streams.runtime import runtime

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


async def send_check(check: FraudCheck) -> None:
    await topics.fraud_by_customer.send(key=json_key(check.customer), value=check.dumps())


async def send_verdict(verdict: Verdict) -> None:
    # Back on the payment's own CDC partition: the submitter there owns the payment.
    await topics.verdicts.send(key=id_key(verdict.payment_id), value=verdict.dumps(),
                               partition=verdict.partition)


def stored_verdict(row: dict[str, Any], *, partition: int,
                   source_ts_ms: int | None) -> Verdict:
    return Verdict(payment_id=row["id"], partition=partition, approved=bool(row["approved"]),
                   score=int(row["score"] or 0), rules_hit=list(row["rules_hit"] or []),
                   source_ts_ms=source_ts_ms)


async def route(changes: Sequence[tuple[EventT[Any], Change]]) -> None:
    """New pending payments into the velocity stages, unless already decided (changes.py)."""
    found: list[tuple[EventT[Any], PaymentRow, int | None]] = []
    for event, change in changes:
        # Only a payment's arrival starts fraud; later updates are its consequences.
        if change.op not in ("c", "r") or change.new_status != "pending":
            continue

        async def parse(event: EventT[Any] = event, change: Change = change) -> None:
            metrics.observe_source(ROUTE, change.source_ts_ms)
            found.append((event, PaymentRow.parse(change.row), change.source_ts_ms))

        await isolate(event, ROUTE, parse)
    if not found:
        return
    ids = [p.id for _, p, _ in found]
    rows = await with_db(lambda conn: postgres.load_payments(conn, ids), what=ROUTE)
    for event, payment, source_ts in found:

        async def route_one(event: EventT[Any] = event, payment: PaymentRow = payment,
                            source_ts: int | None = source_ts) -> None:
            row = rows.get(payment.id)
            # A replayed or late event for a payment that has moved on: nothing to decide.
            if row is None or row["status"] != "pending":
                return
            partition = event.message.partition
            if row["approved"] is not None:
                # Decided before a crash or a replay: resume with the stored decision.
                await send_verdict(stored_verdict(row, partition=partition,
                                                  source_ts_ms=source_ts))
                return
            await send_check(check_for(payment, partition=partition, source_ts_ms=source_ts))

        await isolate(event, ROUTE, route_one)


async def _each_check(stream: StreamT[Any], stage: str,
                      handle: Callable[[FraudCheck], Awaitable[None]]) -> None:
    async for event in stream.events():
        count(stage, (event,))

        async def one(event: EventT[Any] = event) -> None:
            await handle(FraudCheck.loads(event.value))

        await isolate(event, stage, one)


def _observe(windowed: Any, kind: str, key: str, check: FraudCheck) -> tuple[int, dict[str, int]]:
    return observe(windowed, kind, key, check.payment_id, check.created_ms, check.amount,
                   check.currency)


@app.agent(topics.fraud_by_customer, name=CUSTOMER, concurrency=1)
async def fraud_customer(stream: StreamT[Any]) -> None:
    """Customer velocity: count and amount (same currency) over the sliding window."""
    await _each_check(stream, CUSTOMER, by_customer)


async def by_customer(check: FraudCheck) -> None:
    count_, amounts = _observe(customer_velocity, "customer", check.customer, check)
    forwarded = dataclasses.replace(check, customer_count=count_,
                                    customer_amount=amounts.get(check.currency, 0))
    await topics.fraud_by_method.send(key=json_key(check.payment_method),
                                      value=forwarded.dumps())


@app.agent(topics.fraud_by_method, name=METHOD, concurrency=1)
async def fraud_method(stream: StreamT[Any]) -> None:
    """Payment-method velocity, blocklists and amount limits: the decision."""
    await _each_check(stream, METHOD, by_method)


async def by_method(check: FraudCheck) -> None:
    count_, _ = _observe(method_velocity, "method", check.payment_method, check)
    customers, methods = await retry_db(runtime.blocklist, what=METHOD)
    snapshot = VelocitySnapshot(customer_count=check.customer_count,
                                customer_amount=check.customer_amount,
                                payment_method_count=count_)
    decision = evaluate(
        PaymentFacts(payment_id=check.payment_id, customer=check.customer,
                     payment_method=check.payment_method, amount=check.amount,
                     currency=check.currency),
        snapshot,
        settings.fraud,
        blocked_customers=customers,
        blocked_payment_methods=methods,
    )
    await send_verdict(Verdict(
        payment_id=check.payment_id, partition=check.partition,
        approved=decision.approved, score=decision.score,
        rules_hit=list(decision.rules_hit), velocity=dataclasses.asdict(snapshot),
        source_ts_ms=check.source_ts_ms,
    ))

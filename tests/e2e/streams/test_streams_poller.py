"""The pending table and its poller: resolving without webhooks, outages, racing the webhook."""

from __future__ import annotations

import asyncio
import json
import random
import time

from paystream.domain import PaymentStatus, guard_params, guarded_update_sql
from paystream.settings import Settings
from streams.adapters.cdc import decode_change
from testkit.waiting import eventually
from tests.e2e.streams.streams_harness import (
    Db,
    Pipeline,
    WebhookReceiver,
    authenticate,
    awaiting_action,
    read_topic,
    stripe_webhooks_off,
    three_d_secure_method,
)


async def test_poller_alone_resolves_a_payment_stripe_never_told_us_about(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver, settings: Settings
) -> None:
    merchant = await db.merchant(receiver)
    method = await three_d_secure_method(settings)
    payment_id = await db.payment(merchant, payment_method=method, amount=4200)
    pi_id = await awaiting_action(db, settings, payment_id)

    async def tracked() -> dict | None:
        status, entry = await pipeline.main.get(f"/pending/{payment_id}/")
        return entry if status == 200 and entry["status"] == "requires_action" else None

    entry = await eventually(tracked, timeout=30, what="pending entry")
    assert entry["kind"] == "payment" and entry["stripe_id"] == pi_id
    async with stripe_webhooks_off(settings):
        await authenticate(settings, pi_id)
        row = await eventually(lambda: db.terminal(payment_id), timeout=60, what="terminal")
    assert row["status"] == "succeeded"
    # The worker asked Stripe about it (through the proxy): that is the poller.
    assert ("GET", f"/v1/payment_intents/{pi_id}") in {c[:2] for c in pipeline.stripe.calls}
    await eventually(lambda: db.all("SELECT 1 FROM ledger_journals WHERE source_id = %s",
                                    payment_id), timeout=30, what="journal")

    async def gone() -> bool:
        status, _ = await pipeline.main.get(f"/pending/{payment_id}/")
        return status == 404

    assert await eventually(gone, timeout=30, what="entry removed from the pending table")


async def test_payments_stay_pending_while_stripe_is_down_and_resolve_when_it_returns(
    pipeline: Pipeline, db: Db
) -> None:
    merchant = await db.merchant(None)
    pipeline.stripe.down()
    try:
        payments = [await db.payment(merchant) for _ in range(3)]

        async def attempted() -> list | None:
            rows = await db.all(
                "SELECT object_id, last_error FROM stripe_submissions "
                "WHERE object_id = ANY(%s) AND last_error IS NOT NULL", payments)
            return rows if len(rows) == len(payments) else None

        failures = await eventually(attempted, timeout=60, what="failed Stripe attempts")
        assert all("503" in f["last_error"] or "APIError" in f["last_error"]
                   or "circuit" in f["last_error"] for f in failures), failures
        assert {await db.status(p) for p in payments} == {"pending"}

        async def circuit_opened() -> bool:
            _, stats = await pipeline.main.get("/stats/")
            return stats["circuit"]["times_opened"] >= 1

        assert await eventually(circuit_opened, timeout=30, what="circuit breaker opened")
        assert {await db.status(p) for p in payments} == {"pending"}
    finally:
        pipeline.stripe.up()

    rows = [await eventually(lambda p=p: db.terminal(p), timeout=90, what=f"terminal {p}")
            for p in payments]
    assert {r["status"] for r in rows} == {"succeeded"}
    journals = await eventually(
        lambda: _all_or_none(db, "SELECT source_id FROM ledger_journals WHERE source_id = ANY(%s)",
                             payments, len(payments)), timeout=30, what="journals")
    assert sorted(j["source_id"] for j in journals) == sorted(payments)
    # One PaymentIntent each: the retries after the outage created no second one.
    intents = await db.all("SELECT stripe_payment_intent_id FROM payments WHERE id = ANY(%s)",
                           payments)
    assert len({i["stripe_payment_intent_id"] for i in intents}) == len(payments)


async def _all_or_none(db: Db, sql: str, ids: list[str], expected: int) -> list | None:
    rows = await db.all(sql, ids)
    return rows if len(rows) >= expected else None


async def test_webhook_and_poller_racing_make_one_transition_and_one_journal(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver, settings: Settings
) -> None:
    started = time.time()
    merchant = await db.merchant(receiver)
    method = await three_d_secure_method(settings)
    payments = [await db.payment(merchant, payment_method=method) for _ in range(3)]
    intents = {p: await awaiting_action(db, settings, p) for p in payments}

    async def webhook(payment_id: str) -> None:
        # What POST /v1/webhooks/stripe does for payment_intent.succeeded: the same
        # guarded transition, at a random moment of the poller's 1 s cycle.
        await asyncio.sleep(random.uniform(0.0, 1.5))
        await db.conn.execute(
            guarded_update_sql("payments", PaymentStatus.SUCCEEDED,
                               ["stripe_payment_intent_id"]),
            {"id": payment_id, **guard_params(PaymentStatus.SUCCEEDED),
             "stripe_payment_intent_id": intents[payment_id]})

    for p in payments:
        await authenticate(settings, intents[p])
    await asyncio.gather(*(webhook(p) for p in payments))

    rows = [await eventually(lambda p=p: db.terminal(p), timeout=60, what="terminal")
            for p in payments]
    assert {r["status"] for r in rows} == {"succeeded"}

    async def delivered() -> list | None:
        got = [r for r in receiver.events(merchant.id) if r.event["type"] == "payment.succeeded"]
        return got if len(got) >= len(payments) else None

    await eventually(delivered, timeout=30, what="webhooks")
    journals = await db.all("SELECT source_id FROM ledger_journals WHERE source_id = ANY(%s)",
                            payments)
    assert sorted(j["source_id"] for j in journals) == sorted(payments)
    notes = await db.all("SELECT object_id FROM merchant_notifications WHERE object_id = ANY(%s)"
                         " AND event_type = 'payment.succeeded'", payments)
    assert sorted(n["object_id"] for n in notes) == sorted(payments)
    sent = [json.loads(r.body)["data"]["object"]["id"] for r in receiver.events(merchant.id)
            if r.event["type"] == "payment.succeeded"]
    assert sorted(sent) == sorted(payments)

    # The change stream saw exactly one move into succeeded per payment.
    entered: dict[str, int] = {}
    for record in await read_topic(settings, pipeline.settings.payments_topic, since=started - 5):
        if record.key is None or not any(p.encode() in record.key for p in payments):
            continue
        change = decode_change(record.key, record.value)
        if change is not None and change.entered("succeeded"):
            entered[change.key_id] = entered.get(change.key_id, 0) + 1
    assert entered == {p: 1 for p in payments}

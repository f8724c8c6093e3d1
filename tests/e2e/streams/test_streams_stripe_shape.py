"""Stripe at its production shape: 429s are backpressure, a late answer never charges twice."""

from __future__ import annotations

from paystream.settings import Settings
from testkit.waiting import eventually
from tests.e2e.streams.streams_harness import (
    STRIPE_TIMEOUT_SECONDS,
    Db,
    Pipeline,
    stripe_webhooks_off,
)


def _creates_for(pipeline: Pipeline, payment_id: str) -> int:
    return sum(1 for method, path, body in pipeline.stripe.calls
               if (method, path) == ("POST", "/v1/payment_intents") and payment_id in body)


async def _stats(pipeline: Pipeline) -> dict:
    status, stats = await pipeline.main.get("/stats/")
    assert status == 200
    return stats


async def test_429s_never_fail_a_payment_nor_open_the_breaker(pipeline: Pipeline,
                                                               db: Db) -> None:
    before = await _stats(pipeline)
    merchant = await db.merchant(None)
    pipeline.stripe.rate_limit(8)
    payments = [await db.payment(merchant, amount=1200 + i) for i in range(3)]
    rows = [await eventually(lambda p=p: db.terminal(p), timeout=90, what=f"terminal {p}")
            for p in payments]
    assert {r["status"] for r in rows} == {"succeeded"}, rows
    after = await _stats(pipeline)
    assert after["circuit"]["times_opened"] == before["circuit"]["times_opened"]
    limited = sum(v for k, v in after["stripe_calls"].items() if "rate_limited" in k)
    assert limited >= 8  # every refusal was seen, and waited out
    assert after["stripe_budget"]["rate_limit_pauses"] > before["stripe_budget"][
        "rate_limit_pauses"]
    # One PaymentIntent each: a 429'd create never reached Stripe, and its retry is
    # the only one that did.
    intents = await db.all("SELECT stripe_payment_intent_id FROM payments WHERE id = ANY(%s)",
                           payments)
    assert len({i["stripe_payment_intent_id"] for i in intents}) == len(payments)


async def test_a_create_answered_after_the_timeout_leaves_exactly_one_payment_intent(
    pipeline: Pipeline, db: Db, settings: Settings
) -> None:
    merchant = await db.merchant(None)
    # localstripe makes the PaymentIntent at once; the worker hears of it too late,
    # and no webhook tells the API either: only the worker's retry can settle it.
    pipeline.stripe.slow_creates(STRIPE_TIMEOUT_SECONDS + 2)
    async with stripe_webhooks_off(settings):
        payment_id = await db.payment(merchant, amount=3300)
        row = await eventually(lambda: db.terminal(payment_id), timeout=120, what="terminal")
    assert row["status"] == "succeeded"
    # One create only: the retry found what the first attempt made.
    assert _creates_for(pipeline, payment_id) == 1
    found = await db.all("SELECT attempts, stripe_id FROM stripe_submissions "
                         "WHERE object_type = 'payment' AND object_id = %s", payment_id)
    assert found[0]["attempts"] >= 2 and found[0]["stripe_id"] == row[
        "stripe_payment_intent_id"]

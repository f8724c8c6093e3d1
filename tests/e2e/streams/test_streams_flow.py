"""A payment's whole life through the real stack: CDC, fraud, Stripe, ledger, webhook, DLQ."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import stripe

from paystream.domain import new_id
from paystream.domain.ids import notification_event_id
from paystream.domain.signing import SIGNATURE_HEADER
from paystream.settings import Settings
from streams.adapters.cdc import id_key
from streams.dead_letters.replay import read_all
from testkit.waiting import eventually
from testkit.webhooks import WebhookReceiver
from testkit.workers import PAYSTREAM, ROOT
from tests.e2e.streams.streams_harness import Db, Pipeline, intents_since, new_customer, produce


async def test_succeeded_payment_posts_one_balanced_journal_and_a_signed_webhook(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver
) -> None:
    merchant = await db.merchant(receiver)
    payment_id = await db.payment(merchant, amount=1050, currency="usd")

    row = await eventually(lambda: db.terminal(payment_id), timeout=60, what="terminal")
    assert row["status"] == "succeeded"
    assert row["stripe_payment_intent_id"].startswith("pi_")
    decision = await db.one("SELECT * FROM fraud_decisions WHERE payment_id = %s", payment_id)
    assert decision["approved"] is True and decision["rules_hit"] == []

    journals = await eventually(
        lambda: db.all("SELECT * FROM ledger_journals WHERE source_id = %s", payment_id),
        timeout=30, what="journal")
    assert [j["id"] for j in journals] == [f"jrn_payment_{payment_id}"]
    entries = await db.all("SELECT account, direction, amount, currency FROM ledger_entries "
                           "WHERE journal_id = %s ORDER BY direction", journals[0]["id"])
    assert entries == [
        {"account": f"merchant_available:{merchant.id}:usd", "direction": "credit",
         "amount": 1050, "currency": "usd"},
        {"account": "stripe_clearing:usd", "direction": "debit", "amount": 1050,
         "currency": "usd"},
    ]

    # The Faust balances table follows the same journals (served by the key's owner).
    account = f"merchant_available:{merchant.id}:usd"

    async def balance() -> int | None:
        status, body = await pipeline.main.get(f"/balances/{account}/")
        return body["balance"] if status == 200 and body["balance"] != 0 else None

    assert await eventually(balance, timeout=30, what="faust balance") == -1050
    sql = await db.one("SELECT sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) "
                       "AS net FROM ledger_entries WHERE account = %s", account)
    assert sql["net"] == -1050

    async def webhook() -> list:
        return [r for r in receiver.events(merchant.id)
                if r.event["type"] == "payment.succeeded"]

    [delivery] = await eventually(webhook, timeout=30, what="merchant webhook")
    # As a merchant checks it: our scheme is Stripe's, so Stripe's library verifies it.
    header = delivery.headers[SIGNATURE_HEADER]
    assert stripe.WebhookSignature.verify_header(delivery.body.decode(), header,
                                                 merchant.webhook_secret, 300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(delivery.body.decode(), header, "whsec_other", 300)
    event = delivery.event
    assert event["id"] == notification_event_id(payment_id, "succeeded")
    assert event["data"]["object"]["id"] == payment_id
    assert event["data"]["object"]["amount"] == 1050
    # The same object GET /v1/payments/{id} answers, description included.
    assert event["data"]["object"]["description"] == "e2e"
    outbox = await db.one("SELECT * FROM merchant_notifications WHERE event_id = %s",
                          event["id"])
    assert outbox["status"] == "delivered" and outbox["attempts"] == 1

    # The worker's own probes and metrics.
    for path in ("/health/", "/live/", "/ready/"):
        assert (await pipeline.main.get(path))[0] == 200, path
    status, exposition = await pipeline.main.get("/metrics")
    assert status == 200
    assert 'paystream_transitions_total{entity="payment",source="submit",status="succeeded"}' \
        in exposition
    status, stats = await pipeline.main.get("/stats/")
    assert status == 200 and stats["events_processed"]["agent=ledger_total"] >= 1


async def test_declined_card_fails_with_its_code_and_posts_no_journal(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver
) -> None:
    merchant = await db.merchant(receiver)
    payment_id = await db.payment(merchant, payment_method="pm_card_chargeCustomerFail")

    row = await eventually(lambda: db.terminal(payment_id), timeout=60, what="terminal")
    assert row["status"] == "failed"
    assert row["failure_code"] == "card_declined"
    assert row["failure_message"]

    async def failed_webhook() -> list:
        return [r for r in receiver.events(merchant.id) if r.event["type"] == "payment.failed"]

    [delivery] = await eventually(failed_webhook, timeout=30, what="payment.failed webhook")
    assert delivery.event["data"]["object"]["failure_code"] == "card_declined"
    assert await db.all("SELECT id FROM ledger_journals WHERE payment_id = %s",
                        payment_id) == []


async def test_sixth_quick_payment_of_a_customer_is_blocked_and_never_reaches_stripe(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver
) -> None:
    started = time.time()
    merchant = await db.merchant(receiver)
    customer = new_customer()
    payments = []
    for i in range(6):
        # One after the other (each decided before the next, all within seconds),
        # so "the sixth" is well defined: payments of one customer that arrive
        # together are judged in the order they reach the customer's partition.
        payments.append(await db.payment(merchant, customer=customer, amount=100 + i))
        await eventually(lambda p=payments[-1]: db.all(
            "SELECT 1 FROM fraud_decisions WHERE payment_id = %s", p), timeout=60,
            what="fraud decision")

    status, body = await pipeline.main.get(f"/fraud/velocity/{customer}/")
    assert status == 200 and body["count"] == 6

    rows = [await eventually(lambda p=p: db.terminal(p), timeout=90, what=f"terminal {p}")
            for p in payments]
    assert [r["status"] for r in rows] == ["succeeded"] * 5 + ["blocked"]
    sixth = payments[-1]
    assert rows[-1]["failure_code"] == "fraud_blocked"
    assert rows[-1]["stripe_payment_intent_id"] is None
    decision = await db.one("SELECT * FROM fraud_decisions WHERE payment_id = %s", sixth)
    assert decision["approved"] is False
    assert "customer_velocity_count" in decision["rules_hit"]
    assert decision["velocity"]["customer_count"] == 5

    # Never reached Stripe: the worker sent nothing about it, localstripe charged nothing.
    assert not [c for c in pipeline.stripe.calls if sixth in c[2]]
    assert await db.all("SELECT 1 FROM stripe_submissions WHERE object_id = %s", sixth) == []
    charged = await intents_since(pipeline.settings, started)
    assert set(payments[:5]) <= set(charged)
    assert sixth not in charged

    async def blocked_webhook() -> list:
        return [r for r in receiver.events(merchant.id) if r.event["type"] == "payment.blocked"]

    await eventually(blocked_webhook, timeout=30, what="payment.blocked webhook")


async def test_six_concurrent_payments_of_a_customer_block_exactly_one(
    pipeline: Pipeline, db: Db
) -> None:
    started = time.time()
    merchant = await db.merchant(None)
    customer = new_customer()
    payments = [await db.payment(merchant, customer=customer) for _ in range(6)]
    rows = [await eventually(lambda p=p: db.terminal(p), timeout=90, what=f"terminal {p}")
            for p in payments]
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["blocked"] + ["succeeded"] * 5
    [blocked] = [r["id"] for r in rows if r["status"] == "blocked"]
    assert not [c for c in pipeline.stripe.calls if blocked in c[2]]
    assert blocked not in await intents_since(pipeline.settings, started)


async def test_poison_message_is_dead_lettered_and_the_next_payment_still_succeeds(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver, settings: Settings
) -> None:
    merchant = await db.merchant(receiver)
    # The session's own change feed, which the worker reads.
    topic = pipeline.settings.payments_topic
    # Garbage where the envelope goes.
    poison_id = new_id("pay")
    garbage = b'{"op": "c", "after": not json, "merchant_id": "' + merchant.id.encode() + b'"'
    partition, offset = await produce(settings, topic, id_key(poison_id), garbage)
    bad_currency = {
        "before": None, "op": "c", "source": {"ts_ms": int(time.time() * 1000)},
        "after": {"id": new_id("pay"), "merchant_id": merchant.id, "amount": 100,
                  "currency": "xxx", "status": "pending", "customer": "c", "payment_method":
                  "pm_card_visa", "metadata": "{}", "created_at": "2026-01-01T00:00:00Z"},
    }
    await produce(settings, topic, id_key(bad_currency["after"]["id"]),
                  json.dumps(bad_currency).encode())
    payment_id = await db.payment(merchant)

    row = await eventually(lambda: db.terminal(payment_id), timeout=60, what="terminal")
    assert row["status"] == "succeeded"

    async def dead_letters() -> list:
        return [e for e in await read_all(settings.kafka_bootstrap, settings.dlq_topic)
                if e.body.get("topic") == topic
                and e.body.get("partition") == partition and e.body.get("offset") == offset]

    letters = await eventually(dead_letters, timeout=30, what="dead letter")
    agents = {e.body["agent"] for e in letters}
    # The one agent that reads the payments topic refuses it, once: it decodes each
    # change for all its handlers (fraud, ledger, notify, the pending table).
    assert agents == {"changes"}
    letter = letters[0].body
    assert letter["error_type"] == "DecodeError"
    assert letter["value"] == garbage.decode()
    assert letter["key"] == id_key(poison_id).decode()

    async def currency_letter() -> list:
        return [e for e in await read_all(settings.kafka_bootstrap, settings.dlq_topic)
                if "xxx" in e.body.get("error", "") and e.body.get("agent") == "fraud-route"
                and bad_currency["after"]["id"] in (e.body.get("key") or "")]

    await eventually(currency_letter, timeout=30, what="unknown currency dead letter")

    listing = subprocess.run([str(PAYSTREAM), "dlq", "list", "--agent", "changes"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert f"{topic}[{partition}]@{offset}" in listing.stdout


async def test_refund_posts_the_reversing_journal_and_updates_amount_refunded(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver
) -> None:
    merchant = await db.merchant(receiver)
    payment_id = await db.payment(merchant, amount=2000)
    row = await eventually(lambda: db.terminal(payment_id), timeout=60, what="terminal")
    assert row["status"] == "succeeded"
    refund_id = await db.refund(payment_id, amount=500)

    async def refunded() -> dict | None:
        r = await db.one("SELECT * FROM refunds WHERE id = %s", refund_id)
        return r if r["status"] != "pending" else None

    refund = await eventually(refunded, timeout=60, what="refund resolved")
    assert refund["status"] == "succeeded" and refund["stripe_refund_id"].startswith("re_")

    async def amount_refunded() -> int | None:
        r = await db.one("SELECT amount_refunded FROM payments WHERE id = %s", payment_id)
        return r["amount_refunded"] or None

    assert await eventually(amount_refunded, timeout=30, what="amount_refunded") == 500
    await eventually(lambda: db.all("SELECT 1 FROM ledger_journals WHERE id = %s",
                                    f"jrn_refund_{refund_id}"), timeout=30, what="journal")
    net = await db.one(
        "SELECT sum(CASE direction WHEN 'debit' THEN -amount ELSE amount END) AS owed "
        "FROM ledger_entries WHERE account = %s", f"merchant_available:{merchant.id}:usd")
    assert net["owed"] == 1500

    async def refund_webhook() -> list:
        return [r for r in receiver.events(merchant.id) if r.event["type"] == "refund.succeeded"]

    [delivery] = await eventually(refund_webhook, timeout=30, what="refund webhook")
    assert delivery.event["id"] == notification_event_id(refund_id, "succeeded")


async def test_merchant_webhooks_are_retried_then_dead_lettered_and_replayable(
    pipeline: Pipeline, db: Db, receiver: WebhookReceiver, settings: Settings
) -> None:
    flaky = await db.merchant(receiver)
    receiver.fail_first[flaky.id] = 2  # two 500s, then 200
    down = await db.merchant(receiver)
    receiver.fail_first[down.id] = 1_000  # never answers 2xx
    flaky_payment = await db.payment(flaky)
    down_payment = await db.payment(down)

    async def outbox(payment_id: str, status: str) -> dict | None:
        rows = await db.all("SELECT * FROM merchant_notifications WHERE object_id = %s",
                            payment_id)
        return rows[0] if rows and rows[0]["status"] == status else None

    delivered = await eventually(lambda: outbox(flaky_payment, "delivered"), timeout=90,
                                 what="delivered after retries")
    assert delivered["attempts"] == 3
    attempts = receiver.events(flaky.id)
    assert [r.event["id"] for r in attempts] == [delivered["event_id"]] * 3
    # Each attempt is signed afresh, over the same body.
    assert len({r.body for r in attempts}) == 1

    failed = await eventually(lambda: outbox(down_payment, "failed"), timeout=90,
                              what="failed after the last attempt")
    assert failed["attempts"] == 3 and failed["last_status_code"] == 500

    async def letter() -> list:
        return [e for e in await read_all(settings.kafka_bootstrap, settings.dlq_topic)
                if e.body.get("event_id") == failed["event_id"]]

    [entry] = await eventually(letter, timeout=30, what="dead-lettered webhook")
    assert entry.body["agent"] == "notify" and entry.body["topic"] is None

    # Fixed on the merchant's side, the dead letter goes back to the outbox.
    receiver.fail_first[down.id] = 0
    replay = subprocess.run([str(PAYSTREAM), "dlq", "replay", entry.ref], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert replay.returncode == 0, replay.stderr
    assert "re-queued 1 webhook" in replay.stdout
    again = await eventually(lambda: outbox(down_payment, "delivered"), timeout=60,
                             what="delivered after replay")
    assert again["event_id"] == failed["event_id"]

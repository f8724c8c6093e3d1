"""The Stripe answers' write-back, one statement against a real Postgres of the test's own.

What it must keep from the transaction it replaced: a guarded move only from an
allowed status, the Stripe id bound on a row another writer moved first (and
never over one already bound), the lease released with its error, and for each
item whether its own row moved.
"""

from __future__ import annotations

from typing import Any

from paystream.domain import PaymentStatus, RefundStatus, new_id
from streams.adapters import postgres
from streams.adapters.postgres import WriteBack
from testkit.own_books import OwnBooks
from testkit.rows import create_merchant, merchant_id


async def _merchant(own: OwnBooks) -> str:
    return (await create_merchant(own.conn, "write-back", merchant_id=merchant_id("acct_wb"))).id


async def _payment(own: OwnBooks, merchant: str, status: str, pi: str | None = None) -> str:
    payment_id = new_id("pay")
    await own.conn.execute(
        "INSERT INTO payments (id, merchant_id, amount, currency, status, customer, "
        "payment_method, idempotency_key, stripe_payment_intent_id) "
        "VALUES (%s, %s, 1000, 'usd', %s, 'c_wb', 'pm_card_visa', %s, %s)",
        (payment_id, merchant, status, new_id("idem"), pi))
    await own.conn.execute(
        "INSERT INTO stripe_submissions (object_type, object_id, attempts, lease_until) "
        "VALUES ('payment', %s, 1, now() + interval '1 minute')", (payment_id,))
    return payment_id


async def _row(own: OwnBooks, payment_id: str) -> dict[str, Any]:
    cur = await own.conn.execute(
        "SELECT p.status, p.stripe_payment_intent_id, p.failure_code, s.lease_until, "
        "s.last_error, s.stripe_id, s.unsent_attempts FROM payments p "
        "JOIN stripe_submissions s ON s.object_type = 'payment' AND s.object_id = p.id "
        "WHERE p.id = %s", (payment_id,))
    names = [c.name for c in cur.description or ()]
    found = await cur.fetchone()
    assert found is not None
    return dict(zip(names, found, strict=True))


async def test_moves_binds_and_releases_in_one_statement(own: OwnBooks) -> None:
    merchant = await _merchant(own)
    succeeded = await _payment(own, merchant, "pending")
    failed = await _payment(own, merchant, "pending")
    webhook_first = await _payment(own, merchant, "succeeded")  # moved, no id yet
    bound_already = await _payment(own, merchant, "succeeded", pi="pi_first")
    unavailable = await _payment(own, merchant, "pending")
    items = [
        WriteBack("payment", succeeded, PaymentStatus.SUCCEEDED,
                  {"stripe_payment_intent_id": "pi_a"}, "pi_a", release=True),
        WriteBack("payment", failed, PaymentStatus.FAILED,
                  {"stripe_payment_intent_id": "pi_b", "failure_code": "card_declined",
                   "failure_message": "declined"}, "pi_b", release=True,
                  error="card_declined"),
        WriteBack("payment", webhook_first, PaymentStatus.SUCCEEDED,
                  {"stripe_payment_intent_id": "pi_c"}, "pi_c", release=True),
        WriteBack("payment", bound_already, PaymentStatus.SUCCEEDED,
                  {"stripe_payment_intent_id": "pi_d"}, "pi_d", release=False),
        WriteBack("payment", unavailable, None, {}, None, release=True,
                  error="timeout", unsent=True),
    ]

    moved = await postgres.write_back(own.conn, items)

    assert moved == [True, True, False, False, False]
    assert (await _row(own, succeeded))["status"] == "succeeded"
    assert (await _row(own, succeeded))["stripe_payment_intent_id"] == "pi_a"
    declined = await _row(own, failed)
    assert (declined["status"], declined["failure_code"], declined["last_error"]) == (
        "failed", "card_declined", "card_declined")
    first = await _row(own, webhook_first)
    assert (first["status"], first["stripe_payment_intent_id"]) == ("succeeded", "pi_c")
    kept = await _row(own, bound_already)
    assert kept["stripe_payment_intent_id"] == "pi_first"  # never overwritten
    assert kept["lease_until"] is not None  # not this caller's lease
    waiting = await _row(own, unavailable)
    assert (waiting["status"], waiting["lease_until"], waiting["last_error"],
            waiting["unsent_attempts"]) == ("pending", None, "timeout", 1)
    for payment_id in (succeeded, failed, webhook_first):
        assert (await _row(own, payment_id))["lease_until"] is None


async def test_a_second_write_back_of_the_same_answers_moves_nothing(own: OwnBooks) -> None:
    merchant = await _merchant(own)
    payment_id = await _payment(own, merchant, "pending")
    item = WriteBack("payment", payment_id, PaymentStatus.SUCCEEDED,
                     {"stripe_payment_intent_id": "pi_x"}, "pi_x", release=True)
    assert await postgres.write_back(own.conn, [item]) == [True]
    assert await postgres.write_back(own.conn, [item]) == [False]
    assert await postgres.write_back(own.conn, []) == []


async def test_refunds_and_payments_together(own: OwnBooks) -> None:
    merchant = await _merchant(own)
    payment_id = await _payment(own, merchant, "succeeded", pi="pi_r")
    refund_id = new_id("re")
    await own.conn.execute(
        "INSERT INTO refunds (id, payment_id, merchant_id, amount, currency, status, "
        "idempotency_key) VALUES (%s, %s, %s, 500, 'usd', 'pending', %s)",
        (refund_id, payment_id, merchant, new_id("idem")))
    other = await _payment(own, merchant, "pending")
    moved = await postgres.write_back(own.conn, [
        WriteBack("refund", refund_id, RefundStatus.SUCCEEDED, {"stripe_refund_id": "re_s"},
                  "re_s", release=False),
        WriteBack("payment", other, PaymentStatus.SUCCEEDED,
                  {"stripe_payment_intent_id": "pi_o"}, "pi_o", release=True),
    ])
    assert moved == [True, True]
    cur = await own.conn.execute("SELECT status, stripe_refund_id FROM refunds WHERE id = %s",
                                 (refund_id,))
    assert await cur.fetchone() == ("succeeded", "re_s")

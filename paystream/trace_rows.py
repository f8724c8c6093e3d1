"""The Postgres part of a payment's trace: its rows, read as the domain's trace facts.

Shared by `paystream trace` (streams/ops/trace) and the API's trace route, which
may not import each other: one set of queries, so the two cannot tell different
stories. Every query is served by an index (the ledger by its (source_type,
source_id) key, the outbox by object_id, Stripe webhooks by received_at).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from paystream.domain.trace import (
    EntryRow,
    FraudRow,
    JournalRow,
    NotificationRow,
    PaymentRow,
    RefundRow,
    StripeEventRow,
    SubmissionRow,
    TraceFacts,
)

# Stripe webhooks about the payment arrive after it was created and, localstripe
# or Stripe, within minutes of its last change: the window keeps the scan of
# stripe_events (no index on object_ids) to a range of its received_at index.
STRIPE_EVENTS_BEFORE = 5.0
STRIPE_EVENTS_AFTER = 600.0

_PAYMENT = """
SELECT p.id, p.merchant_id, p.amount, p.currency, p.status, p.customer, p.payment_method,
       p.amount_refunded, p.stripe_payment_intent_id, p.failure_code, p.failure_message,
       p.created_at, p.updated_at, coalesce(m.webhook_url, '') <> '' AS merchant_has_webhook
FROM payments p JOIN merchants m ON m.id = p.merchant_id
WHERE p.id = %(id)s AND (%(merchant)s::text IS NULL OR p.merchant_id = %(merchant)s)
"""
_FRAUD = ("SELECT approved, score, rules_hit, decided_at FROM fraud_decisions "
          "WHERE payment_id = %s")
_REFUNDS = ("SELECT id, amount, currency, status, failure_code, created_at, updated_at "
            "FROM refunds WHERE payment_id = %s ORDER BY created_at, id")
_SUBMISSIONS = """
SELECT object_type, object_id, attempts, stripe_id, last_error, lease_until, created_at,
       updated_at
FROM stripe_submissions
WHERE (object_type = 'payment' AND object_id = %(id)s)
   OR (object_type = 'refund' AND object_id = ANY(%(refunds)s))
"""
_JOURNALS = """
SELECT id, source_type, source_id, created_at FROM ledger_journals
WHERE (source_type = 'payment' AND source_id = %(id)s)
   OR (source_type = 'refund' AND source_id = ANY(%(refunds)s))
ORDER BY created_at, id
"""
_ENTRIES = ("SELECT journal_id, account, direction, amount, currency FROM ledger_entries "
            "WHERE journal_id = ANY(%s) ORDER BY id")
_NOTIFICATIONS = """
SELECT event_id, event_type, object_id, status, attempts, last_status_code, last_error,
       created_at, updated_at, next_attempt_at, delivered_at
FROM merchant_notifications WHERE object_id = ANY(%s) ORDER BY created_at, event_id
"""
_STRIPE_EVENTS = """
SELECT id, type, outcome, received_at FROM stripe_events
WHERE received_at BETWEEN %(since)s AND %(until)s AND object_ids && %(ids)s::text[]
ORDER BY received_at, id
"""


def _t(value: datetime) -> float:
    return value.timestamp()


def _t_or_none(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


async def _all(conn: AsyncConnection[Any], sql: str, params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


async def load_facts(conn: AsyncConnection[Any], payment_id: str, *, now: float,
                     merchant_id: str | None = None) -> TraceFacts | None:
    """The payment's rows (None if there is no such payment, or, with merchant_id, it is
    another merchant's). Read-only: safe on a replica, and to run twice."""
    rows = await _all(conn, _PAYMENT, {"id": payment_id, "merchant": merchant_id})
    if not rows:
        return None
    p = rows[0]
    payment = PaymentRow(
        id=p["id"], merchant_id=p["merchant_id"], amount=p["amount"], currency=p["currency"],
        status=p["status"], customer=p["customer"], payment_method=p["payment_method"],
        amount_refunded=p["amount_refunded"],
        stripe_payment_intent_id=p["stripe_payment_intent_id"],
        failure_code=p["failure_code"], failure_message=p["failure_message"],
        created_at=_t(p["created_at"]), updated_at=_t(p["updated_at"]),
        merchant_has_webhook=bool(p["merchant_has_webhook"]))
    facts = TraceFacts(payment=payment, now=now)

    fraud = await _all(conn, _FRAUD, (payment_id,))
    if fraud:
        f = fraud[0]
        facts = replace(facts, fraud=FraudRow(f["approved"], f["score"],
                                              tuple(f["rules_hit"] or ()), _t(f["decided_at"])))
    refunds = tuple(
        RefundRow(r["id"], r["amount"], r["currency"], r["status"], r["failure_code"],
                  _t(r["created_at"]), _t(r["updated_at"]))
        for r in await _all(conn, _REFUNDS, (payment_id,)))
    refund_ids = [r.id for r in refunds]
    keys = {"id": payment_id, "refunds": refund_ids}
    submissions = tuple(
        SubmissionRow(s["object_type"], s["object_id"], s["attempts"], s["stripe_id"],
                      s["last_error"], _t_or_none(s["lease_until"]), _t(s["created_at"]),
                      _t(s["updated_at"]))
        for s in await _all(conn, _SUBMISSIONS, keys))
    journal_rows = await _all(conn, _JOURNALS, keys)
    entries: dict[str, list[EntryRow]] = {}
    if journal_rows:
        for e in await _all(conn, _ENTRIES, ([j["id"] for j in journal_rows],)):
            entries.setdefault(e["journal_id"], []).append(
                EntryRow(e["account"], e["direction"], e["amount"], e["currency"]))
    journals = tuple(JournalRow(j["id"], j["source_type"], j["source_id"], _t(j["created_at"]),
                                tuple(entries.get(j["id"], ())))
                     for j in journal_rows)
    notifications = tuple(
        NotificationRow(n["event_id"], n["event_type"], n["object_id"], n["status"],
                        n["attempts"], n["last_status_code"], n["last_error"],
                        _t(n["created_at"]), _t(n["updated_at"]), _t(n["next_attempt_at"]),
                        _t_or_none(n["delivered_at"]))
        for n in await _all(conn, _NOTIFICATIONS, ([payment_id, *refund_ids],)))
    last = max([payment.updated_at, *(r.updated_at for r in refunds)])
    stripe_events = tuple(
        StripeEventRow(e["id"], e["type"], e["outcome"], _t(e["received_at"]))
        for e in await _all(conn, _STRIPE_EVENTS, {
            "since": datetime.fromtimestamp(payment.created_at - STRIPE_EVENTS_BEFORE).astimezone(),
            "until": datetime.fromtimestamp(last + STRIPE_EVENTS_AFTER).astimezone(),
            "ids": [payment_id, *refund_ids]}))
    return replace(facts, refunds=refunds, submissions=submissions, journals=journals,
                   notifications=notifications, stripe_events=stripe_events)

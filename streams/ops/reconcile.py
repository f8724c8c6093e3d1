"""Reading the books for reconciliation (Postgres and Stripe) and applying the allowed fixes.

The comparison itself is pure (paystream.domain.reconcile). Stripe is listed
page by page through the gateway, so every page is paid for from the shared
request budget. Objects that changed in the last ``settle_seconds`` are left
out: the pipeline may simply not have caught up with them yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from paystream.domain import PaymentStatus, RefundStatus
from paystream.domain.reconcile import (
    Books,
    Drift,
    OurPayment,
    OurRefund,
    StripeIntent,
    StripeRefund,
    reconcile,
)
from streams.adapters import postgres
from streams.adapters.stripe_gateway import StripeGateway

# Stripe's clock against ours, when listing what was created since a moment.
CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class Scope:
    """Which books to read: created since (epoch seconds, None: all), one merchant or all,
    leaving out what changed in the last settle_seconds."""

    since: float | None = None
    merchant: str | None = None
    settle_seconds: float = 10.0


@dataclass
class Report:
    drifts: list[Drift]
    payments: int
    refunds: int
    stripe_objects: int
    seconds: float
    fixed: list[Drift]

    @property
    def rate(self) -> float:
        return (self.payments + self.refunds) / self.seconds if self.seconds else 0.0


async def _rows(conn: AsyncConnection[Any], sql: str,
                params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


_IN_SCOPE = ("(%(since)s::float8 IS NULL OR created_at >= to_timestamp(%(since)s)) "
             "AND (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s) "
             "AND updated_at < to_timestamp(%(cutoff)s)")


def _payment(r: dict[str, Any]) -> OurPayment:
    return OurPayment(r["id"], r["merchant_id"], PaymentStatus(r["status"]), r["amount"],
                      r["currency"], r["stripe_payment_intent_id"])


async def read_ours(conn: AsyncConnection[Any], scope: Scope, cutoff: float
                    ) -> tuple[dict[str, OurPayment], dict[str, OurRefund]]:
    params = {"since": scope.since, "merchant": scope.merchant, "cutoff": cutoff}
    payments = {r["id"]: _payment(r) for r in await _rows(
        conn, "SELECT id, merchant_id, status, amount, currency, stripe_payment_intent_id "
        f"FROM payments WHERE {_IN_SCOPE}", params)}
    refunds = {r["id"]: OurRefund(r["id"], r["payment_id"], r["merchant_id"],
                                  RefundStatus(r["status"]), r["amount"], r["currency"],
                                  r["stripe_refund_id"]) for r in await _rows(
        conn, "SELECT id, payment_id, merchant_id, status, amount, currency, stripe_refund_id "
        f"FROM refunds WHERE {_IN_SCOPE}", params)}
    return payments, refunds


Journals = dict[tuple[str, str], int]
Balances = dict[tuple[str, str], tuple[int, int]]


async def read_ledger(conn: AsyncConnection[Any], scope: Scope, cutoff: float,
                      payments: Sequence[str], refunds: Sequence[str]
                      ) -> tuple[Journals, Balances]:
    """Journals per source (of these objects, or of no object at all), and per merchant
    and currency: what the ledger owes against succeeded minus refunded (settled only)."""
    params = {"merchant": scope.merchant, "cutoff": cutoff, "pids": list(payments),
              "rids": list(refunds)}
    journals = {(r["source_type"], r["source_id"]): r["n"] for r in await _rows(
        conn,
        "SELECT source_type, source_id, count(*) AS n FROM ledger_journals j "
        "WHERE (source_type = 'payment' AND source_id = ANY(%(pids)s)) "
        "   OR (source_type = 'refund' AND source_id = ANY(%(rids)s)) "
        "   OR ((%(merchant)s::text IS NULL OR merchant_id = %(merchant)s) "
        "       AND NOT EXISTS (SELECT 1 FROM payments p WHERE j.source_type = 'payment' "
        "                       AND p.id = j.source_id) "
        "       AND NOT EXISTS (SELECT 1 FROM refunds r WHERE j.source_type = 'refund' "
        "                       AND r.id = j.source_id)) "
        "GROUP BY source_type, source_id", params)}
    # Both sides over the same settled objects: a succeeded payment whose
    # journal is a moment late is not a drift.
    balances = {(r["merchant_id"], r["currency"]): (int(r["ledger"]), int(r["sums"]))
                for r in await _rows(conn, """
        WITH settled AS (
            SELECT 'payment' AS source_type, id, merchant_id, currency, amount AS signed
              FROM payments WHERE status = 'succeeded' AND updated_at < to_timestamp(%(cutoff)s)
                AND (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s)
            UNION ALL
            SELECT 'refund', id, merchant_id, currency, -amount
              FROM refunds WHERE status = 'succeeded' AND updated_at < to_timestamp(%(cutoff)s)
                AND (%(merchant)s::text IS NULL OR merchant_id = %(merchant)s)),
        sums AS (SELECT merchant_id, currency, sum(signed) AS s FROM settled GROUP BY 1, 2),
        owed AS (
            SELECT e.merchant_id, e.currency,
                   sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END) AS s
              FROM ledger_entries e JOIN ledger_journals j ON j.id = e.journal_id
              JOIN settled x ON x.source_type = j.source_type AND x.id = j.source_id
             WHERE e.account LIKE 'merchant_available:%%' GROUP BY 1, 2)
        SELECT coalesce(sums.merchant_id, owed.merchant_id) AS merchant_id,
               coalesce(sums.currency, owed.currency) AS currency,
               coalesce(owed.s, 0) AS ledger, coalesce(sums.s, 0) AS sums
          FROM sums FULL JOIN owed ON owed.merchant_id = sums.merchant_id
                                  AND owed.currency = sums.currency""", params)}
    return journals, balances


def _intent(o: dict[str, Any]) -> StripeIntent:
    meta = o.get("metadata") or {}
    return StripeIntent(o["id"], o["status"], int(o["amount"]), o["currency"],
                        meta.get("payment_id"))


async def read_books(conn: AsyncConnection[Any], stripe: StripeGateway, scope: Scope,
                     progress: Callable[[str], None] = lambda line: None) -> Books:
    cutoff = time.time() - scope.settle_seconds
    payments, refunds = await read_ours(conn, scope, cutoff)
    progress(f"read {len(payments)} payments and {len(refunds)} refunds")
    created_gte = int(scope.since - CLOCK_SKEW_SECONDS) if scope.since is not None else None

    def listed(kind: str) -> Callable[[int], None]:
        return lambda n: progress(f"listed {n} Stripe {kind}")

    raw = await stripe.list_all("payment_intents", created_gte=created_gte,
                                on_page=listed("PaymentIntents"))
    ours = [o for o in raw if (o.get("metadata") or {}).get("payment_id")
            and (scope.merchant is None
                 or (o.get("metadata") or {}).get("merchant_id") == scope.merchant)
            and int(o.get("created") or 0) < cutoff]
    intents = [_intent(o) for o in ours]
    # A PaymentIntent of the window may name a payment created before it.
    older = {i.payment_id for i in intents if i.payment_id and i.payment_id not in payments}
    if older:
        for r in await _rows(conn, "SELECT id, merchant_id, status, amount, currency, "
                             "stripe_payment_intent_id FROM payments WHERE id = ANY(%(ids)s)",
                             {"ids": sorted(older)}):
            payments[r["id"]] = _payment(r)
    raw_refunds = await stripe.list_all("refunds", created_gte=created_gte,
                                        on_page=listed("Refunds"))
    stripe_refunds = [StripeRefund(o["id"], o["status"], int(o["amount"]),
                                   (o.get("metadata") or {}).get("refund_id"))
                      for o in raw_refunds if (o.get("metadata") or {}).get("refund_id")]
    journals, balances = await read_ledger(conn, scope, cutoff, list(payments), list(refunds))
    return Books(payments, refunds, intents, stripe_refunds, journals, balances)


async def run(conn: AsyncConnection[Any], stripe: StripeGateway, scope: Scope, *,
              fix: bool, progress: Callable[[str], None] = lambda line: None) -> Report:
    """Reconcile; with fix, apply every guarded transition that resolves a drift."""
    started = time.monotonic()
    books = await read_books(conn, stripe, scope, progress)
    drifts = reconcile(books)
    fixed: list[Drift] = []
    if fix:
        for drift in drifts:
            if drift.fix is not None and await apply(conn, drift):
                fixed.append(drift)
    return Report(drifts, len(books.payments), len(books.refunds),
                  len(list(books.intents)) + len(list(books.stripe_refunds)),
                  time.monotonic() - started, fixed)


async def apply(conn: AsyncConnection[Any], drift: Drift) -> bool:
    """The drift's guarded move; False when the row was no longer where it was read."""
    assert drift.fix is not None
    table, column = (("payments", "stripe_payment_intent_id") if drift.fix.object_type
                     == "payment" else ("refunds", "stripe_refund_id"))
    moved = await postgres.transition_rows(conn, table, drift.fix.target,
                                        [{"id": drift.fix.object_id,
                                          column: drift.fix.stripe_id}])
    return bool(moved)

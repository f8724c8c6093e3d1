"""The money checked straight from Postgres and the Stripe peer once every payment is terminal."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psycopg
from psycopg.rows import dict_row

from stack.chaos.load import TERMINAL, Client, Order


async def wait_terminal(db: psycopg.AsyncConnection[Any], merchant: str,
                        timeout: float) -> int:
    """Payments of the merchant still not terminal after timeout (0: all done)."""
    deadline = time.monotonic() + timeout
    while True:
        row = await (await db.execute(
            "SELECT count(*) FILTER (WHERE status <> ALL(%s)) + (SELECT count(*) FROM refunds "
            " WHERE merchant_id = %s AND status = 'pending') FROM payments "
            "WHERE merchant_id = %s", (list(TERMINAL), merchant, merchant))).fetchone()
        left = int(row[0]) if row else 0
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(2.0)


async def stripe_intents(base: str, key: str, merchant: str) -> dict[str, list[str]]:
    """PaymentIntent ids at the Stripe peer per payment id, for this merchant."""
    found: dict[str, list[str]] = {}
    after: str | None = None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            params = {"limit": "100", **({"starting_after": after} if after else {})}
            async with http.get(f"{base}/v1/payment_intents", params=params) as resp:
                page = await resp.json()
            for pi in page["data"]:
                meta = pi.get("metadata") or {}
                if meta.get("merchant_id") == merchant:
                    found.setdefault(meta.get("payment_id", "?"), []).append(pi["id"])
            if not page.get("has_more") or not page["data"]:
                return found
            after = page["data"][-1]["id"]


def blocked_by_fraud(payments: Any) -> list[str]:
    """The load is never fraud: a blocked payment means a worker ran without WORKER_ENV
    (its payments never reached Stripe, so the money checks would pass on them)."""
    blocked = sorted(p["id"] for p in payments if p["status"] == "blocked")
    if not blocked:
        return []
    return [f"{len(blocked)} payments blocked by fraud (first {blocked[0]}): a worker ran "
            f"without the load's fraud setting"]


async def check_invariants(env: dict[str, str], client: Client, merchant: str,
                           orders: list[Order]) -> list[str]:
    """Every broken invariant, as a sentence with ids; empty when all hold."""
    broken: list[str] = []
    async with await psycopg.AsyncConnection.connect(env["DATABASE_ADMIN_URL"],
                                                     autocommit=True) as db:

        async def rows(sql: str, *params: Any) -> list[dict[str, Any]]:
            async with db.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        payments = {r["id"]: r for r in await rows(
            "SELECT p.*, d.approved FROM payments p LEFT JOIN fraud_decisions d "
            "ON d.payment_id = p.id WHERE p.merchant_id = %s", merchant)}
        by_key: dict[str, list[str]] = {}
        for p in payments.values():
            by_key.setdefault(p["idempotency_key"], []).append(p["id"])
        broken += [f"key {k} has {len(v)} payments: {v}" for k, v in by_key.items()
                   if len(v) > 1]
        broken += [f"order {o.key} was accepted but has no payment row" for o in orders
                   if o.payment_id and o.payment_id not in payments]
        broken += [f"payment {p['id']} is still {p['status']}" for p in payments.values()
                   if p["status"] not in TERMINAL]
        broken += blocked_by_fraud(payments.values())
        intents = await stripe_intents(env["STRIPE_API_BASE"], env["STRIPE_API_KEY"], merchant)
        broken += [f"payment {pid} has {len(ids)} PaymentIntents: {ids}"
                   for pid, ids in intents.items() if len(ids) > 1]
        broken += [f"payment {pid} was sent to Stripe without an approved fraud decision"
                   for pid in intents if pid in payments and payments[pid]["approved"] is not True]
        journals = await rows(
            "SELECT j.source_type, j.source_id, count(*) AS n, "
            "  sum(CASE WHEN e.direction = 'debit' THEN e.amount ELSE 0 END) AS debits, "
            "  sum(CASE WHEN e.direction = 'credit' THEN e.amount ELSE 0 END) AS credits "
            "FROM ledger_journals j JOIN ledger_entries e ON e.journal_id = j.id "
            "WHERE j.merchant_id = %s GROUP BY j.id, j.source_type, j.source_id", merchant)
        broken += [f"journal of {j['source_type']} {j['source_id']} is unbalanced"
                   for j in journals if j["debits"] != j["credits"]]
        posted: dict[tuple[str, str], int] = {}
        for j in journals:
            key = (j["source_type"], j["source_id"])
            posted[key] = posted.get(key, 0) + 1
        refunds = {r["id"]: r for r in await rows(
            "SELECT * FROM refunds WHERE merchant_id = %s", merchant)}
        expected = {("payment", p["id"]) for p in payments.values() if p["status"] == "succeeded"}
        expected |= {("refund", r["id"]) for r in refunds.values() if r["status"] == "succeeded"}
        broken += [f"{kind} {oid} succeeded but has {posted.get((kind, oid), 0)} journals"
                   for kind, oid in expected if posted.get((kind, oid), 0) != 1]
        broken += [f"{kind} {oid} has a journal but did not succeed"
                   for kind, oid in posted if (kind, oid) not in expected]
        for p in payments.values():
            total = sum(r["amount"] for r in refunds.values()
                        if r["payment_id"] == p["id"] and r["status"] == "succeeded")
            if total > p["amount"]:
                broken.append(f"payment {p['id']} refunded {total} of {p['amount']}")
        owed = sum(p["amount"] for p in payments.values() if p["status"] == "succeeded") - sum(
            r["amount"] for r in refunds.values() if r["status"] == "succeeded")
    status, balance = await client.get("/v1/balances")
    available = sum(a["amount"] for a in balance.get("available", []) if a["currency"] == "usd")
    if status != 200 or available != owed:
        broken.append(f"/v1/balances says {available} ({status}), payments and refunds say "
                      f"{owed}")
    return broken

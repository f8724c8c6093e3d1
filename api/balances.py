"""The merchant's ledger balances, summed from the append-only ledger through the replicas.

Two views of the same sums: ``accounts`` uses the ledger's sign convention
(debit positive, credit negative; see paystream/domain/ledger.py), and
``available`` is the merchant-friendly amount we owe them per currency,
i.e. minus the balance of their ``merchant_available`` account.
"""

from __future__ import annotations

from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from api import reads
from api.errors import json_response
from api.state import MERCHANT
from paystream.domain.ledger import merchant_available_account

BALANCES = """
SELECT account, currency,
       sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END)::bigint AS balance
FROM ledger_entries
WHERE merchant_id = %s
GROUP BY account, currency
ORDER BY currency, account
"""


def balance_object(merchant_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Shape the summed rows; pure."""
    available: dict[str, int] = {}
    for row in rows:
        if row["account"] == merchant_available_account(merchant_id, row["currency"]):
            available[row["currency"]] = available.get(row["currency"], 0) - row["balance"]
    return {
        "object": "balance",
        "available": [{"currency": c, "amount": a} for c, a in sorted(available.items())],
        "accounts": [
            {"account": r["account"], "currency": r["currency"], "balance": r["balance"]}
            for r in rows
        ],
    }


async def retrieve(request: web.Request) -> web.Response:
    merchant = request[MERCHANT]

    async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(BALANCES, (merchant.id,))
        return await cur.fetchall()

    return json_response(balance_object(merchant.id, await reads.read(request, work)))

"""Rows written straight into the primary the way the product writes them.

A merchant is made with the API's own `NewMerchant` and `INSERT_MERCHANT` (what
`paystream merchant create` runs), so its key works against the API and its
row is what production's are. An id of the caller's choosing keeps it inside a
change feed's merchant prefix (testkit/cdc_feed.py).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg

from api.merchants import INSERT_MERCHANT, NewMerchant


def merchant_id(prefix: str) -> str:
    """A fresh merchant id that starts with prefix."""
    return prefix + secrets.token_hex(8)


def new_merchant(name: str, *, merchant_id: str | None = None,
                 webhook_url: str | None = None) -> NewMerchant:
    if merchant_id is None:
        return NewMerchant(name=name, webhook_url=webhook_url)
    return NewMerchant(name=name, webhook_url=webhook_url, id=merchant_id)


async def create_merchant(conn: psycopg.AsyncConnection[Any], name: str, *,
                          merchant_id: str | None = None,
                          webhook_url: str | None = None) -> NewMerchant:
    """A merchant inserted on conn; its credentials (the API key exists only here)."""
    merchant = new_merchant(name, merchant_id=merchant_id, webhook_url=webhook_url)
    await conn.execute(INSERT_MERCHANT, merchant.row())
    return merchant


def create_merchant_sync(database_url: str, name: str, *,
                         merchant_id: str | None = None) -> NewMerchant:
    """`create_merchant` for synchronous callers, on a connection of its own."""
    merchant = new_merchant(name, merchant_id=merchant_id)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(INSERT_MERCHANT, merchant.row())
    return merchant


async def insert_blocked_payment(database_url: str, *, amount: int = 1234) -> str:
    """A merchant and a payment of its own inserted on the primary; the payment's id.

    The payment is born `blocked` (terminal) so the stream workers, if running,
    leave it alone: for tests of the plumbing (CDC, alerts), not of payments.
    """
    suffix = uuid.uuid4().hex[:12]
    payment = f"pay_stack_{suffix}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        merchant = await create_merchant(conn, "stack test", merchant_id=f"mer_stack_{suffix}")
        await conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, customer, payment_method,"
            " status) VALUES (%s, %s, %s, 'usd', 'cus_stack', 'pm_card_visa', 'blocked')",
            (payment, merchant.id, amount))
    return payment

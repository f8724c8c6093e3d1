"""Refunds: insert a pending refund if it fits what is left of the payment (one transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api import validation
from api.body import json_object
from api.db import current_lsn
from api.errors import InvalidRequest, NotFound
from api.idempotency import Outcome, mismatch_error
from api.writes import create_once
from paystream.domain.ids import new_id
from paystream.domain.money import parse_amount
from paystream.domain.objects import refund_object
from paystream.domain.refunds import check_refund
from paystream.domain.signing import request_fingerprint
from paystream.domain.status import PaymentStatus, RefundStatus

CREATE_PARAMS = ("payment", "amount")

COLUMNS = (
    "id, payment_id, amount, currency, status, failure_code, failure_message, "
    "floor(extract(epoch FROM created_at))::bigint AS created"
)
LOCK_PAYMENT = (
    "SELECT id, amount, currency, status FROM payments "
    "WHERE id = %s AND merchant_id = %s FOR UPDATE"
)
BY_KEY = (
    f"SELECT {COLUMNS}, request_fingerprint, "
    "created_at < now() - make_interval(secs => %s) AS expired "
    "FROM refunds WHERE merchant_id = %s AND idempotency_key = %s"
)
# An expired key (older than settings.idempotency_ttl_seconds) is freed for reuse.
RELEASE_KEY = "UPDATE refunds SET idempotency_key = NULL WHERE id = %s"
# Pending refunds count too: they reserve their amount until they resolve.
REFUNDED = (
    "SELECT coalesce(sum(amount), 0)::bigint AS total FROM refunds "
    "WHERE payment_id = %s AND status = ANY(%s)"
)
RESERVING = [RefundStatus.PENDING.value, RefundStatus.SUCCEEDED.value]
INSERT = f"""
INSERT INTO refunds (id, payment_id, merchant_id, amount, currency, idempotency_key,
                     request_fingerprint)
VALUES (%(id)s, %(payment_id)s, %(merchant_id)s, %(amount)s, %(currency)s,
        %(idempotency_key)s, %(request_fingerprint)s)
ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
RETURNING {COLUMNS}
"""


@dataclass(frozen=True, slots=True)
class RefundParams:
    """A validated refund request; amount None means everything left."""

    payment: str
    amount: int | None

    def fingerprint(self) -> str:
        return request_fingerprint(
            {"path": "/v1/refunds", "params": {"payment": self.payment, "amount": self.amount}}
        )


def parse_create(body: dict[str, Any]) -> RefundParams:
    validation.reject_unknown(body, CREATE_PARAMS)
    raw = body.get("payment")
    if raw is None:
        raise InvalidRequest(
            "Missing required param: payment.", param="payment", code="parameter_missing"
        )
    if not isinstance(raw, str):
        raise InvalidRequest("payment must be a string.", param="payment")
    payment = validation.object_id(raw, "pay")
    if payment is None:
        raise NotFound(f"No such payment: '{raw[:64]}'", param="payment")
    amount = body.get("amount")
    return RefundParams(payment, None if amount is None else parse_amount(amount))


async def _insert(
    pool: AsyncConnectionPool,
    merchant_id: str,
    params: RefundParams,
    key: str | None,
    fingerprint: str,
    ttl_seconds: int,
) -> Outcome:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        async with conn.transaction():
            # Locking the payment serialises refunds of it, so two concurrent
            # refunds cannot both fit into the same remaining amount.
            await cur.execute(LOCK_PAYMENT, (params.payment, merchant_id))
            payment = await cur.fetchone()
            if payment is None:
                raise NotFound(f"No such payment: '{params.payment}'", param="payment")
            if key is not None:
                await cur.execute(BY_KEY, (ttl_seconds, merchant_id, key))
                existing = await cur.fetchone()
                if existing is not None and existing["expired"]:
                    await cur.execute(RELEASE_KEY, (existing["id"],))
                elif existing is not None:
                    if existing["request_fingerprint"] != fingerprint:
                        raise mismatch_error()
                    replay = refund_object(existing, as_created=True)
                    return Outcome(201, replay, await current_lsn(conn), replayed=True)
            await cur.execute(REFUNDED, (params.payment, RESERVING))
            total = await cur.fetchone()
            assert total is not None
            amount = check_refund(
                params.amount,
                captured=payment["amount"],
                already_refunded=total["total"],
                payment_status=PaymentStatus(payment["status"]),
            )
            await cur.execute(
                INSERT,
                {
                    "id": new_id("re"),
                    "payment_id": params.payment,
                    "merchant_id": merchant_id,
                    "amount": amount,
                    "currency": payment["currency"],
                    "idempotency_key": key,
                    "request_fingerprint": fingerprint,
                },
            )
            row = await cur.fetchone()
        if row is None:
            # A concurrent request took this key for another payment (we held
            # this payment's lock, so it cannot have been the same request).
            raise mismatch_error()
        return Outcome(201, refund_object(row), await current_lsn(conn))


async def create(request: web.Request) -> web.Response:
    return await create_once(request, parse_create(await json_object(request)), _insert)

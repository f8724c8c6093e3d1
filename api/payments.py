"""Payments: create (one INSERT, idempotent), retrieve, list, cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api import reads, validation
from api.body import json_object
from api.db import current_lsn, write_returning
from api.errors import IdempotencyKeyInUse, InvalidRequest, NotFound, json_response
from api.idempotency import TOKEN_HEADER, Outcome, mismatch_error
from api.state import MERCHANT, PRIMARY
from api.writes import create_once
from paystream.domain.errors import InvalidTransition
from paystream.domain.ids import new_id
from paystream.domain.money import currency as parse_currency
from paystream.domain.money import parse_amount
from paystream.domain.objects import payment_object
from paystream.domain.signing import request_fingerprint
from paystream.domain.status import PaymentStatus, check_transition, guarded_update_sql

CREATE_PARAMS = ("amount", "currency", "customer", "payment_method", "description", "metadata")

# What the payment object is made of; `created` in whole unix seconds, like Stripe.
COLUMNS = (
    "id, amount, currency, status, customer, payment_method, description, metadata, "
    "amount_refunded, failure_code, failure_message, "
    "floor(extract(epoch FROM created_at))::bigint AS created"
)

INSERT = f"""
INSERT INTO payments (id, merchant_id, amount, currency, customer, payment_method,
                      description, metadata, idempotency_key, request_fingerprint)
VALUES (%(id)s, %(merchant_id)s, %(amount)s, %(currency)s, %(customer)s, %(payment_method)s,
        %(description)s, %(metadata)s, %(idempotency_key)s, %(request_fingerprint)s)
ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
RETURNING {COLUMNS}
"""
BY_KEY = (
    f"SELECT {COLUMNS}, request_fingerprint FROM payments "
    "WHERE merchant_id = %s AND idempotency_key = %s"
)
# Keys expire like Stripe's (settings.idempotency_ttl_seconds): a key first used
# longer ago than that is freed on the old row, so it may name a new request.
RELEASE_EXPIRED_KEY = (
    "UPDATE payments SET idempotency_key = NULL "
    "WHERE merchant_id = %s AND idempotency_key = %s "
    "AND created_at < now() - make_interval(secs => %s) RETURNING id"
)
BY_ID = f"SELECT {COLUMNS} FROM payments WHERE id = %s AND merchant_id = %s"

# Cancel is narrower than the transition table (which also lets the stream
# workers cancel processing payments): a merchant may cancel only before submission.
CANCEL = guarded_update_sql("payments", PaymentStatus.CANCELED)
CANCELABLE = [PaymentStatus.PENDING.value]


@dataclass(frozen=True, slots=True)
class PaymentParams:
    """A validated create request."""

    amount: int
    currency: str
    customer: str
    payment_method: str
    description: str | None
    metadata: dict[str, str]

    def fingerprint(self) -> str:
        """Identifies the request for idempotency: same params, same fingerprint."""
        return request_fingerprint({"path": "/v1/payments", "params": self.as_dict()})

    def as_dict(self) -> dict[str, Any]:
        return {
            "amount": self.amount,
            "currency": self.currency,
            "customer": self.customer,
            "payment_method": self.payment_method,
            "description": self.description,
            "metadata": self.metadata,
        }


def parse_create(body: dict[str, Any]) -> PaymentParams:
    """Validate a create body in the order Stripe reports problems: unknown, then each param."""
    validation.reject_unknown(body, CREATE_PARAMS)
    amount = parse_amount(body.get("amount"))
    if body.get("currency") is None:
        raise InvalidRequest(
            "Missing required param: currency.", param="currency", code="parameter_missing"
        )
    return PaymentParams(
        amount=amount,
        currency=parse_currency(body["currency"]).code,
        customer=validation.text(body.get("customer"), "customer"),
        payment_method=validation.text(body.get("payment_method"), "payment_method"),
        description=validation.optional_text(
            body.get("description"), "description", max_length=validation.MAX_DESCRIPTION_LENGTH
        ),
        metadata=validation.metadata(body.get("metadata")),
    )


async def _insert(
    pool: AsyncConnectionPool,
    merchant_id: str,
    params: PaymentParams,
    key: str | None,
    fingerprint: str,
    ttl_seconds: int,
) -> Outcome:
    values = {
        **params.as_dict(),
        "id": new_id("pay"),
        "merchant_id": merchant_id,
        "metadata": Jsonb(params.metadata),
        "idempotency_key": key,
        "request_fingerprint": fingerprint,
    }
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        # A second attempt happens only after an expired key was freed.
        for _ in range(2):
            row, token = await write_returning(conn, INSERT, values)
            if row is not None:
                return Outcome(201, payment_object(row), token)
            await cur.execute(RELEASE_EXPIRED_KEY, (merchant_id, key, ttl_seconds))
            if await cur.fetchone() is None:
                break
        # The key's row exists (committed first by a concurrent or earlier
        # request): the last line of idempotency, whatever Redis said.
        await cur.execute(BY_KEY, (merchant_id, key))
        row = await cur.fetchone()
        if row is None:
            # Freed and retaken between our statements: let the client retry.
            raise IdempotencyKeyInUse("The Idempotency-Key is being reused; retry.",
                                      param="Idempotency-Key")
        if row["request_fingerprint"] != fingerprint:
            raise mismatch_error()
        return Outcome(201, payment_object(row, as_created=True), await current_lsn(conn),
                       replayed=True)


async def create(request: web.Request) -> web.Response:
    return await create_once(request, parse_create(await json_object(request)), _insert)


def payment_id(request: web.Request) -> str:
    """The {id} path segment; an id that cannot be ours is simply not found."""
    raw = request.match_info["id"]
    pid = validation.object_id(raw, "pay")
    if pid is None:
        raise NotFound(f"No such payment: '{raw[:64]}'", param="id")
    return pid


async def retrieve(request: web.Request) -> web.Response:
    merchant = request[MERCHANT]
    pid = payment_id(request)

    async def work(conn: psycopg.AsyncConnection) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(BY_ID, (pid, merchant.id))
        return await cur.fetchone()

    row = await reads.read(request, work)
    if row is None:
        # Another merchant's payment is indistinguishable from a missing one.
        raise NotFound(f"No such payment: '{pid}'", param="id")
    return json_response(payment_object(row))


async def list_(request: web.Request) -> web.Response:
    merchant = request[MERCHANT]
    query = request.rel_url.query
    limit = validation.list_limit(query.get("limit"))
    status = query.get("status")
    if status is not None and status not in PaymentStatus.__members__.values():
        raise InvalidRequest(
            f"Invalid status: must be one of {', '.join(s.value for s in PaymentStatus)}.",
            param="status",
            code="parameter_invalid",
        )
    after_raw = query.get("starting_after")
    after = None if after_raw is None else validation.object_id(after_raw, "pay")
    if after_raw is not None and after is None:
        raise InvalidRequest(
            f"No such payment: '{after_raw[:64]}'", param="starting_after",
            code="resource_missing",
        )

    async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]] | None:
        cur = conn.cursor(row_factory=dict_row)
        conditions = ["merchant_id = %(merchant_id)s"]
        params: dict[str, Any] = {"merchant_id": merchant.id, "limit": limit + 1}
        if after is not None:
            await cur.execute(
                "SELECT created_at, id FROM payments WHERE id = %s AND merchant_id = %s",
                (after, merchant.id),
            )
            cursor_row = await cur.fetchone()
            if cursor_row is None:
                return None
            conditions.append("(created_at, id) < (%(after_created)s, %(after_id)s)")
            params.update(after_created=cursor_row["created_at"], after_id=cursor_row["id"])
        if status is not None:
            conditions.append("status = %(status)s")
            params["status"] = status
        await cur.execute(
            f"SELECT {COLUMNS} FROM payments WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
            params,
        )
        return await cur.fetchall()

    rows = await reads.read(request, work)
    if rows is None:
        raise InvalidRequest(
            f"No such payment: '{after}'", param="starting_after", code="resource_missing"
        )
    return json_response(
        {
            "object": "list",
            "url": "/v1/payments",
            "has_more": len(rows) > limit,
            "data": [payment_object(r) for r in rows[:limit]],
        }
    )


async def cancel(request: web.Request) -> web.Response:
    merchant = request[MERCHANT]
    pid = payment_id(request)
    body = await json_object(request)
    validation.reject_unknown(body, ())
    async with request.app[PRIMARY].connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        async with conn.transaction():
            # The row lock orders us with a concurrent worker's transition.
            await cur.execute(
                "SELECT status FROM payments WHERE id = %s AND merchant_id = %s FOR UPDATE",
                (pid, merchant.id),
            )
            current = await cur.fetchone()
            if current is None:
                raise NotFound(f"No such payment: '{pid}'", param="id")
            status = PaymentStatus(current["status"])
            if status is not PaymentStatus.CANCELED:
                # Canceling twice answers the canceled payment: a retried cancel succeeds.
                if status is not PaymentStatus.PENDING:
                    raise InvalidTransition(
                        entity="payment", current=status, target=PaymentStatus.CANCELED
                    )
                check_transition(status, PaymentStatus.CANCELED)
                await cur.execute(
                    CANCEL,
                    {"id": pid, "status": PaymentStatus.CANCELED.value, "allowed": CANCELABLE},
                )
            await cur.execute(BY_ID, (pid, merchant.id))
            row = await cur.fetchone()
        token = await current_lsn(conn)
    assert row is not None
    return json_response(payment_object(row), headers={TOKEN_HEADER: token})

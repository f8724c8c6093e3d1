"""Refunds: only of succeeded payments, never more than what is left, even concurrently."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from api.merchants import NewMerchant
from paystream.settings import Settings
from tests.integration.api.api_helpers import (
    TOKEN,
    Api,
    forget_key,
    idempotency_key,
    payment_body,
    succeed_payment,
)

pytestmark = pytest.mark.own_database


async def refund(api: Api, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await api.client.post("/v1/refunds", data=json.dumps(body), headers=api.headers(key))
    return resp.status, await resp.json()


async def succeeded_payment(api: Api, merchant: NewMerchant, amount: int) -> dict[str, Any]:
    _, payment, _ = await api.create_payment(merchant.api_key, payment_body(amount=amount))
    await succeed_payment(api, payment["id"])
    return payment


async def test_partial_refunds_then_the_rest(api: Api, merchant: NewMerchant) -> None:
    payment = await succeeded_payment(api, merchant, 1000)
    status, first = await refund(api, merchant.api_key, {"payment": payment["id"], "amount": 300})
    assert status == 201
    assert first == {
        "id": first["id"], "object": "refund", "amount": 300, "currency": "usd",
        "payment": payment["id"], "status": "pending", "failure_code": None,
        "failure_message": None, "created": first["created"],
    }
    assert first["id"].startswith("re_")
    status, too_much = await refund(api, merchant.api_key,
                                    {"payment": payment["id"], "amount": 701})
    assert status == 400
    assert too_much["error"]["param"] == "amount"
    status, rest = await refund(api, merchant.api_key, {"payment": payment["id"]})
    assert (status, rest["amount"]) == (201, 700)
    status, none_left = await refund(api, merchant.api_key, {"payment": payment["id"]})
    assert status == 400
    assert none_left["error"]["code"] == "charge_already_refunded"


async def test_refund_of_a_pending_payment_is_refused(api: Api, merchant: NewMerchant) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    status, body = await refund(api, merchant.api_key, {"payment": payment["id"]})
    assert status == 400
    assert body["error"]["code"] == "charge_not_refundable"


async def test_concurrent_full_refunds_make_exactly_one(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    payment = await succeeded_payment(api, merchant, 2500)
    results = await asyncio.gather(
        *(refund(api, merchant.api_key, {"payment": payment["id"]}) for _ in range(8))
    )
    assert sorted(status for status, _ in results) == [201] + [400] * 7
    cur = await db.execute(
        "SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = %s", (payment["id"],))
    assert (await cur.fetchone()) == (2500,)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "payment"),
        ({"payment": 5}, 400, "payment"),
        ({"payment": "pay_" + "Z" * 24}, 404, "payment"),
        ({"payment": "ch_123"}, 404, "payment"),
        ({"payment": "PAYMENT", "amount": 1.5}, 404, "payment"),
        ({"payment": "pay_" + "Z" * 24, "amount": 0}, 400, "amount"),
        ({"payment": "pay_" + "Z" * 24, "amount": 2.5}, 400, "amount"),
        ({"payment": "pay_" + "Z" * 24, "reason": "x"}, 400, "reason"),
    ],
)
async def test_refund_validation(
    api: Api, merchant: NewMerchant, body: dict[str, Any], status: int, param: str
) -> None:
    code, answer = await refund(api, merchant.api_key, body)
    assert code == status, answer
    assert answer["error"]["param"] == param


async def test_refund_answers_a_consistency_token(api: Api, merchant: NewMerchant) -> None:
    payment = await succeeded_payment(api, merchant, 500)
    resp = await api.client.post("/v1/refunds", data=json.dumps({"payment": payment["id"]}),
                                 headers=api.headers(merchant.api_key))
    assert resp.status == 201
    assert resp.headers[TOKEN]


async def test_an_expired_refund_key_names_a_new_refund(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    payment = await succeeded_payment(api, merchant, 900)
    key = idempotency_key()
    headers = api.headers(merchant.api_key, key)
    first = await api.client.post("/v1/refunds", headers=headers,
                                  data=json.dumps({"payment": payment["id"], "amount": 100}))
    first_id = (await first.json())["id"]
    await db.execute(
        "UPDATE refunds SET created_at = created_at - make_interval(secs => %s) WHERE id = %s",
        (settings.idempotency_ttl_seconds + 60, first_id),
    )
    await forget_key(settings, merchant.id, key)
    second = await api.client.post("/v1/refunds", headers=headers,
                                   data=json.dumps({"payment": payment["id"], "amount": 200}))
    body = await second.json()
    assert second.status == 201, body
    assert body["id"] != first_id and body["amount"] == 200

"""Payments over HTTP: create, validation, auth, merchant isolation, reads, cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from api.merchants import NewMerchant
from api.state import METRICS
from testkit.rows import create_merchant
from tests.integration.api.api_helpers import TOKEN, Api, payment_body, payment_row, succeed_payment

pytestmark = pytest.mark.own_database


async def test_create_answers_the_payment_object(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    status, body, headers = await api.create_payment(
        merchant.api_key, payment_body(amount=1999, currency="JPY", metadata={"k": "v"})
    )
    assert status == 201
    assert body["id"].startswith("pay_")
    assert body == {
        "id": body["id"],
        "object": "payment",
        "amount": 1999,
        "currency": "jpy",
        "status": "pending",
        "customer": "cus_test",
        "payment_method": "pm_card_visa",
        "description": "integration test",
        "metadata": {"k": "v"},
        "amount_refunded": 0,
        "failure_code": None,
        "failure_message": None,
        "created": body["created"],
    }
    assert isinstance(body["created"], int)
    assert headers[TOKEN]
    row = await payment_row(db, body["id"])
    assert row["merchant_id"] == merchant.id
    assert row["status"] == "pending"
    assert row["amount"] == 1999


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (payment_body(amount=10.5), "amount"),
        (payment_body(amount=10.0), "amount"),
        (payment_body(amount=-5), "amount"),
        (payment_body(amount=0), "amount"),
        (payment_body(amount=100_000_000), "amount"),
        (payment_body(amount="100"), "amount"),
        (payment_body(amount=True), "amount"),
        (payment_body(amount=None), "amount"),
        (payment_body(currency="xyz"), "currency"),
        (payment_body(currency=None), "currency"),
        (payment_body(currency=7), "currency"),
        (payment_body(customer=""), "customer"),
        (payment_body(customer="a\x00b"), "customer"),
        (payment_body(customer="x" * 256), "customer"),
        (payment_body(payment_method=None), "payment_method"),
        (payment_body(description=5), "description"),
        (payment_body(metadata=[]), "metadata"),
        (payment_body(metadata={"k": 1}), "metadata[k]"),
        (payment_body(metadata={"k": "v" * 501}), "metadata[k]"),
        (payment_body(metadata={f"k{i}": "v" for i in range(51)}), "metadata"),
        (payment_body(metadata={"k" * 41: "v"}), "metadata"),
        (payment_body(colour="red"), "colour"),
    ],
)
async def test_invalid_fields_are_400_naming_the_param(
    api: Api, merchant: NewMerchant, body: dict[str, Any], param: str
) -> None:
    status, payload, _ = await api.create_payment(merchant.api_key, body)
    assert status == 400, payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["param"] == param
    assert payload["error"]["message"]
    assert payload["error"]["code"]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b'{"amount": NaN}', b'{"amount": 1', b"\xff\xfe", b"1" * 5000,
     b"[" * 100_00 + b"]" * 100_00],
)
async def test_non_json_bodies_are_400(api: Api, merchant: NewMerchant, raw: bytes) -> None:
    resp = await api.client.post("/v1/payments", data=raw, headers=api.headers(merchant.api_key))
    payload = await resp.json()
    assert resp.status == 400, payload
    assert payload["error"]["param"] == "body"


async def test_body_over_the_limit_is_413(api: Api, merchant: NewMerchant) -> None:
    big = payment_body(description="x" * (api.settings.max_body_bytes + 1))
    status, payload, _ = await api.create_payment(merchant.api_key, big)
    assert status == 413
    assert payload["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer sk_nope", "Basic Zm9vOmJhcg==", "sk_only"]
)
async def test_missing_or_bad_key_is_401(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in [("POST", "/v1/payments"), ("GET", "/v1/payments"),
                         ("GET", "/v1/balances"), ("POST", "/v1/refunds")]:
        resp = await api.client.request(method, path, headers=headers, data=b"{}")
        payload = await resp.json()
        assert resp.status == 401, (method, path, payload)
        assert payload["error"]["type"] == "authentication_error"


async def test_another_merchants_payment_is_404(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    other = await create_merchant(db, "Snooper")
    _, payment, headers = await api.create_payment(merchant.api_key)
    resp = await api.client.get(f"/v1/payments/{payment['id']}",
                                headers=api.headers(other.api_key, **{TOKEN: headers[TOKEN]}))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "resource_missing"
    resp = await api.client.post(f"/v1/payments/{payment['id']}/cancel",
                                 headers=api.headers(other.api_key))
    assert resp.status == 404
    resp = await api.client.post("/v1/refunds", data=json.dumps({"payment": payment["id"]}),
                                 headers=api.headers(other.api_key))
    assert resp.status == 404
    resp = await api.client.get("/v1/payments?limit=100", headers=api.headers(other.api_key))
    assert (await resp.json())["data"] == []
    # And its own still works.
    resp = await api.client.get(f"/v1/payments/{payment['id']}",
                                headers=api.headers(merchant.api_key, **{TOKEN: headers[TOKEN]}))
    assert resp.status == 200


@pytest.mark.parametrize("bad_id", ["nope", "pay_short", "pay_" + "x" * 24 + "%00", "pay_%F0"])
async def test_malformed_ids_are_404(api: Api, merchant: NewMerchant, bad_id: str) -> None:
    resp = await api.client.get(f"/v1/payments/{bad_id}", headers=api.headers(merchant.api_key))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "resource_missing"


async def test_read_with_the_consistency_token_always_finds_the_payment(
    api: Api, merchant: NewMerchant
) -> None:
    async def create_then_read(i: int) -> None:
        status, created, headers = await api.create_payment(
            merchant.api_key, payment_body(amount=100 + i)
        )
        assert status == 201
        resp = await api.client.get(
            f"/v1/payments/{created['id']}",
            headers=api.headers(merchant.api_key, **{TOKEN: headers[TOKEN]}),
        )
        assert resp.status == 200, await resp.text()
        assert await resp.json() == created

    for batch in range(5):
        await asyncio.gather(*(create_then_read(batch * 10 + i) for i in range(10)))


async def test_a_token_no_replica_has_reached_falls_back_to_the_primary(
    api: Api, merchant: NewMerchant
) -> None:
    _, created, _ = await api.create_payment(merchant.api_key)
    fallbacks = api.app[METRICS].replica_fallbacks.labels("lagging")
    before = fallbacks._value.get()
    resp = await api.client.get(
        f"/v1/payments/{created['id']}",
        headers=api.headers(merchant.api_key, **{TOKEN: "FFFFFFFF/FFFFFFFF"}),
    )
    assert resp.status == 200
    assert (await resp.json())["id"] == created["id"]
    assert fallbacks._value.get() == before + 1


@pytest.mark.parametrize("token", ["yesterday", "0/", "1/2/3", "G/0", "123456789/0"])
async def test_malformed_consistency_token_is_400(
    api: Api, merchant: NewMerchant, token: str
) -> None:
    resp = await api.client.get("/v1/payments", headers=api.headers(merchant.api_key,
                                                                   **{TOKEN: token}))
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == TOKEN


async def test_list_is_newest_first_with_cursor_pagination(
    api: Api, merchant: NewMerchant
) -> None:
    ids = []
    token = ""
    for i in range(5):
        _, created, headers = await api.create_payment(merchant.api_key, payment_body(amount=i + 1))
        ids.append(created["id"])
        token = headers[TOKEN]
    newest_first = list(reversed(ids))
    seen: list[str] = []
    after = None
    while True:
        url = "/v1/payments?limit=2" + (f"&starting_after={after}" if after else "")
        resp = await api.client.get(url, headers=api.headers(merchant.api_key, **{TOKEN: token}))
        page = await resp.json()
        assert resp.status == 200, page
        assert page["object"] == "list" and page["url"] == "/v1/payments"
        seen += [p["id"] for p in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == newest_first


async def test_list_filters_by_status(api: Api, merchant: NewMerchant) -> None:
    _, keep, _ = await api.create_payment(merchant.api_key)
    _, gone, _ = await api.create_payment(merchant.api_key)
    resp = await api.client.post(f"/v1/payments/{gone['id']}/cancel",
                                 headers=api.headers(merchant.api_key))
    token = resp.headers[TOKEN]
    resp = await api.client.get("/v1/payments?status=canceled&limit=100",
                                headers=api.headers(merchant.api_key, **{TOKEN: token}))
    assert [p["id"] for p in (await resp.json())["data"]] == [gone["id"]]
    resp = await api.client.get("/v1/payments?status=pending&limit=100",
                                headers=api.headers(merchant.api_key, **{TOKEN: token}))
    assert keep["id"] in [p["id"] for p in (await resp.json())["data"]]


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
     ("status=paid", "status"), ("starting_after=pay_x", "starting_after"),
     ("starting_after=pay_" + "A" * 24, "starting_after")],
)
async def test_list_rejects_bad_parameters(
    api: Api, merchant: NewMerchant, query: str, param: str
) -> None:
    resp = await api.client.get(f"/v1/payments?{query}", headers=api.headers(merchant.api_key))
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == param


async def test_cancel_only_while_pending(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    path = f"/v1/payments/{payment['id']}/cancel"
    resp = await api.client.post(path, headers=api.headers(merchant.api_key))
    assert resp.status == 200
    assert resp.headers[TOKEN]
    assert (await resp.json())["status"] == "canceled"
    # A retried cancel answers the canceled payment again.
    resp = await api.client.post(path, headers=api.headers(merchant.api_key))
    assert resp.status == 200
    assert (await resp.json())["status"] == "canceled"
    assert (await payment_row(db, payment["id"]))["status"] == "canceled"

    _, done, _ = await api.create_payment(merchant.api_key)
    await succeed_payment(api, done["id"])
    resp = await api.client.post(f"/v1/payments/{done['id']}/cancel",
                                 headers=api.headers(merchant.api_key))
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "payment_unexpected_state"
    assert (await payment_row(db, done["id"]))["status"] == "succeeded"


async def test_cancel_refuses_parameters(api: Api, merchant: NewMerchant) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key)
    resp = await api.client.post(f"/v1/payments/{payment['id']}/cancel",
                                 data=json.dumps({"reason": "x"}),
                                 headers=api.headers(merchant.api_key))
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "reason"


async def test_unknown_routes_and_methods_are_stripe_shaped(api: Api) -> None:
    resp = await api.client.get("/v1/nothing")
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    resp = await api.client.delete("/v1/payments")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert (await resp.json())["error"]["code"] == "method_not_allowed"

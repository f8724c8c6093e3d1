"""GET /v1/payments/{id}/trace: the merchant's own payment's story from Postgres, 404 for others."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from api.merchants import NewMerchant
from paystream.settings import Settings
from testkit.rows import create_merchant
from tests.integration.api.api_helpers import TOKEN, Api, payment_body, start_api, succeed_payment

pytestmark = pytest.mark.own_database


@pytest.fixture(name="api", scope="module")
async def trace_api_fixture(settings: Settings) -> AsyncIterator[Api]:
    """The API on the module's own database. The stack's Debezium does not read that
    database, so nothing needs pausing: no worker will touch these payments."""
    client, app = await start_api(settings)
    try:
        yield Api(client, app, settings)
    finally:
        await client.close()


async def trace(api: Api, key: str, payment_id: str, token: str | None = None) -> tuple[int,
                                                                                          dict]:
    headers = api.headers(key, **({TOKEN: token} if token else {}))
    resp = await api.client.get(f"/v1/payments/{payment_id}/trace", headers=headers)
    return resp.status, await resp.json()


async def test_a_new_payment_waits_for_its_fraud_decision(
    api: Api, merchant: NewMerchant
) -> None:
    status, created, headers = await api.create_payment(merchant.api_key, payment_body())
    assert status == 201

    status, body = await trace(api, merchant.api_key, created["id"], headers[TOKEN])

    assert status == 200, body
    assert body["object"] == "payment_trace"
    assert (body["payment_id"], body["status"], body["terminal"]) == (created["id"],
                                                                      "pending", False)
    assert body["waiting_for"] == ["the fraud decision (the fraud stages have not decided yet)"]
    assert body["where"] == f"pending: waiting for {body['waiting_for'][0]}"
    assert [line["what"] for line in body["timeline"]] == ["payment created"]
    assert body["sources"]["postgres"] == "ok"
    assert body["sources"]["kafka"].startswith("not read by the API")
    assert body["facts"]["payment"]["id"] == created["id"]
    assert body["facts"]["fraud_decision"] is None
    assert "change_events" not in body["facts"]


async def test_a_payment_settled_by_stripes_webhook_shows_the_webhook_and_its_timings(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    status, created, _ = await api.create_payment(merchant.api_key, payment_body())
    assert status == 201
    await succeed_payment(api, created["id"])

    # The webhook answers no consistency token: the primary's position stands in for one.
    cur = await db.execute("SELECT pg_current_wal_lsn()::text")
    row = await cur.fetchone()
    assert row is not None
    status, body = await trace(api, merchant.api_key, created["id"], row[0])

    assert status == 200 and body["status"] == "succeeded" and body["terminal"]
    whats = [line["what"] for line in body["timeline"]]
    assert whats[0] == "payment created"
    assert "Stripe webhook payment_intent.succeeded received" in whats
    [webhook] = body["facts"]["stripe_webhooks"]
    assert webhook["outcome"] == "applied"
    written = next(leg for leg in body["path"] if leg["step"] == "status_written")
    assert written["at"] is not None and written["since_previous_ms"] >= 0
    # The workers never saw it (no CDC here): no journal yet, and it says so.
    assert body["waiting_for"] == ["the ledger journal of the succeeded payment"]


async def test_another_merchants_payment_is_404_like_a_missing_one(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    status, created, headers = await api.create_payment(merchant.api_key, payment_body())
    assert status == 201
    other = await create_merchant(db, "Other Shop")

    status, body = await trace(api, other.api_key, created["id"], headers[TOKEN])
    assert status == 404
    assert body["error"]["code"] == "resource_missing"
    assert body["error"]["message"] == f"No such payment: '{created['id']}'"

    status, missing = await trace(api, merchant.api_key, "pay_" + "0" * 24)
    assert status == 404 and missing["error"]["code"] == "resource_missing"
    status, _ = await trace(api, merchant.api_key, "not-an-id")
    assert status == 404


async def test_the_trace_needs_the_merchants_key(api: Api, merchant: NewMerchant) -> None:
    status, created, _ = await api.create_payment(merchant.api_key, payment_body())
    assert status == 201
    resp = await api.client.get(f"/v1/payments/{created['id']}/trace")
    assert resp.status == 401

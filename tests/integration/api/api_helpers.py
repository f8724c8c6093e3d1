"""Fixtures and helpers for the API's integration tests (imported by each test module).

Fixture functions are named ``*_fixture`` and registered under the short name
(``api``, ``db``, ``merchant``): a test module imports the function, pytest
finds it there, and the test's argument shadows no imported name.

The app runs in-process on the real stack (primary, replicas through NGINX,
Redis); every test gets a merchant of its own, so runs repeat on a database
that already holds data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
import stripe
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import eventually
from own_books import own_database

from api.app import create_app
from api.idempotency import redis_key
from api.merchants import INSERT_MERCHANT, NewMerchant
from paystream.domain.ids import new_id
from paystream.settings import Settings

TOKEN = "PayStream-Consistency-Token"
REPLAYED = "Idempotent-Replayed"


def payment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 1050,
        "currency": "usd",
        "customer": "cus_test",
        "payment_method": "pm_card_visa",
        "description": "integration test",
        "metadata": {"order": "o-1"},
    }
    body.update(overrides)
    return body


@dataclasses.dataclass(frozen=True)
class Api:
    """A running in-process app and a client for it."""

    client: TestClient
    app: web.Application
    settings: Settings

    def headers(self, key: str | None, idempotency_key: str | None = None,
                **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    async def create_payment(self, key: str, body: dict[str, Any] | None = None, *,
                             idempotency_key: str | None = None) -> tuple[int, dict, Any]:
        resp = await self.client.post(
            "/v1/payments",
            data=json.dumps(payment_body() if body is None else body),
            headers=self.headers(key, idempotency_key),
        )
        return resp.status, await resp.json(), resp.headers


@dataclasses.dataclass(frozen=True)
class MerchantCreds:
    id: str
    api_key: str
    webhook_secret: str


async def start_api(settings: Settings) -> tuple[TestClient, web.Application]:
    app = create_app(settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, app


# connectors/payments.json, under the name connectors/register.py gives it.
CONNECTOR = "paystream-payments"


@contextlib.asynccontextmanager
async def cdc_paused() -> AsyncIterator[None]:
    """The Debezium connector paused: the stack's worker leaves the payments alone.

    These tests play Stripe (signed webhooks) on payments they have just created.
    The stack's worker would race them: fraud-block the payment (every test
    payment uses pm_card_visa, over the per-method velocity limit) or submit it
    to localstripe first, and the webhook would find it already moved on. The
    changes wait in the replication slot and stream once resumed. Without
    CONNECT_URL (no stack environment) nothing is paused.
    """
    url = os.environ.get("CONNECT_URL")
    if not url:
        yield
        return
    connector = f"{url}/connectors/{CONNECTOR}"
    # Connect answers a PUT without a JSON content type 415.
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:

        async def paused() -> bool:
            async with http.get(f"{connector}/status") as resp:
                status = await resp.json()
            states = [status["connector"]["state"], *(t["state"] for t in status["tasks"])]
            return all(state == "PAUSED" for state in states)

        async with http.put(f"{connector}/pause") as resp:
            assert resp.status == 202, await resp.text()
        try:
            await eventually(paused, what="Debezium connector paused")
            yield
        finally:
            async with http.put(f"{connector}/resume") as resp:
                assert resp.status == 202, await resp.text()


@pytest.fixture(name="settings", scope="module")
async def own_database_fixture(settings: Settings) -> AsyncIterator[Settings]:
    """The stack's settings on a database of the module's own (tests/own_books.py's),
    for the modules that play Stripe: a payment they mark succeeded through a signed
    webhook names a PaymentIntent the stack's Stripe never made, which `paystream
    reconcile` would report in the stack's books for ever. Replicas and NGINX serve
    it too (they copy every database). Dropped with the module."""
    async with own_database(settings) as own:
        yield own


@pytest.fixture(name="api", scope="module")
async def api_fixture(settings: Settings) -> AsyncIterator[Api]:
    """The API on the stack's settings, shared by a module's tests, with the stack's
    worker kept off their payments (cdc_paused)."""
    client, app = await start_api(settings)
    try:
        async with cdc_paused():
            yield Api(client, app, settings)
    finally:
        await client.close()


@pytest.fixture(name="db", scope="module")
async def db_fixture(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection to the primary, to look at what the API wrote."""
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def new_merchant(db: psycopg.AsyncConnection, name: str = "Test Shop") -> MerchantCreds:
    merchant = NewMerchant(name=name)
    await db.execute(INSERT_MERCHANT, merchant.row())
    return MerchantCreds(merchant.id, merchant.api_key, merchant.webhook_secret)


@pytest.fixture(name="merchant")
async def merchant_fixture(db: psycopg.AsyncConnection) -> MerchantCreds:
    return await new_merchant(db)


async def count_payments(db: psycopg.AsyncConnection, merchant_id: str, key: str) -> int:
    cur = await db.execute(
        "SELECT count(*) FROM payments WHERE merchant_id = %s AND idempotency_key = %s",
        (merchant_id, key),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def payment_row(db: psycopg.AsyncConnection, payment_id: str) -> dict[str, Any]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    await cur.execute("SELECT * FROM payments WHERE id = %s", (payment_id,))
    row = await cur.fetchone()
    assert row is not None, payment_id
    return row


def idempotency_key() -> str:
    return new_id("idem")


def stripe_event(kind: str, obj: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """A Stripe event body as Stripe sends it."""
    event = {
        "id": event_id or new_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


def payment_intent(payment_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", new_id("pi")),
        "object": "payment_intent",
        "status": status,
        "metadata": {"payment_id": payment_id},
        **extra,
    }


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Signed with the stripe SDK's own helper, exactly as Stripe signs deliveries."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp
    )


async def deliver(api: Api, payload: bytes, signature: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    resp = await api.client.post("/v1/webhooks/stripe", data=payload, headers=headers)
    return resp.status, await resp.json()


async def succeed_payment(api: Api, payment_id: str) -> None:
    """Make a payment succeeded the way Stripe would tell us: a signed webhook."""
    payload = stripe_event("payment_intent.succeeded", payment_intent(payment_id, "succeeded"))
    status, body = await deliver(
        api, payload, stripe_signature(payload, api.settings.stripe_webhook_secrets[0])
    )
    assert (status, body["outcome"]) == (200, "applied"), body


async def flush_redis(settings: Settings) -> None:
    """FLUSHDB on the configured Redis database: every lock and cached answer is gone."""
    client = aioredis.from_url(settings.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def forget_key(settings: Settings, merchant_id: str, key: str) -> None:
    """Drop one Idempotency-Key from Redis, as its TTL would."""
    client = aioredis.from_url(settings.redis_url)
    try:
        await client.delete(redis_key(merchant_id, key))
    finally:
        await client.aclose()

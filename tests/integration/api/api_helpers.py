"""Helpers of the API's integration tests: the in-process app and its client, request bodies,
Stripe's signed events, Redis clean-up. Their fixtures are in tests/integration/conftest.py.

The app runs in-process on the real stack (primary, replicas through NGINX,
Redis); every test gets a merchant of its own, so runs repeat on a database
that already holds data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import psycopg
import redis.asyncio as aioredis
import stripe
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.idempotency import redis_key
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


async def start_api(settings: Settings) -> tuple[TestClient, web.Application]:
    app = create_app(settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, app


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

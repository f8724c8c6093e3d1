"""Probes, metrics, the OpenAPI document, rate limits, balances, and a primary outage."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket

import psycopg

from api.merchants import NewMerchant
from api.routes import setup_routes
from api.state import PRIMARY, REPLICA
from paystream.domain.ledger import Journal, journal_for_payment, journal_for_refund
from paystream.settings import Settings
from tests.integration.api.api_helpers import (
    TOKEN,
    Api,
    deliver,
    idempotency_key,
    start_api,
    stripe_event,
    stripe_signature,
)


async def test_probes(api: Api) -> None:
    for path in ("/health", "/live"):
        resp = await api.client.get(path)
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    resp = await api.client.get("/ready")
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {"status": "ready",
                    "checks": {"primary": "ok", "redis": "ok", "replicas": "ok"}}


async def test_reads_go_to_the_replicas_writes_to_the_primary(api: Api) -> None:
    for key, standby in ((REPLICA, True), (PRIMARY, False)):
        async with api.app[key].connection() as conn:
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            assert await cur.fetchone() == (standby,)


async def test_metrics_count_requests_replays_and_webhooks(
    api: Api, merchant: NewMerchant
) -> None:
    key = idempotency_key()
    await api.create_payment(merchant.api_key, idempotency_key=key)
    await api.create_payment(merchant.api_key, idempotency_key=key)
    payload = stripe_event("customer.updated", {"id": "cus_1"})
    await deliver(api, payload, stripe_signature(payload, api.settings.stripe_webhook_secrets[0]))
    await deliver(api, payload, "t=1,v1=00")

    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert ('paystream_api_requests_total{method="POST",route="/v1/payments",status="201"}'
            in text)
    assert 'paystream_api_request_duration_seconds_bucket{' in text
    assert 'paystream_api_idempotent_replays_total{source="redis"}' in text
    assert 'paystream_api_stripe_webhook_events_total{outcome="ignored"}' in text
    assert 'paystream_api_stripe_webhook_events_total{outcome="invalid_signature"}' in text
    # Route templates, not raw paths: one series however many ids are read.
    assert "pay_" not in text


async def test_openapi_describes_every_route(api: Api) -> None:
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    from aiohttp import web

    probe = web.Application()
    setup_routes(probe)
    for route in probe.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        assert route.method.lower() in doc["paths"][path], (route.method, path)


async def test_rate_limit_answers_429_with_retry_after(
    merchant: NewMerchant, settings: Settings
) -> None:
    limited = dataclasses.replace(settings, rate_limit_per_second=3)
    client, app = await start_api(limited)
    try:
        api = Api(client, app, limited)
        # One burst: it lands within one second, or straddles two at most.
        responses = await asyncio.gather(
            *(client.get("/v1/balances", headers=api.headers(merchant.api_key))
              for _ in range(12))
        )
        statuses = [r.status for r in responses]
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) <= 6
        for resp in responses:
            if resp.status == 429:
                assert resp.headers["Retry-After"] == "1"
                assert (await resp.json())["error"]["type"] == "rate_limit_error"
        # Probes are never limited.
        assert (await client.get("/health")).status == 200
    finally:
        await client.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_primary_down_is_503_with_retry_after(
    merchant: NewMerchant, settings: Settings
) -> None:
    port = _closed_port()
    down = dataclasses.replace(
        settings,
        database_url=f"postgresql://paystream:x@127.0.0.1:{port}/paystream?connect_timeout=1",
    )
    client, app = await start_api(down)
    try:
        api = Api(client, app, down)
        status, body, headers = await api.create_payment(merchant.api_key)
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert body["error"]["type"] == "api_error"
        payload = stripe_event("customer.updated", {"id": "cus_1"})
        resp = await client.post(
            "/v1/webhooks/stripe", data=payload,
            headers={"Stripe-Signature": stripe_signature(payload,
                                                          down.stripe_webhook_secrets[0])})
        assert resp.status == 503  # Stripe will redeliver later
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await client.get("/health")).status == 200
    finally:
        await client.close()


async def test_balances_from_the_ledger(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    # Post journals as the ledger agent does (the API only reads them). They have no
    # payments or refunds behind them: removed at the end, or reconcile reports them.
    journals = [
        journal_for_payment("pay_balance_a", merchant.id, 5000, "usd"),
        journal_for_payment("pay_balance_b", merchant.id, 700, "jpy"),
        journal_for_refund("re_balance_a", "pay_balance_a", merchant.id, 1200, "usd"),
    ]
    posted = [f"{j.journal_id}_{merchant.id}" for j in journals]
    try:
        await _post(db, journals, merchant.id)
        await _check_balances(api, db, merchant)
    finally:
        await _remove_journals(posted)


async def _post(db: psycopg.AsyncConnection, journals: list[Journal], merchant_id: str) -> None:
    async with db.transaction():
        for j in journals:
            await db.execute(
                "INSERT INTO ledger_journals (id, source_type, source_id, payment_id, "
                "merchant_id, currency) VALUES (%s, %s, %s, %s, %s, %s)",
                (f"{j.journal_id}_{merchant_id}", j.source_type, f"{j.source_id}_{merchant_id}",
                 j.payment_id, j.merchant_id, j.currency),
            )
            for e in j.entries:
                await db.execute(
                    "INSERT INTO ledger_entries (journal_id, merchant_id, account, direction, "
                    "amount, currency) VALUES (%s, %s, %s, %s, %s, %s)",
                    (f"{j.journal_id}_{merchant_id}", merchant_id, e.account, e.direction,
                     e.amount, e.currency),
                )


async def _check_balances(api: Api, db: psycopg.AsyncConnection,
                          merchant: NewMerchant) -> None:
    cur = await db.execute("SELECT pg_current_wal_lsn()::text")
    row = await cur.fetchone()
    assert row is not None
    resp = await api.client.get("/v1/balances",
                                headers=api.headers(merchant.api_key, **{TOKEN: row[0]}))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["object"] == "balance"
    assert body["available"] == [{"currency": "jpy", "amount": 700},
                                 {"currency": "usd", "amount": 3800}]
    accounts = {(a["account"], a["currency"]): a["balance"] for a in body["accounts"]}
    assert accounts == {
        (f"merchant_available:{merchant.id}:usd", "usd"): -3800,
        ("stripe_clearing:usd", "usd"): 3800,
        (f"merchant_available:{merchant.id}:jpy", "jpy"): -700,
        ("stripe_clearing:jpy", "jpy"): 700,
    }


async def _remove_journals(ids: list[str]) -> None:
    """A superuser bypassing the ledger's append-only triggers, as only one can."""
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_ADMIN_URL"],
                                                     autocommit=True) as admin:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("DELETE FROM ledger_entries WHERE journal_id = ANY(%s)", (ids,))
            await admin.execute("DELETE FROM ledger_journals WHERE id = ANY(%s)", (ids,))

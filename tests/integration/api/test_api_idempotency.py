"""Idempotency-Key: one payment per key whatever the concurrency, the retries or Redis do."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket

import psycopg
import pytest
import redis.asyncio as aioredis

from api.errors import IdempotencyKeyInUse
from api.idempotency import (
    LOCK_SECONDS,
    CachedResponse,
    Lock,
    Outcome,
    redis_key,
    run_idempotent,
)
from api.merchants import NewMerchant
from api.payments import parse_create
from api.state import IDEMPOTENCY, METRICS
from paystream.settings import Settings
from testkit.waiting import eventually
from tests.integration.api.api_helpers import (
    REPLAYED,
    TOKEN,
    Api,
    count_payments,
    flush_redis,
    forget_key,
    idempotency_key,
    payment_body,
    start_api,
    succeed_payment,
)

pytestmark = pytest.mark.own_database


async def test_fifty_concurrent_creates_with_one_key_make_one_row(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    key = idempotency_key()
    body = payment_body(amount=4242)
    results = await asyncio.gather(
        *(api.create_payment(merchant.api_key, body, idempotency_key=key) for _ in range(50))
    )

    assert await count_payments(db, merchant.id, key) == 1
    created = [(s, b, h) for s, b, h in results if s == 201]
    assert created, "at least the first request must succeed"
    ids = {b["id"] for _, b, _ in created}
    assert len(ids) == 1
    # Exactly one original; all other 201s are replays of it.
    assert sum(1 for _, _, h in created if h.get(REPLAYED) != "true") == 1
    for status, payload, _ in results:
        assert status in (201, 409), (status, payload)
        if status == 409:
            assert payload["error"]["type"] == "idempotency_error"
            assert payload["error"]["code"] == "idempotency_key_in_use"
    bodies = {json.dumps(b, sort_keys=True) for _, b, _ in created}
    assert len(bodies) == 1, "replays repeat the first answer byte for byte"


async def test_retry_replays_first_answer(api: Api, merchant: NewMerchant) -> None:
    key = idempotency_key()
    first = await api.create_payment(merchant.api_key, idempotency_key=key)
    again = await api.create_payment(merchant.api_key, idempotency_key=key)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert REPLAYED not in first[2]
    assert again[2][REPLAYED] == "true"
    assert again[2][TOKEN]


async def test_same_key_other_body_is_an_idempotency_error(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    key = idempotency_key()
    status, _, _ = await api.create_payment(merchant.api_key, idempotency_key=key)
    assert status == 201
    status, body, _ = await api.create_payment(
        merchant.api_key, payment_body(amount=9999), idempotency_key=key
    )
    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert body["error"]["param"] == "Idempotency-Key"
    assert await count_payments(db, merchant.id, key) == 1


async def test_redis_flushed_between_identical_requests_still_one_row(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    key = idempotency_key()
    status, first, _ = await api.create_payment(merchant.api_key, idempotency_key=key)
    assert status == 201
    await flush_redis(settings)

    status, again, headers = await api.create_payment(merchant.api_key, idempotency_key=key)
    assert status == 201
    assert again == first
    assert headers[REPLAYED] == "true"
    assert await count_payments(db, merchant.id, key) == 1


async def test_redis_flushed_then_other_body_is_still_refused(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    key = idempotency_key()
    assert (await api.create_payment(merchant.api_key, idempotency_key=key))[0] == 201
    await flush_redis(settings)
    status, body, _ = await api.create_payment(
        merchant.api_key, payment_body(currency="eur"), idempotency_key=key
    )
    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert await count_payments(db, merchant.id, key) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_redis_down_postgres_is_the_last_line(
    merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    # A real outage: nothing listens on that port.
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    client, app = await start_api(down)
    try:
        api = Api(client, app, down)
        key = idempotency_key()
        first = await api.create_payment(merchant.api_key, idempotency_key=key)
        results = await asyncio.gather(
            *(api.create_payment(merchant.api_key, idempotency_key=key) for _ in range(10))
        )
        assert first[0] == 201 and REPLAYED not in first[2]
        for status, body, headers in results:
            assert status == 201
            assert body == first[1]
            assert headers[REPLAYED] == "true"
        other = await api.create_payment(
            merchant.api_key, payment_body(amount=1), idempotency_key=key
        )
        assert other[0] == 400 and other[1]["error"]["type"] == "idempotency_error"
        assert await count_payments(db, merchant.id, key) == 1
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["checks"]["redis"].startswith("unavailable")
    finally:
        await client.close()


async def test_in_flight_duplicate_gets_409(api: Api, merchant: NewMerchant) -> None:
    key = idempotency_key()
    body = payment_body(amount=777)
    store = api.app[IDEMPOTENCY]
    # Hold the key's lock as a first request still running would.
    lock = await store.begin(merchant.id, key, parse_create(body).fingerprint())
    assert isinstance(lock, Lock)
    status, payload, _ = await api.create_payment(merchant.api_key, body, idempotency_key=key)
    assert status == 409
    assert payload["error"] == {
        "type": "idempotency_error",
        "code": "idempotency_key_in_use",
        "message": payload["error"]["message"],
        "param": "Idempotency-Key",
    }
    await store.release(lock)
    status, _, _ = await api.create_payment(merchant.api_key, body, idempotency_key=key)
    assert status == 201


async def test_cached_answer_expires_with_the_configured_ttl(
    api: Api, merchant: NewMerchant, settings: Settings
) -> None:
    key = idempotency_key()
    assert (await api.create_payment(merchant.api_key, idempotency_key=key))[0] == 201
    client = aioredis.from_url(settings.redis_url)
    try:
        ttl = await client.ttl(redis_key(merchant.id, key))
    finally:
        await client.aclose()
    assert 0 < ttl <= settings.idempotency_ttl_seconds


async def test_keys_are_scoped_per_merchant(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection
) -> None:
    from testkit.rows import create_merchant

    other = await create_merchant(db, "Other Shop")
    key = idempotency_key()
    a = await api.create_payment(merchant.api_key, idempotency_key=key)
    b = await api.create_payment(other.api_key, idempotency_key=key)
    assert a[0] == b[0] == 201
    assert a[1]["id"] != b[1]["id"]
    assert REPLAYED not in b[2]


async def test_invalid_keys_are_refused(api: Api, merchant: NewMerchant) -> None:
    status, body, _ = await api.create_payment(merchant.api_key, idempotency_key="k" * 256)
    assert status == 400
    assert body["error"]["param"] == "Idempotency-Key"


async def test_refund_retry_replays_and_makes_one_refund(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    _, payment, _ = await api.create_payment(merchant.api_key, payment_body(amount=5000))
    await succeed_payment(api, payment["id"])
    key = idempotency_key()
    body = json.dumps({"payment": payment["id"], "amount": 1000})
    headers = api.headers(merchant.api_key, key)
    first = await api.client.post("/v1/refunds", data=body, headers=headers)
    assert first.status == 201
    await flush_redis(settings)
    again = await api.client.post("/v1/refunds", data=body, headers=headers)
    assert again.status == 201
    assert again.headers[REPLAYED] == "true"
    assert await again.json() == await first.json()
    cur = await db.execute("SELECT count(*) FROM refunds WHERE payment_id = %s", (payment["id"],))
    assert (await cur.fetchone()) == (1,)


async def test_an_expired_key_names_a_new_request(
    api: Api, merchant: NewMerchant, db: psycopg.AsyncConnection, settings: Settings
) -> None:
    key = idempotency_key()
    _, first, _ = await api.create_payment(merchant.api_key, idempotency_key=key)
    # Age the first use past the TTL, in Postgres and in Redis alike.
    await db.execute(
        "UPDATE payments SET created_at = created_at - make_interval(secs => %s) WHERE id = %s",
        (settings.idempotency_ttl_seconds + 60, first["id"]),
    )
    await forget_key(settings, merchant.id, key)

    status, second, headers = await api.create_payment(
        merchant.api_key, payment_body(amount=2), idempotency_key=key
    )
    assert status == 201, second
    assert REPLAYED not in headers
    assert second["id"] != first["id"]
    assert await count_payments(db, merchant.id, key) == 1
    cur = await db.execute("SELECT idempotency_key FROM payments WHERE id = %s", (first["id"],))
    assert await cur.fetchone() == (None,)


async def test_a_dead_requests_lock_frees_its_key_within_the_lease(
    api: Api, merchant: NewMerchant
) -> None:
    key = idempotency_key()
    body = payment_body(amount=778)
    # A request that took the lock and died (kill -9): nobody renews or releases it.
    lock = await api.app[IDEMPOTENCY].begin(merchant.id, key, parse_create(body).fingerprint())
    assert isinstance(lock, Lock)
    assert (await api.create_payment(merchant.api_key, body, idempotency_key=key))[0] == 409

    async def retried() -> int | None:
        status, _, _ = await api.create_payment(merchant.api_key, body, idempotency_key=key)
        return status if status != 409 else None

    assert await eventually(retried, timeout=LOCK_SECONDS + 5, interval=0.5,
                            what="key freed after its holder died") == 201


async def test_a_live_request_keeps_its_lock_past_the_lease(
    api: Api, merchant: NewMerchant
) -> None:
    store = api.app[IDEMPOTENCY]
    key = idempotency_key()
    rkey = redis_key(merchant.id, key)
    release = asyncio.Event()
    ttls: list[int] = []

    async def slow_write() -> Outcome:
        await release.wait()
        return Outcome(201, {"id": "pay_slow"}, "t")

    running = asyncio.create_task(run_idempotent(
        store, api.app[METRICS], merchant_id=merchant.id, idempotency_key=key,
        fingerprint="fp", action=slow_write))

    async def renewed() -> bool:
        # The lease's remaining time went down, then back up: the request renewed it.
        ttls.append(await store.redis.pttl(rkey))
        return len(ttls) > 1 and ttls[-1] > ttls[-2] > 0

    try:
        for _ in range(3):  # renewed again and again, past the lease's own length
            ttls.clear()
            await eventually(renewed, timeout=LOCK_SECONDS, interval=0.1, what="lock renewed")
        with pytest.raises(IdempotencyKeyInUse):
            await store.begin(merchant.id, key, "fp")
    finally:
        release.set()
    assert (await running).status == 201
    # Done: the answer replaced the lock, and nothing renews it any more.
    assert isinstance(await store.begin(merchant.id, key, "fp"), CachedResponse)

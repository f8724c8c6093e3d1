"""After a Stripe outage, a new payment does not wait behind it.

The stack's Stripe peer is frozen (SIGSTOP: calls hang until the client's timeout,
the worst kind of outage) for OUTAGE_SECONDS under a steady load through the API,
then thawed. A payment created right after must succeed within 30 s, although the
breaker opened and the outage left a backlog; then every payment of the load is
terminal, succeeded, with exactly one PaymentIntent at the peer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest

from paystream.settings import Settings
from stack.chaos.driving import WORKER_ENV, restarted_with_worker_env
from testkit.rows import create_merchant_sync
from testkit.stack import make, pids, run_stack
from testkit.waiting import eventually

pytestmark = pytest.mark.disruptive

RATE = 8.0
OUTAGE_SECONDS = 60.0
NEW_PAYMENT_WITHIN_SECONDS = 30.0
TERMINAL = {"succeeded", "failed", "blocked", "canceled"}


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, key: str) -> None:
        self.http, self.base, self.key = http, base, key

    async def create(self, customer: str) -> str:
        """A payment's id; retried with its Idempotency-Key through transient errors."""
        key = "outage-" + secrets.token_hex(8)
        for _ in range(60):
            try:
                async with self.http.post(
                        f"{self.base}/v1/payments",
                        json={"amount": 1234, "currency": "usd", "customer": customer,
                              "payment_method": "pm_card_visa"},
                        headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": key},
                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    if resp.status == 201 or resp.status == 200:
                        return str((await resp.json())["id"])
                    assert resp.status in (409, 429) or resp.status >= 500, await resp.text()
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
        raise AssertionError("the API never accepted the payment")

    async def status(self, payment_id: str) -> str | None:
        async with self.http.get(f"{self.base}/v1/payments/{payment_id}",
                                 headers={"Authorization": f"Bearer {self.key}"}) as resp:
            return str((await resp.json())["status"]) if resp.status == 200 else None


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    # Every payment uses the test card pm_card_visa, which the default velocity rule
    # blocks after a few a minute: as in `make chaos`, every worker (two in ha) runs
    # with it raised.
    run_stack("stop", *restarted_with_worker_env(os.environ.get("STACK_TOPOLOGY", "small")))
    up = make("up", timeout=600, env=WORKER_ENV)
    assert up.returncode == 0, up.stdout + up.stderr
    merchant = create_merchant_sync(os.environ["DATABASE_URL"], "stripe-outage")
    async with aiohttp.ClientSession() as http:
        yield Api(http, os.environ["API_URL"], merchant.api_key)


async def _load(api: Api, ids: list[str], stop: asyncio.Event) -> None:
    tasks: list[asyncio.Task[None]] = []

    async def one(n: int) -> None:
        ids.append(await api.create(f"outage-{n}"))

    start, n = time.monotonic(), 0
    while not stop.is_set():
        tasks.append(asyncio.create_task(one(n)))
        n += 1
        await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
    await asyncio.gather(*tasks)


async def _intents_per_payment(settings: Settings, wanted: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    after: str | None = None
    headers = {"Authorization": f"Bearer {settings.stripe_api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            params = {"limit": "100", **({"starting_after": after} if after else {})}
            async with http.get(f"{settings.stripe_api_base}/v1/payment_intents",
                                params=params) as resp:
                page: dict[str, Any] = await resp.json()
            for pi in page["data"]:
                payment_id = (pi.get("metadata") or {}).get("payment_id")
                if payment_id in wanted:
                    counts[payment_id] = counts.get(payment_id, 0) + 1
            if not page.get("has_more") or not page["data"]:
                return counts
            after = page["data"][-1]["id"]


async def test_a_payment_made_after_a_stripe_outage_succeeds_within_30s(
        api: Api, settings: Settings) -> None:
    peer = pids().get("localstripe")
    assert peer, "the stack's localstripe is not running"
    ids: list[str] = []
    stop = asyncio.Event()
    load = asyncio.create_task(_load(api, ids, stop))
    try:
        await asyncio.sleep(5)  # load before the outage
        os.kill(peer, signal.SIGSTOP)
        try:
            await asyncio.sleep(OUTAGE_SECONDS)
        finally:
            os.kill(peer, signal.SIGCONT)
        thawed = time.monotonic()
        probe = await api.create("outage-probe")

        async def probe_terminal() -> str | None:
            status = await api.status(probe)
            return status if status in TERMINAL else None

        status = await eventually(probe_terminal, timeout=120, interval=0.5,
                                  what="the payment made after the outage terminal")
        took = time.monotonic() - thawed
        print(f"payment made after a {OUTAGE_SECONDS:.0f}s outage ({len(ids)} made so far): "
              f"{status} in {took:.1f}s")
        assert status == "succeeded"
        assert took < NEW_PAYMENT_WITHIN_SECONDS
    finally:
        stop.set()
        await load

    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as db:
        async def all_terminal() -> dict[str, str] | None:
            rows = await (await db.execute("SELECT id, status FROM payments WHERE id = ANY(%s)",
                                           (ids,))).fetchall()
            statuses = {str(i): str(s) for i, s in rows}
            return statuses if len(statuses) == len(ids) and all(
                s in TERMINAL for s in statuses.values()) else None

        statuses = await eventually(all_terminal, timeout=300, interval=2,
                                    what="every payment of the load terminal")
    assert set(statuses.values()) == {"succeeded"}, statuses
    intents = await _intents_per_payment(settings, set(ids) | {probe})
    assert {i: intents.get(i, 0) for i in ids if intents.get(i, 0) != 1} == {}
    assert intents.get(probe) == 1

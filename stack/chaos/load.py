"""The load: payments at a steady rate through the API, as a careful merchant sends them
(every retry reuses its Idempotency-Key), some declined, some partly refunded."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TERMINAL = ("succeeded", "failed", "canceled", "blocked")
DECLINED_CARD = "pm_card_chargeCustomerFail"


@dataclass
class Order:
    """One payment the client wants made, and maybe partly refunded."""

    key: str
    amount: int
    declined: bool
    refund: int  # 0: no refund
    payment_id: str | None = None
    refund_id: str | None = None
    failed_for_good: str | None = None
    placed_at: float | None = None  # wall clock, to match the database's timestamps


@dataclass
class Client:
    """The API as a careful merchant uses it: retries reuse the Idempotency-Key."""

    base: str
    api_key: str
    http: aiohttp.ClientSession
    # (time, ok) of every attempt, for "seconds until 2xx again".
    attempts: list[tuple[float, bool]] = field(default_factory=list)
    transient: int = 0

    async def post(self, path: str, body: dict[str, Any], key: str,
                   deadline: float) -> tuple[int, dict[str, Any]]:
        delay = 0.2
        while True:
            try:
                async with self.http.post(
                        self.base + path, json=body,
                        headers={"Authorization": f"Bearer {self.api_key}",
                                 "Idempotency-Key": key},
                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    payload = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                status, payload = 0, {}
            ok = 200 <= status < 300
            # 409: the key is in flight (a retry raced its own first attempt);
            # 429 and 5xx: back off and try again, as Stripe's clients do.
            retry = status in (0, 409, 429) or status >= 500
            self.attempts.append((time.monotonic(), ok or not retry))
            if not retry or time.monotonic() > deadline:
                return status, payload
            self.transient += 1
            await asyncio.sleep(delay + random.random() * delay)
            delay = min(delay * 2, 2.0)

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            async with self.http.get(self.base + path,
                                     headers={"Authorization": f"Bearer {self.api_key}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return 0, {}


async def place(client: Client, order: Order, customer: str, patience: float) -> None:
    body = {"amount": order.amount, "currency": "usd", "customer": customer,
            "payment_method": DECLINED_CARD if order.declined else "pm_card_visa",
            "description": "chaos"}
    status, payload = await client.post("/v1/payments", body, order.key,
                                        time.monotonic() + patience)
    if status != 201:
        order.failed_for_good = f"create {status}: {payload.get('error')}"
        return
    order.payment_id = payload["id"]
    if not order.refund:
        return
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        status, payment = await client.get(f"/v1/payments/{order.payment_id}")
        if status == 200 and payment.get("status") in TERMINAL:
            break
        await asyncio.sleep(1.0)
    else:
        return  # never succeeded in time: no refund to ask for (the checks see it)
    if payment["status"] != "succeeded":
        return
    status, payload = await client.post(
        "/v1/refunds", {"payment": order.payment_id, "amount": order.refund},
        order.key + "-refund", time.monotonic() + patience)
    if status == 201:
        order.refund_id = payload["id"]
    else:
        order.failed_for_good = f"refund {status}: {payload.get('error')}"


@dataclass
class Load:
    """Orders at a steady rate until stopped."""

    client: Client
    rate: float
    patience: float
    declines: float = 0.1
    refunds: float = 0.1
    orders: list[Order] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, run_id: str) -> None:
        n = 0
        start = time.monotonic()
        while not self._stop.is_set():
            amount = random.randint(100, 9_999)
            declined = random.random() < self.declines
            refund = random.randint(1, amount) if not declined and \
                random.random() < self.refunds else 0
            order = Order(f"chaos-{run_id}-{n}", amount, declined, refund,
                          placed_at=time.time())
            self.orders.append(order)
            self.tasks.append(asyncio.create_task(
                place(self.client, order, f"chaos-{run_id}-{n}", self.patience)))
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.rate - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()


async def probe_payment(client: Client, timeout: float) -> tuple[float | None, str | None]:
    """(seconds until a payment created now is terminal, its status); (None, last status
    seen) when it is not terminal within timeout. Only "succeeded" is a recovery: a
    blocked probe means the worker lost the load's fraud setting."""
    started = time.monotonic()
    key = "chaos-probe-" + secrets.token_hex(6)
    status, payload = await client.post(
        "/v1/payments", {"amount": 1234, "currency": "usd", "customer": key,
                         "payment_method": "pm_card_visa"}, key, started + timeout)
    if status != 201:
        return None, f"create {status}"
    last: str | None = None
    while time.monotonic() - started < timeout:
        status, payment = await client.get(f"/v1/payments/{payload['id']}")
        if status == 200:
            last = payment.get("status")
            if last in TERMINAL:
                return time.monotonic() - started, last
        await asyncio.sleep(0.5)
    return None, last

"""End-to-end harness for the stream workers: the session's pipeline, a Stripe proxy, rows.

The fixtures that build them (`pipeline`, `receiver`, `db`) are in
tests/e2e/conftest.py. Every test session runs its own worker group (unique
FAUST_APP_ID) on a change feed of its own (testkit/cdc_feed.py: a publication
filtered to the session's merchants, a Debezium connector of its own from now
on, its own topics, all removed at the end), so other suites' traffic and the
stack's history neither slow nor confuse it. Tests that name a CDC topic take it
from `pipeline.settings`, the settings the workers run with. The stack's own
worker is stopped for the session (testkit.stack's StackPaused), since its feed
carries the session's payments too and it would race the test worker for them,
and restarted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from aiokafka import AIOKafkaProducer
from psycopg.rows import dict_row

from api.merchants import NewMerchant
from paystream.domain import new_id
from paystream.settings import Settings
from streams.adapters import topic_reader
from testkit import cdc_feed, rows
from testkit.ports import free_port
from testkit.waiting import eventually
from testkit.webhooks import WebhookReceiver
from testkit.workers import WorkerProcess, clean_env

TERMINAL = ("succeeded", "failed", "canceled", "blocked")
# One token per session: names the worker group, its topics and its merchants
# (the session's change feed carries the merchants whose id starts with this).
SESSION = secrets.token_hex(3)
MERCHANT_ID_PREFIX = f"acct_e2e{SESSION}"


@dataclasses.dataclass
class Pipeline:
    """The session's worker group and what it talks to."""

    # What the workers run with: the session's CDC topics and group.
    settings: Settings
    app_id: str
    base_env: dict[str, str]
    workdir: Path
    stripe: StripeProxy
    workers: list[WorkerProcess] = dataclasses.field(default_factory=list)

    def new_worker(self, name: str, **env: str) -> WorkerProcess:
        worker_env = {
            **self.base_env,
            "FAUST_WEB_PORT": str(free_port()),
            "FAUST_DATA_DIR": str(self.workdir / name),
            **env,
        }
        worker = WorkerProcess(name, worker_env, self.workdir / f"{name}.log")
        self.workers.append(worker)
        return worker

    @property
    def main(self) -> WorkerProcess:
        return self.workers[0]


STRIPE_TIMEOUT_SECONDS = 5.0
WATCHDOG_STALL_SECONDS = 20.0


def worker_env(feed: cdc_feed.Feed, app_id: str, stripe_base: str) -> dict[str, str]:
    env = clean_env()
    env.update({
        **feed.env(),
        "FAUST_APP_ID": app_id,
        "STRIPE_API_BASE": stripe_base,
        # The test settings: poll every second, short breaker and retries.
        "POLL_INTERVAL_SECONDS": "1",
        "CIRCUIT_FAILURE_THRESHOLD": "3",
        "CIRCUIT_RESET_SECONDS": "2",
        # Below the stall threshold: a submit window full of payments waiting out
        # an outage must not look like a stalled stage.
        "STRIPE_OUTAGE_PATIENCE_SECONDS": "10",
        "STRIPE_CONCURRENCY": "8",
        # Short, so that a test can outlast it (slow_creates) without waiting long.
        "STRIPE_TIMEOUT_SECONDS": str(STRIPE_TIMEOUT_SECONDS),
        # A stage stalled this long shows in /health/ (test_streams_stall.py).
        "WATCHDOG_STALL_SECONDS": str(WATCHDOG_STALL_SECONDS),
        "NOTIFY_MAX_ATTEMPTS": "3",
        "NOTIFY_BASE_DELAY_SECONDS": "0.2",
        # Every test uses pm_card_visa: only the customer velocity rule is under test.
        "FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD": "1000000",
        "PYTHONUNBUFFERED": "1",
    })
    return env


# --- Stripe proxy: localstripe behind a switch ------------------------------------------


class StripeProxy:
    """Forwards the worker's Stripe calls to localstripe; `down()` makes Stripe unreachable,
    `rate_limit(n)` answers the next n calls 429, `slow_creates(s)` answers the next
    PaymentIntent create s seconds late (after localstripe made it)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.available = True
        self._refuse = 0
        self._create_delays: list[float] = []
        # (method, path, form body) of every call the worker made.
        self.calls: list[tuple[str, str, str]] = []
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def down(self) -> None:
        self.available = False

    def up(self) -> None:
        self.available = True

    def rate_limit(self, calls: int) -> None:
        self._refuse = calls

    def slow_creates(self, *delays: float) -> None:
        self._create_delays.extend(delays)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append((request.method, request.path, body.decode(errors="replace")))
        if not self.available:
            # What a Stripe outage looks like from the SDK: a 503 (APIError).
            return web.json_response({"error": {"type": "api_error",
                                                "message": "Stripe is down (test)"}},
                                     status=503)
        if self._refuse > 0:
            self._refuse -= 1
            # Stripe's answer above the account's rate limit.
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "rate_limit",
                           "message": "Request rate limit exceeded (test)."}},
                status=429, headers={"Retry-After": "1"})
        delay = 0.0
        if request.method == "POST" and request.path == "/v1/payment_intents" \
                and self._create_delays:
            delay = self._create_delays.pop(0)
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._http.request(request.method, self.upstream + request.path_qs,
                                      headers=headers, data=body) as resp:
            body = await resp.read()
        if delay:
            await asyncio.sleep(delay)  # the worker's client has given up by now
        return web.Response(body=body, status=resp.status, content_type=resp.content_type)


# --- a merchant with a webhook endpoint -------------------------------------------------


class Db:
    """The test's side of Postgres: rows as the API would write them, and queries."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def merchant(self, receiver: WebhookReceiver | None) -> NewMerchant:
        """A merchant in the session's feed; its webhooks go to receiver (by its id)."""
        merchant_id = rows.merchant_id(MERCHANT_ID_PREFIX)
        return await rows.create_merchant(
            self.conn, "e2e streams", merchant_id=merchant_id,
            webhook_url=receiver.url(merchant_id) if receiver else None)

    async def payment(self, merchant: NewMerchant, *, customer: str | None = None,
                      payment_method: str = "pm_card_visa", amount: int = 1050,
                      currency: str = "usd") -> str:
        """Insert a pending payment exactly as POST /v1/payments does."""
        payment_id = new_id("pay")
        await self.conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, status, customer, "
            "payment_method, description, metadata, idempotency_key) "
            "VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s)",
            (payment_id, merchant.id, amount, currency, customer or new_customer(),
             payment_method, "e2e", json.dumps({"test": "streams"}), new_id("idem")),
        )
        return payment_id

    async def refund(self, payment_id: str, *, amount: int) -> str:
        row = await self.one("SELECT merchant_id, currency FROM payments WHERE id = %s",
                             payment_id)
        refund_id = new_id("re")
        await self.conn.execute(
            "INSERT INTO refunds (id, payment_id, merchant_id, amount, currency, status) "
            "VALUES (%s, %s, %s, %s, %s, 'pending')",
            (refund_id, payment_id, row["merchant_id"], amount, row["currency"]),
        )
        return refund_id

    async def one(self, sql: str, *params: Any) -> dict[str, Any]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            row = await cur.fetchone()
            assert row is not None, f"no row for {sql} {params}"
            return row

    async def all(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    async def status(self, payment_id: str) -> str:
        return str((await self.one("SELECT status FROM payments WHERE id = %s",
                                   payment_id))["status"])

    async def terminal(self, payment_id: str) -> dict[str, Any] | None:
        row = await self.one("SELECT * FROM payments WHERE id = %s", payment_id)
        return row if row["status"] in TERMINAL else None


def new_customer() -> str:
    # Not "cus_...": such ids go to Stripe, which only knows customers it created.
    return "c_" + new_id("x")[2:]


# --- Kafka helpers ----------------------------------------------------------------------


async def produce(settings: Settings, topic: str, key: bytes | None,
                  value: bytes | None) -> tuple[int, int]:
    """Publish one raw message; (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, key=key, value=value)
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str, *, since: float | None = None) -> list[Any]:
    """Every record of a topic (or those since a Unix time), oldest first per partition."""
    since_ms = None if since is None else int(since * 1000)
    return await topic_reader.read_topic(settings.kafka_bootstrap, topic, since_ms=since_ms)


async def intents_since(settings: Settings, since: float) -> dict[str, set[str]]:
    """{payment id: PaymentIntent ids} of every charge localstripe made since a Unix time.

    Its PaymentIntent list is oldest first with no filter (slow once it holds
    tens of thousands); its charge list filters on creation time.
    """
    found: dict[str, set[str]] = {}
    headers = {"Authorization": f"Bearer {settings.stripe_api_key}"}
    params = {"created[gt]": str(int(since) - 2), "limit": "100",
              "expand[]": "data.payment_intent"}
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            async with http.get(f"{settings.stripe_api_base}/v1/charges",
                                params=params) as resp:
                page = await resp.json()
            for charge in page["data"]:
                pi = charge.get("payment_intent")
                if isinstance(pi, dict):
                    pid = (pi.get("metadata") or {}).get("payment_id")
                    if pid:
                        found.setdefault(pid, set()).add(pi["id"])
            if not page.get("has_more") or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]


# --- 3-D Secure: payments that wait for the customer ------------------------------------

THREE_D_SECURE_CARD = "4000002500003155"


async def stripe(settings: Settings, method: str, path: str,
                 data: dict[str, str] | None = None) -> dict[str, Any]:
    """Talk to localstripe directly (not through the worker's proxy)."""
    headers = {"Authorization": f"Bearer {settings.stripe_api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.request(
        method, settings.stripe_api_base + path, data=data
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def point_stripe_webhooks(settings: Settings, url: str) -> None:
    """Re-register localstripe's webhook (`make up` named it "paystream") to url."""
    form = {"url": url, "secret": settings.stripe_webhook_secrets[0]}
    async with aiohttp.ClientSession() as http, http.post(
        f"{settings.stripe_api_base}/_config/webhooks/paystream", data=form
    ) as resp:
        assert resp.status == 200, await resp.text()


@contextlib.asynccontextmanager
async def stripe_webhooks_off(settings: Settings) -> AsyncIterator[None]:
    """Stripe tells the API nothing meanwhile (events go to a closed port)."""
    # A port just freed: nothing listens there.
    await point_stripe_webhooks(settings, f"http://127.0.0.1:{free_port()}/nowhere")
    try:
        yield
    finally:
        await point_stripe_webhooks(
            settings, f"http://127.0.0.1:{settings.api_port}/v1/webhooks/stripe")


async def three_d_secure_method(settings: Settings) -> str:
    pm = await stripe(settings, "POST", "/v1/payment_methods", {
        "type": "card", "card[number]": THREE_D_SECURE_CARD, "card[exp_month]": "12",
        "card[exp_year]": "2030", "card[cvc]": "123"})
    return str(pm["id"])


async def awaiting_action(db: Db, settings: Settings, payment_id: str,
                          timeout: float = 60) -> str:
    """Wait for the payment to need 3-D Secure; its PaymentIntent id."""

    async def action() -> dict | None:
        row = await db.one("SELECT * FROM payments WHERE id = %s", payment_id)
        return row if row["status"] == "requires_action" else None

    row = await eventually(action, timeout=timeout, what="requires_action")
    return str(row["stripe_payment_intent_id"])


async def authenticate(settings: Settings, pi_id: str) -> None:
    """The customer passes 3-D Secure: localstripe charges the card."""
    pi = await stripe(settings, "GET", f"/v1/payment_intents/{pi_id}")
    await stripe(settings, "POST", f"/v1/payment_intents/{pi_id}/_authenticate",
                 {"client_secret": pi["client_secret"], "success": "true"})



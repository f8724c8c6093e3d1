"""Fault injection: kill -9 each component under a steady payment load, `make up`, check the money.

A steady load of payments goes through the API the way a careful client sends
them (every retry reuses its Idempotency-Key), some declined, some refunded.
Meanwhile each component of the profile is killed with SIGKILL in turn and
brought back by one `make up`. When every payment is terminal, the invariants
are checked straight from Postgres and the Stripe peer:

- one payment per Idempotency-Key, and every accepted request has its payment;
- at most one PaymentIntent per payment, none for a payment fraud did not approve;
- exactly one journal per succeeded payment and per succeeded refund, none
  for anything else, every journal balanced;
- the merchant's /v1/balances equals succeeded minus refunded;
- refunds never exceed their payment.

It prints one row per fault: `make up`'s exit code and time, the requests
that failed transiently (retried) and for good, the seconds until the API
answered 2xx again, and until a payment created after `make up` resolved.
Exit 0 when every `make up` succeeded, no request failed for good and every
invariant holds.

Run it with the stack up: `make chaos` (full profile) or
`.venv/bin/python stack/chaos.py --profile short`. The stack's worker is
restarted at the start with FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD raised:
every payment uses the test card pm_card_visa, which the default velocity
rule would block after five a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
STACKCTL = [sys.executable, str(ROOT / "stack" / "stackctl.py")]
PROFILES = {
    "short": ["worker", "api", "redis", "postgres-replica1"],
    "full": ["worker", "connect", "kafka", "postgres-replica1", "postgres-replica2", "redis",
             "api", "postgres-primary", "localstripe"],
}
TERMINAL = ("succeeded", "failed", "canceled", "blocked")
DECLINED_CARD = "pm_card_chargeCustomerFail"
# The worker must not block the load as a card-testing attack (one test card).
WORKER_ENV = {"FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD": "100000000"}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def stack_env() -> dict[str, str]:
    out = subprocess.run([*STACKCTL, "env"], capture_output=True, text=True, check=True)
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


def stack_pids() -> dict[str, int | None]:
    out = subprocess.run([*STACKCTL, "json"], capture_output=True, text=True, check=True)
    return {name: info["pid"] for name, info in json.loads(out.stdout).items()}


def make_up() -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run(["make", "-s", "up"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **WORKER_ENV}, check=False)
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


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
            order = Order(f"chaos-{run_id}-{n}", amount, declined, refund)
            self.orders.append(order)
            self.tasks.append(asyncio.create_task(
                place(self.client, order, f"chaos-{run_id}-{n}", self.patience)))
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.rate - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()


@dataclass
class FaultResult:
    fault: str
    make_up_rc: int
    make_up_s: float
    transient: int
    failed: int
    to_2xx_s: float | None
    to_resolved_s: float | None


def back_to_2xx(attempts: list[tuple[float, bool]], since: float, until: float) -> float:
    """Seconds from since to the first good answer after the last bad one before until."""
    bad = [t for t, ok in attempts if since <= t <= until and not ok]
    if not bad:
        return 0.0
    good = [t for t, ok in attempts if ok and t > bad[-1]]
    return (good[0] if good else until) - since


async def probe_payment(client: Client, timeout: float) -> float | None:
    """Seconds until a payment created now is terminal, or None."""
    started = time.monotonic()
    key = "chaos-probe-" + secrets.token_hex(6)
    status, payload = await client.post(
        "/v1/payments", {"amount": 1234, "currency": "usd", "customer": key,
                         "payment_method": "pm_card_visa"}, key, started + timeout)
    if status != 201:
        return None
    while time.monotonic() - started < timeout:
        status, payment = await client.get(f"/v1/payments/{payload['id']}")
        if status == 200 and payment.get("status") in TERMINAL:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return None


async def inject(fault: str, load: Load, settle: float) -> FaultResult:
    pid = stack_pids().get(fault)
    transient_before = load.client.transient
    failed_before = sum(1 for o in load.orders if o.failed_for_good)
    killed_at = time.monotonic()
    if pid:
        log(f"kill -9 {fault} (pid {pid})")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        log(f"{fault} was not running")
    # Let the load run into the hole for a moment, as it would before anyone noticed.
    await asyncio.sleep(settle)
    rc, took, output = await asyncio.to_thread(make_up)
    if rc != 0:
        log(f"make up failed ({rc}) after {fault}:\n{output[-2000:]}")
    resolved = await probe_payment(load.client, timeout=120)
    up_done = time.monotonic()
    return FaultResult(
        fault, rc, took, load.client.transient - transient_before,
        sum(1 for o in load.orders if o.failed_for_good) - failed_before,
        back_to_2xx(load.client.attempts, killed_at, up_done), resolved)


async def wait_terminal(db: psycopg.AsyncConnection[Any], merchant: str,
                        timeout: float) -> int:
    """Payments of the merchant still not terminal after timeout (0: all done)."""
    deadline = time.monotonic() + timeout
    while True:
        row = await (await db.execute(
            "SELECT count(*) FILTER (WHERE status <> ALL(%s)) + (SELECT count(*) FROM refunds "
            " WHERE merchant_id = %s AND status = 'pending') FROM payments "
            "WHERE merchant_id = %s", (list(TERMINAL), merchant, merchant))).fetchone()
        left = int(row[0]) if row else 0
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(2.0)


async def stripe_intents(base: str, key: str, merchant: str) -> dict[str, list[str]]:
    """PaymentIntent ids at the Stripe peer per payment id, for this merchant."""
    found: dict[str, list[str]] = {}
    after: str | None = None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            params = {"limit": "100", **({"starting_after": after} if after else {})}
            async with http.get(f"{base}/v1/payment_intents", params=params) as resp:
                page = await resp.json()
            for pi in page["data"]:
                meta = pi.get("metadata") or {}
                if meta.get("merchant_id") == merchant:
                    found.setdefault(meta.get("payment_id", "?"), []).append(pi["id"])
            if not page.get("has_more") or not page["data"]:
                return found
            after = page["data"][-1]["id"]


async def check_invariants(env: dict[str, str], client: Client, merchant: str,
                           orders: list[Order]) -> list[str]:
    """Every broken invariant, as a sentence with ids; empty when all hold."""
    broken: list[str] = []
    async with await psycopg.AsyncConnection.connect(env["DATABASE_ADMIN_URL"],
                                                     autocommit=True) as db:

        async def rows(sql: str, *params: Any) -> list[dict[str, Any]]:
            async with db.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        payments = {r["id"]: r for r in await rows(
            "SELECT p.*, d.approved FROM payments p LEFT JOIN fraud_decisions d "
            "ON d.payment_id = p.id WHERE p.merchant_id = %s", merchant)}
        by_key: dict[str, list[str]] = {}
        for p in payments.values():
            by_key.setdefault(p["idempotency_key"], []).append(p["id"])
        broken += [f"key {k} has {len(v)} payments: {v}" for k, v in by_key.items()
                   if len(v) > 1]
        broken += [f"order {o.key} was accepted but has no payment row" for o in orders
                   if o.payment_id and o.payment_id not in payments]
        broken += [f"payment {p['id']} is still {p['status']}" for p in payments.values()
                   if p["status"] not in TERMINAL]
        intents = await stripe_intents(env["STRIPE_API_BASE"], env["STRIPE_API_KEY"], merchant)
        broken += [f"payment {pid} has {len(ids)} PaymentIntents: {ids}"
                   for pid, ids in intents.items() if len(ids) > 1]
        broken += [f"payment {pid} was sent to Stripe without an approved fraud decision"
                   for pid in intents if pid in payments and payments[pid]["approved"] is not True]
        journals = await rows(
            "SELECT j.source_type, j.source_id, count(*) AS n, "
            "  sum(CASE WHEN e.direction = 'debit' THEN e.amount ELSE 0 END) AS debits, "
            "  sum(CASE WHEN e.direction = 'credit' THEN e.amount ELSE 0 END) AS credits "
            "FROM ledger_journals j JOIN ledger_entries e ON e.journal_id = j.id "
            "WHERE j.merchant_id = %s GROUP BY j.id, j.source_type, j.source_id", merchant)
        broken += [f"journal of {j['source_type']} {j['source_id']} is unbalanced"
                   for j in journals if j["debits"] != j["credits"]]
        posted: dict[tuple[str, str], int] = {}
        for j in journals:
            key = (j["source_type"], j["source_id"])
            posted[key] = posted.get(key, 0) + 1
        refunds = {r["id"]: r for r in await rows(
            "SELECT * FROM refunds WHERE merchant_id = %s", merchant)}
        expected = {("payment", p["id"]) for p in payments.values() if p["status"] == "succeeded"}
        expected |= {("refund", r["id"]) for r in refunds.values() if r["status"] == "succeeded"}
        broken += [f"{kind} {oid} succeeded but has {posted.get((kind, oid), 0)} journals"
                   for kind, oid in expected if posted.get((kind, oid), 0) != 1]
        broken += [f"{kind} {oid} has a journal but did not succeed"
                   for kind, oid in posted if (kind, oid) not in expected]
        for p in payments.values():
            total = sum(r["amount"] for r in refunds.values()
                        if r["payment_id"] == p["id"] and r["status"] == "succeeded")
            if total > p["amount"]:
                broken.append(f"payment {p['id']} refunded {total} of {p['amount']}")
        owed = sum(p["amount"] for p in payments.values() if p["status"] == "succeeded") - sum(
            r["amount"] for r in refunds.values() if r["status"] == "succeeded")
    status, balance = await client.get("/v1/balances")
    available = sum(a["amount"] for a in balance.get("available", []) if a["currency"] == "usd")
    if status != 200 or available != owed:
        broken.append(f"/v1/balances says {available} ({status}), payments and refunds say "
                      f"{owed}")
    return broken


async def new_merchant() -> tuple[str, str]:
    made = subprocess.run([str(ROOT / ".venv" / "bin" / "paystream"), "merchant", "create",
                           "Chaos " + secrets.token_hex(3)], capture_output=True, text=True,
                          check=True, env={**os.environ, **stack_env()})
    merchant = json.loads(made.stdout)
    return merchant["id"], merchant["api_key"]


async def run(args: argparse.Namespace) -> int:
    env = stack_env()
    faults = args.faults.split(",") if args.faults else PROFILES[args.profile]
    log("restarting the stack's worker with the load's fraud setting")
    subprocess.run([*STACKCTL, "stop", "worker"], capture_output=True, check=False)
    rc, _, output = await asyncio.to_thread(make_up)
    if rc != 0:
        log(f"the stack is not up:\n{output[-2000:]}")
        return 2
    merchant, api_key = await new_merchant()
    run_id = secrets.token_hex(3)
    results: list[FaultResult] = []
    async with aiohttp.ClientSession() as http:
        client = Client(env["API_URL"], api_key, http)
        load = Load(client, args.rate, patience=args.patience)
        loader = asyncio.create_task(load.run(run_id))
        log(f"load: {args.rate}/s for merchant {merchant}; warming up {args.warmup:.0f}s")
        await asyncio.sleep(args.warmup)
        for fault in faults:
            results.append(await inject(fault, load, args.settle))
            r = results[-1]
            log(f"{fault}: make up rc={r.make_up_rc} in {r.make_up_s:.1f}s, "
                f"2xx again after {r.to_2xx_s}s, new payment resolved in {r.to_resolved_s}s")
        load.stop()
        await loader
        log(f"{len(load.orders)} orders placed; waiting for the last requests")
        await asyncio.gather(*load.tasks)
        async with await psycopg.AsyncConnection.connect(env["DATABASE_ADMIN_URL"],
                                                         autocommit=True) as db:
            left = await wait_terminal(db, merchant, args.drain)
        log("every payment terminal" if not left else f"{left} still not terminal")
        broken = await check_invariants(env, client, merchant, load.orders)
    failed = [o for o in load.orders if o.failed_for_good]
    print_table(results)
    print(f"orders {len(load.orders)}, accepted {sum(1 for o in load.orders if o.payment_id)}, "
          f"refunds {sum(1 for o in load.orders if o.refund_id)}, "
          f"failed for good {len(failed)}")
    for order in failed[:20]:
        print(f"  failed for good: {order.key}: {order.failed_for_good}")
    for sentence in broken:
        print(f"  BROKEN: {sentence}")
    print("invariants: " + ("all hold" if not broken else f"{len(broken)} broken"))
    ok = not broken and not failed and all(r.make_up_rc == 0 for r in results)
    return 0 if ok else 1


def print_table(results: list[FaultResult]) -> None:
    head = ("fault", "make up", "up s", "transient", "failed", "2xx again s", "resolved s")
    print("  ".join(f"{h:>12}" for h in head))
    for r in results:
        cells = (r.fault, f"rc {r.make_up_rc}", f"{r.make_up_s:.1f}", r.transient, r.failed,
                 "-" if r.to_2xx_s is None else f"{r.to_2xx_s:.1f}",
                 "never" if r.to_resolved_s is None else f"{r.to_resolved_s:.1f}")
        print("  ".join(f"{c!s:>12}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Profiles: " + "; ".join(
                                         f"{k}: {', '.join(v)}" for k, v in PROFILES.items()))
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="which components to kill, in order (default full)")
    parser.add_argument("--faults", help="comma-separated components instead of a profile")
    parser.add_argument("--rate", type=float, default=8.0,
                        help="payments per second through the API (default 8)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of load before the first fault (default 5)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between a kill and make up (default 3)")
    parser.add_argument("--patience", type=float, default=180.0,
                        help="how long a client keeps retrying one request (default 180)")
    parser.add_argument("--drain", type=float, default=300.0,
                        help="seconds to wait for every payment to be terminal (default 300)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

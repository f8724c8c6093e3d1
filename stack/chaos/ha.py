"""The ha profile: kill -9 one process of each replicated kind in turn under the load, with no
`make up` between the kills (the survivors must carry the payments), then one `make up`.

Per fault it measures, from the kill to the next kill (the last: to `make up`):
payments of the load that failed for good, payments charged twice, whether the
ledger is exact for the payments created then, the longest gap between two
succeeded payments, and how long a payment created right after the kill took
to succeed.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg

from stack.chaos.driving import kill_now, log
from stack.chaos.load import TERMINAL, Load, probe_payment
from testkit import stack

# One of each kind the ha topology runs twice or more; "kafka" and "connect" are
# resolved at the kill to the busiest member (a kill of an idle one proves little).
HA_FAULTS = ["kafka", "connect", "worker", "api", "postgres-replica1"]


@dataclass
class HaResult:
    fault: str
    killed: str
    at: float  # wall clock, to match the database's timestamps
    until: float = 0.0
    probe_s: float | None = None
    probe_status: str | None = None
    failed: int = 0
    double_charged: int = 0
    ledger_exact: bool = True
    longest_gap_s: float = 0.0
    # Payments and refunds created in the window and not terminal after the drain
    # (the invariants name each one: which fault's window it fell in).
    stuck: int = 0


def _connect_task_worker(env: dict[str, str], components: dict[str, Any]) -> str:
    """The Connect worker that runs the CDC connector's task (falls back to the first)."""
    url = f"{env['CONNECT_URL']}/connectors/paystream-payments/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            worker_id = json.load(resp)["tasks"][0]["worker_id"]
    except (OSError, ValueError, KeyError, IndexError):
        return "connect"
    port = int(worker_id.rsplit(":", 1)[1])
    return next((name for name, c in components.items()
                 if name.startswith("connect") and c["port"] == port), "connect")


async def _busiest_broker(env: dict[str, str], components: dict[str, Any]) -> str:
    """The Kafka node leading the most partitions of the payments CDC topic."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        described = await admin.describe_topics(["paystream.public.payments"])
        leaders = [p["leader"] for p in described[0]["partitions"]]
    finally:
        await admin.close()
    node = max(set(leaders), key=leaders.count) if leaders else 1
    name = "kafka" if node == 1 else f"kafka-{node}"
    return name if name in components else "kafka"


async def target(fault: str, env: dict[str, str]) -> str:
    components = stack.components()
    if fault == "connect":
        return _connect_task_worker(env, components)
    if fault == "kafka":
        try:
            return await _busiest_broker(env, components)
        except Exception as err:  # the plain node 1 is still a broker to kill
            log(f"could not find the busiest broker ({err!r}); killing kafka")
    return fault


async def kill_each(faults: list[str], load: Load, env: dict[str, str],
                    dwell: float) -> list[HaResult]:
    """Kills one after another, `dwell` seconds apart at least; no `make up` between them."""
    results: list[HaResult] = []
    for fault in faults:
        name = await target(fault, env)
        result = HaResult(fault, name, time.time())
        started = time.monotonic()
        if not kill_now(name, f" for fault {fault}"):
            log(f"{name} was not running")
        result.probe_s, result.probe_status = await probe_payment(load.client, timeout=90)
        log(f"{fault}: a payment created right after the kill: {result.probe_status} "
            f"in {result.probe_s}s")
        await asyncio.sleep(max(0.0, dwell - (time.monotonic() - started)))
        result.until = time.time()
        results.append(result)
    return results


async def measure(results: list[HaResult], load: Load, db_url: str, merchant: str) -> None:
    """Fills in each fault's figures from the load's orders and the database."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as db:
        # When each payment succeeded: its row's last change, or its journal's
        # posting when a later refund moved that (both come after the success).
        succeeded = [float(r[0]) for r in await (await db.execute(
            "SELECT extract(epoch FROM least(p.updated_at, min(j.created_at))) "
            "FROM payments p LEFT JOIN ledger_journals j ON j.source_type = 'payment' "
            "AND j.source_id = p.id WHERE p.merchant_id = %s AND p.status = 'succeeded' "
            "GROUP BY p.id ORDER BY 1", (merchant,))).fetchall()]
        rows = await (await db.execute(
            "SELECT p.id, extract(epoch FROM p.created_at), p.status, "
            " (SELECT count(*) FROM ledger_journals j WHERE j.source_type = 'payment' "
            "  AND j.source_id = p.id), p.stripe_payment_intent_id "
            "FROM payments p WHERE p.merchant_id = %s", (merchant,))).fetchall()
        stuck = await (await db.execute(
            "SELECT extract(epoch FROM created_at) FROM payments WHERE merchant_id = %s "
            "AND status <> ALL(%s) UNION ALL SELECT extract(epoch FROM created_at) "
            "FROM refunds WHERE merchant_id = %s AND status = 'pending'",
            (merchant, list(TERMINAL), merchant))).fetchall()
    intents = await _intents_per_payment(merchant)
    for r in results:
        mine = [row for row in rows if r.at <= float(row[1]) < r.until]
        r.double_charged = sum(1 for row in mine if len(intents.get(row[0], [])) > 1)
        r.ledger_exact = all((row[3] == 1) == (row[2] == "succeeded") for row in mine)
        gaps = [b - a for a, b in zip(succeeded, succeeded[1:], strict=False)
                if b > r.at and a < r.until]
        r.longest_gap_s = max(gaps, default=r.until - r.at)
        r.stuck = sum(1 for (at,) in stuck if r.at <= float(at) < r.until)
    for order in load.orders:
        if order.failed_for_good and order.placed_at is not None:
            for r in results:
                if r.at <= order.placed_at < r.until:
                    r.failed += 1


async def _intents_per_payment(merchant: str) -> dict[str, list[str]]:
    from stack.chaos.invariants import stripe_intents

    env = stack.env()
    return await stripe_intents(env["STRIPE_API_BASE"], env["STRIPE_API_KEY"], merchant)


def print_ha_table(results: list[HaResult]) -> None:
    head = ("fault", "killed", "failed", "double", "ledger", "max gap s", "new paid s",
            "stuck")
    print("  ".join(f"{h:>11}" for h in head))
    for r in results:
        probe = "never" if r.probe_s is None else f"{r.probe_s:.1f}"
        if r.probe_status != "succeeded":
            probe += f" ({r.probe_status})"
        cells = (r.fault, r.killed, r.failed, r.double_charged,
                 "exact" if r.ledger_exact else "WRONG", f"{r.longest_gap_s:.1f}", probe,
                 r.stuck)
        print("  ".join(f"{c!s:>11}" for c in cells))


def ha_ok(results: list[HaResult], *, gap_limit: float = 30.0,
          probe_limit: float = 30.0) -> list[str]:
    """What missed the ha targets, as sentences; empty when every fault met them."""
    missed = []
    for r in results:
        if r.failed or r.double_charged or not r.ledger_exact:
            missed.append(f"{r.fault} ({r.killed}): {r.failed} failed, {r.double_charged} "
                          f"charged twice, ledger {'exact' if r.ledger_exact else 'wrong'}")
        if r.longest_gap_s >= gap_limit:
            missed.append(f"{r.fault} ({r.killed}): {r.longest_gap_s:.1f}s without a "
                          f"succeeded payment (target < {gap_limit:.0f}s)")
        if r.probe_status != "succeeded" or r.probe_s is None or r.probe_s >= probe_limit:
            missed.append(f"{r.fault} ({r.killed}): a new payment {r.probe_status} in "
                          f"{r.probe_s}s (target: succeeded < {probe_limit:.0f}s)")
    return missed

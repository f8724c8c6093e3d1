"""Stream pipeline benchmark: commit -> succeeded and commit -> journal latency, events/s.

Phases against the running stack (Postgres, Kafka, Connect, localstripe):

1. latency: --payments payments inserted exactly as the API does (one
   transaction each) at --rate per second; each goes through CDC, fraud,
   Stripe (localstripe), the guarded write-back and the ledger. Reported:
   p50/p99 of commit -> succeeded and commit -> journal, from the rows'
   own timestamps (payments.created_at, updated_at, ledger_journals.created_at).
2. throughput: --burst payments over the amount limit, inserted as fast as
   possible: they are blocked by fraud, so Stripe is out of the way and what is
   measured is the worker itself. Reported: payments/s end to end and agent
   events/s (from the worker's /stats/). --stripe-burst does the same with
   approved payments, through localstripe; --sustain offers blocked payments at
   a steady rate and samples the worker's consumer lag (does it keep up?).
   Each burst reports the CPU every component spent per payment (bench/cpu.py).

By default it starts its own worker (own group, own merchants, on a change
feed of its own that carries only those merchants from its start:
testkit/cdc_feed.py) and pauses the stack's worker meanwhile, so neither
history nor other traffic is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bench import cpu, harness, shape
from paystream.domain import new_id
from paystream.settings import Settings
from testkit import cdc_feed, stack
from testkit.ports import free_port
from testkit.rows import create_merchant, merchant_id
from testkit.stats import percentile
from testkit.topics import delete_topics
from testkit.workers import WorkerProcess, stop_all, wait_all_ready


class BenchWorkers:
    """`paystream worker` processes of its own (one consumer group) on a change feed of
    its own: the payments and refunds of the merchants whose id starts with `prefix`,
    from the moment `start` is called."""

    def __init__(self, settings: Settings, prefix: str, count: int, *,
                 dbname: str | None = None, env: dict[str, str] | None = None) -> None:
        """dbname: a database of the bench's own (testkit/own_database.py), which
        settings.database_url points at; None for the stack's. env: more environment
        for every worker."""
        self.app_id = f"paystream-bench-{secrets.token_hex(3)}"
        self.settings = settings
        self.feed = cdc_feed.Feed("bench", prefix, settings, dbname=dbname)
        self.datadirs = [Path(tempfile.mkdtemp(prefix="streams-bench-")) for _ in range(count)]
        self.workers = [
            WorkerProcess("worker" if i == 0 else f"worker{i + 1}",
                          self._env(free_port(), datadir, env or {}),
                          datadir / "worker.log", level="warning")
            for i, datadir in enumerate(self.datadirs)]

    def _env(self, port: int, datadir: Path, extra: dict[str, str]) -> dict[str, str]:
        return {**os.environ, **self.feed.env(), "FAUST_APP_ID": self.app_id,
                "DATABASE_URL": self.settings.database_url,
                "FAUST_WEB_PORT": str(port), "FAUST_DATA_DIR": str(datadir),
                # One payment method (pm_card_visa) for every payment: not a fraud signal.
                "FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD": "100000000", **extra}

    async def start(self) -> None:
        # Its new group reads the feed's fresh topics from the beginning: from now on.
        await self.feed.start()
        for worker in self.workers:
            worker.start()
        # Every one ready at once: a later one joining rebalances the earlier ones.
        await wait_all_ready(self.workers, 180)

    def pids(self) -> dict[str, int]:
        return {worker.name: worker.pid for worker in self.workers}

    async def events(self) -> float:
        """Events the agents processed so far, over every worker (their /stats/)."""
        total = 0.0
        async with aiohttp.ClientSession() as http:
            for worker in self.workers:
                async with http.get(f"{worker.url}/stats/") as resp:
                    stats = await resp.json()
                total += sum(stats.get("events_processed", {}).values())
        return total

    async def stop(self) -> None:
        # Waiting without blocking: a Stripe peer served in this process (stripe_bench)
        # answers the workers' last calls meanwhile.
        await stop_all(self.workers, 60)
        # Their internal topics are of no use once they are gone (the empty group expires).
        await delete_topics(self.settings.kafka_bootstrap, f"{self.app_id}-")
        # Then the feed: connector, replication slot, publication, topics.
        await self.feed.close()
        for datadir in self.datadirs:
            shutil.rmtree(datadir, ignore_errors=True)


async def insert_at_rate(conn: psycopg.AsyncConnection[Any], merchant: str, n: int,
                         rate: float, amount: int, *, methods: int = 1) -> list[str]:
    """n payments inserted as the API does, at rate per second (0: at once); with
    methods > 1 they cycle through that many payment methods (a Stripe-shaped peer
    accepts any), else all use pm_card_visa, which localstripe knows."""
    ids: list[str] = []
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate if rate > 0 else 0
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        payment_id = new_id("pay")
        await conn.execute(
            "INSERT INTO payments (id, merchant_id, amount, currency, customer, payment_method) "
            "VALUES (%s, %s, %s, 'usd', %s, %s)",
            (payment_id, merchant, amount, "c_" + new_id("x")[2:],
             "pm_card_visa" if methods <= 1 else f"pm_card_bench_{i % methods}"))
        ids.append(payment_id)
    return ids


async def wait_terminal(conn: psycopg.AsyncConnection[Any], ids: list[str],
                        timeout: float) -> float:
    """Seconds until every payment is terminal (and journalled when succeeded)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status IN ('succeeded','failed','canceled','blocked')),"
            # source_type too: the journal's unique index is (source_type, source_id);
            # on source_id alone this is a sequential scan per payment per poll.
            " count(*) FILTER (WHERE status = 'succeeded' AND NOT EXISTS ("
            "   SELECT 1 FROM ledger_journals j WHERE j.source_type = 'payment' "
            "   AND j.source_id = payments.id)) "
            "FROM payments WHERE id = ANY(%s)", (ids,))
        done, unjournalled = await cur.fetchone() or (0, 0)
        if done == len(ids) and unjournalled == 0:
            return time.monotonic() - start
        await asyncio.sleep(0.5)
    raise SystemExit(f"not all {len(ids)} payments terminal within {timeout:.0f}s")


async def sustain(conn: psycopg.AsyncConnection[Any], merchant: str, worker: BenchWorkers,
                  rate: float, seconds: float, timeout: float) -> dict[str, Any]:
    """Fraud-blocked payments at a steady rate: does the worker keep up?

    The group's lag (messages not yet committed, over every topic it reads) is
    sampled every second while the payments arrive; lag that keeps growing
    through the second half means the rate is more than the worker sustains.
    """
    bootstrap = worker.settings.kafka_bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    ends = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await ends.start()
    samples: list[tuple[float, int]] = []
    try:
        inserting = asyncio.create_task(
            insert_at_rate(conn, merchant, int(rate * seconds), rate, 50_000_000))
        started = time.monotonic()
        while not inserting.done():
            committed = await admin.list_consumer_group_offsets(worker.app_id)
            end = await ends.end_offsets(list(committed))
            samples.append((time.monotonic() - started,
                            sum(max(0, end[tp] - meta.offset) for tp, meta in committed.items())))
            await asyncio.wait({inserting}, timeout=1.0)
        ids = inserting.result()
    finally:
        await ends.stop()
        await admin.close()
    drain = await wait_terminal(conn, ids, timeout)
    cur = await conn.execute(
        "SELECT extract(epoch FROM updated_at - created_at) FROM payments WHERE id = ANY(%s)",
        (ids,))
    latency = [float(r[0]) for r in await cur.fetchall()]
    half = [(t, lag) for t, lag in samples if t >= seconds / 2]
    growth = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    return {
        "sustain_rate": rate,
        "sustain_seconds": seconds,
        "sustain_lag_max": max((lag for _, lag in samples), default=0),
        # Messages per second the lag grew by over the second half (~0: keeping up).
        "sustain_lag_growth_per_s": round(growth, 1),
        "sustain_drain_after_last_s": round(drain, 1),
        "sustain_commit_to_blocked_p50_s": round(percentile(latency, 0.50), 3),
        "sustain_commit_to_blocked_p99_s": round(percentile(latency, 0.99), 3),
    }


async def burst(conn: psycopg.AsyncConnection[Any], merchant: str, worker: BenchWorkers | None,
                pids: dict[str, int], name: str, n: int, amount: int,
                timeout: float) -> dict[str, Any]:
    """Insert n payments as fast as possible; payments/s until all are terminal, and
    the CPU each component of the stack spent per payment meanwhile (net of what
    it spends idle, measured just before)."""
    pids = {**pids, "bench (inserts, waits)": os.getpid()}
    idle = await asyncio.to_thread(cpu.idle_rate, pids)
    before = await worker.events() if worker else 0.0
    scans = shape.TableScans(conn)
    await scans.start()
    machine = shape.MachineIdle()
    cpu_before = cpu.tree_seconds(pids)
    started = time.monotonic()
    ids = await insert_at_rate(conn, merchant, n, 0, amount)
    await wait_terminal(conn, ids, timeout)
    took = time.monotonic() - started
    cpu_ms = cpu.per_item_ms(cpu_before, cpu.tree_seconds(pids), n, elapsed=took, idle=idle)
    idle_share = machine.share()
    after = await worker.events() if worker else 0.0
    cur = await conn.execute("SELECT status, count(*) FROM payments WHERE id = ANY(%s) "
                             "GROUP BY status ORDER BY status", (ids,))
    return {
        name: n,
        f"{name}_statuses": dict(await cur.fetchall()),
        f"{name}_payments_per_s": round(n / took, 1),
        f"{name}_agent_events_per_s": round((after - before) / took, 1) if worker else None,
        f"{name}_cpu_ms_per_payment": cpu_ms,
        f"{name}_machine_idle_share": idle_share,
        f"{name}_seq_scans": await scans.per_payment(n),
        # The CPU the measured mix would need at the 500 payments/s (2 cores here).
        f"{name}_cores_needed_at_500_per_s": round(cpu_ms["total"] * 500 / 1000, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env()
    prefix = f"acct_bench{secrets.token_hex(3)}"
    if args.worker != "spawn":
        return await measure(args, settings, prefix, None)
    # Its own workers on its own feed: the stack's worker stopped and its connector
    # paused, so one decoder runs while it measures (bench/shape.py, testkit/stack.py).
    with stack.StackPaused(os.environ.get("CONNECT_URL")) as paused:
        print(f"(production shape: {paused.describe()} while measuring)", file=sys.stderr)
        return await measure(args, settings, prefix,
                             BenchWorkers(settings, prefix, args.workers))


async def measure(args: argparse.Namespace, settings: Settings, prefix: str,
                  worker: BenchWorkers | None) -> dict[str, Any]:
    try:
        if worker is not None:
            await worker.start()
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            merchant = (await create_merchant(
                conn, "bench", merchant_id=merchant_id(prefix) if worker else None)).id
            result: dict[str, Any] = {"payments": args.payments, "rate": args.rate}

            started = time.monotonic()
            ids = await insert_at_rate(conn, merchant, args.payments, args.rate, 1050)
            insert_s = time.monotonic() - started
            await wait_terminal(conn, ids, args.timeout)
            cur = await conn.execute(
                "SELECT extract(epoch FROM p.updated_at - p.created_at), "
                "       extract(epoch FROM j.created_at - p.created_at), p.status "
                "FROM payments p LEFT JOIN ledger_journals j "
                "  ON j.source_type = 'payment' AND j.source_id = p.id "
                "WHERE p.id = ANY(%s)", (ids,))
            rows = await cur.fetchall()
            succeeded = [float(r[0]) for r in rows if r[2] == "succeeded"]
            journal = [float(r[1]) for r in rows if r[1] is not None]
            elapsed = time.monotonic() - started
            result.update({
                "offered_rate": round(args.payments / insert_s, 1),
                "succeeded": len(succeeded),
                "commit_to_succeeded_p50_s": round(percentile(succeeded, 0.50), 3),
                "commit_to_succeeded_p99_s": round(percentile(succeeded, 0.99), 3),
                "commit_to_journal_p50_s": round(percentile(journal, 0.50), 3),
                "commit_to_journal_p99_s": round(percentile(journal, 0.99), 3),
                "commit_to_journal_mean_s": round(statistics.fmean(journal), 3)
                if journal else None,
                "latency_phase_payments_per_s": round(args.payments / elapsed, 1),
            })

            pids = stack.running_pids()
            if worker is not None:
                pids.update(worker.pids())
            if args.stripe_burst:
                # Approved payments as fast as possible: the whole path, Stripe included.
                result.update(await burst(conn, merchant, worker, pids, "stripe_burst",
                                          args.stripe_burst, 1050, args.timeout))
            if args.sustain and worker is not None:
                result.update(await sustain(conn, merchant, worker, args.sustain,
                                            args.sustain_seconds, args.timeout))
            if args.burst:
                # Over the amount limit: blocked by fraud, never sent to Stripe.
                result.update(await burst(conn, merchant, worker, pids, "burst",
                                          args.burst, 50_000_000, args.timeout))
            return result
    finally:
        if worker is not None:
            await worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(
        __doc__,
        epilog="Latency is measured from the payment's commit (payments.created_at) to the "
        "guarded write of succeeded (updated_at) and to the journal row (created_at).")
    parser.add_argument("--payments", type=int, default=60,
                        help="payments in the latency phase (default 60)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="payments per second offered in the latency phase (default 1: "
                        "localstripe pickles its whole store on every write and manages "
                        "only a few PaymentIntents per second once it holds thousands)")
    parser.add_argument("--burst", type=int, default=2000,
                        help="fraud-blocked payments in the throughput phase, 0 to skip "
                        "(default 2000)")
    parser.add_argument("--stripe-burst", type=int, default=0,
                        help="approved payments inserted as fast as possible, through "
                        "Stripe (localstripe), 0 to skip (default 0: localstripe slows "
                        "down as its store grows, see --rate)")
    parser.add_argument("--sustain", type=float, default=100.0,
                        help="fraud-blocked payments per second offered for --sustain-seconds "
                        "while the worker's consumer lag is sampled, 0 to skip (default 100; "
                        "needs --worker spawn)")
    parser.add_argument("--sustain-seconds", type=float, default=30.0,
                        help="length of the sustained phase (default 30)")
    parser.add_argument("--worker", choices=("spawn", "existing"), default="spawn",
                        help="start dedicated workers (default), or measure the running one")
    parser.add_argument("--workers", type=int, default=1,
                        help="dedicated workers to start, one consumer group (default 1)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for each phase (default 900)")
    args = harness.parse(parser, argv)
    harness.show(asyncio.run(run(args)), as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

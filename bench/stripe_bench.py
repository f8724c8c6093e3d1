"""Stream pipeline against a Stripe-shaped peer: payments/s under Stripe's latency and limits.

    .venv/bin/python -m bench.stripe_bench [--phases live,test-mode,free] [--live-seconds 300]

localstripe answers at once and never says 429; real Stripe takes ~0.5-2 s per
confirmed PaymentIntent and limits an account to ~100 requests/s (25 in test
mode). Each phase starts bench/stripe_peer.py in this process with that shape,
dedicated `paystream worker` processes pointed at it (bench/streams_bench.py's
BenchWorkers: own consumer group, own merchants, on a change feed of its own
that carries only those from its start; the stack's worker is paused meanwhile), and offers approved
payments (each its own customer, 1050 usd, pm_card_visa) at a steady rate by
inserting rows as the API does:

- live: 800 +/- 300 ms (1% at 4 s), 100 requests/s at the peer and in the
  worker, 100 payments/s offered for 300 s.
- test-mode: the same latency at 25 requests/s, 30 payments/s for 60 s, 2% of
  PaymentIntents answered `processing` (only the poller can resolve them).
- free: no latency, no limit, 200 payments/s for 60 s: the pipeline's own cost
  (CPU per payment per component, the peer counted in this process).

Reported per phase: succeeded/s over the steady part (the first 20% of the
offered time, at most 60 s, is ramp and left out), commit -> succeeded and
commit -> journal percentiles (rows' own timestamps), failures (rate-limited
ones apart), the peer's 429s, most requests in flight and payments with two
PaymentIntents, the worker's Stripe calls by outcome and breaker openings (its
/metrics), the consumer group's lag, and what was still pending when the
drain deadline passed.

Its payments are charged at the peer, which the stack's Stripe (localstripe)
never sees: they live in a database of the bench's own on the stack's primary
(testkit/own_database.py), dropped at the end, so the stack's books and
`paystream reconcile` are as they were. A payment blocked by fraud or charged
outside the peer would mean another worker took it meanwhile: counted, and
warned about.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import uvloop
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench import cpu, harness, shape, stripe_peer, worker_profile
from bench.statements import StatementCosts
from bench.streams_bench import BenchWorkers, insert_at_rate
from paystream.settings import Settings
from testkit import stack
from testkit.own_database import OwnDatabase
from testkit.rows import create_merchant, merchant_id

PHASES = ("live", "test-mode", "free")
AMOUNT = 1050
OPEN = ("pending", "processing", "requires_action")


def log(message: str) -> None:
    # Progress goes to stderr: stdout carries only the results (one JSON with --json).
    print(message, file=sys.stderr, flush=True)


class PeerWorkers(BenchWorkers):
    """BenchWorkers pointed at the peer, and what their /metrics say of their Stripe calls."""

    async def metrics(self) -> dict[str, Any]:
        """Stripe calls by operation and outcome, and breaker openings, over every worker."""
        calls: dict[str, float] = {}
        polls: dict[str, float] = {}
        openings: float | None = None
        async with aiohttp.ClientSession() as http:
            for worker in self.workers:
                async with http.get(f"{worker.url}/metrics") as resp:
                    text = await resp.text()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name == "paystream_stripe_calls_total":
                            key = f"{sample.labels['operation']}/{sample.labels['outcome']}"
                            calls[key] = calls.get(key, 0) + sample.value
                        elif sample.name == "paystream_poller_polls_total":
                            outcome = sample.labels["outcome"]
                            polls[outcome] = polls.get(outcome, 0) + sample.value
                        elif sample.name == "paystream_stripe_circuit_openings_total":
                            openings = (openings or 0) + sample.value
        outcomes: dict[str, float] = {}
        for key, n in calls.items():
            outcome = key.split("/")[1]
            outcomes[outcome] = outcomes.get(outcome, 0) + n
        return {"stripe_calls": {k: int(v) for k, v in sorted(calls.items())},
                "stripe_calls_by_outcome": {k: int(v) for k, v in sorted(outcomes.items())},
                # What the poller did with the entries it looked at (submitted, resolved...).
                "poller_polls": {k: int(v) for k, v in sorted(polls.items())},
                # None: the worker exports no such counter (yet).
                "circuit_openings": None if openings is None else int(openings)}


class LagSampler:
    """The consumer group's lag (messages not yet committed, over every topic it reads),
    sampled about once a second while running."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        ends = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await admin.start()
        await ends.start()
        started = time.monotonic()
        try:
            while True:
                committed = await admin.list_consumer_group_offsets(self.group)
                end = await ends.end_offsets(list(committed)) if committed else {}
                self.samples.append((time.monotonic() - started, sum(
                    max(0, end[tp] - meta.offset) for tp, meta in committed.items())))
                await asyncio.sleep(1.0)
        finally:
            await ends.stop()
            await admin.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def summary(self, prefix: str, offered_seconds: float) -> dict[str, Any]:
        half = [(t, lag) for t, lag in self.samples
                if offered_seconds / 2 <= t <= offered_seconds]
        growth = ((half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0])
                  if len(half) > 1 and half[-1][0] > half[0][0] else 0.0)
        return {f"{prefix}_lag_max": max((lag for _, lag in self.samples), default=0),
                # Messages per second the lag grew by over the offered time's second half
                # (~0: keeping up).
                f"{prefix}_lag_growth_per_s": round(growth, 1)}


@dataclass(frozen=True)
class Phase:
    name: str
    peer: stripe_peer.PeerConfig
    worker_rps: int
    rate: float
    seconds: float
    measure_cpu: bool = False

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")


async def counts(conn: psycopg.AsyncConnection[Any], merchant: str) -> dict[str, int]:
    cur = await conn.execute("SELECT status, count(*) FROM payments WHERE merchant_id = %s "
                             "GROUP BY status ORDER BY status", (merchant,))
    return {status: n for status, n in await cur.fetchall()}


async def connector_state(connector: str) -> str | None:
    """A Debezium connector's state (RUNNING, PAUSED...), None without CONNECT_URL."""
    url = os.environ.get("CONNECT_URL")
    if not url:
        return None
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"{url.rstrip('/')}/connectors/{connector}/status",
                timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return str((await resp.json())["connector"]["state"]) if resp.status == 200 \
                else f"HTTP {resp.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError) as err:
        return f"unreachable ({type(err).__name__})"


def other_workers(mine: set[int], database_url: str) -> int:
    """`paystream worker` processes on our database that are not the bench's (the
    stack's, or a test's): one reading the stack's change stream takes the bench's
    payments too."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            if b"paystream\x00worker" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\x00")
        except OSError:
            continue
        # A worker of another stack on this machine has a database of its own.
        theirs = next((v.split(b"=", 1)[1].decode() for v in environ
                       if v.startswith(b"DATABASE_URL=")), Settings.database_url)
        n += theirs == database_url
    return n


@dataclass
class Watch:
    """What else was going on during a phase: the bench feed's connector states, other
    workers."""

    mine: set[int]
    database_url: str
    connector: str
    states: set[str] = field(default_factory=set)
    others_max: int = 0

    async def look(self) -> str:
        state = await connector_state(self.connector)
        if state is not None:
            self.states.add(state)
        others = other_workers(self.mine, self.database_url)
        self.others_max = max(self.others_max, others)
        return (("" if state in (None, "RUNNING") else f" | connector {state}")
                + (f" | {others} other paystream workers" if others else ""))


async def progress(phase: Phase, started: float, statuses: dict[str, int],
                   peer: stripe_peer.StripePeer, what: str, watch: Watch) -> None:
    stats = peer.stats()
    log(f"  {phase.name} {what} {time.monotonic() - started:5.0f} s: "
        + " ".join(f"{k} {v}" for k, v in statuses.items())
        + f" | peer {stats['requests_total']} requests, {stats['rate_limited']} x 429, "
        f"{stats['in_flight']} in flight (max {stats['max_in_flight']})" + await watch.look())


async def offer(conn: psycopg.AsyncConnection[Any], database_url: str, merchant: str,
                phase: Phase, peer: stripe_peer.StripePeer,
                watch: Watch, methods: int = 1) -> tuple[list[str], float]:
    """Insert the phase's payments at its rate (cycling through methods payment
    methods), logging progress every 10 s."""
    # Counting on the inserting connection would hold up the inserts.
    count_conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        started = time.monotonic()
        inserting = asyncio.create_task(insert_at_rate(
            conn, merchant, int(phase.rate * phase.seconds), phase.rate, AMOUNT,
            methods=methods))
        while not inserting.done():
            await asyncio.wait({inserting}, timeout=10.0)
            if not inserting.done():
                await progress(phase, started, await counts(count_conn, merchant), peer,
                               "offering", watch)
        return inserting.result(), time.monotonic() - started
    finally:
        await count_conn.close()


async def drain(conn: psycopg.AsyncConnection[Any], merchant: str, phase: Phase,
                peer: stripe_peer.StripePeer, timeout: float, watch: Watch) -> float | None:
    """Seconds until every payment is terminal and every succeeded one journalled,
    None if the deadline passed first."""
    started = time.monotonic()
    last_log = started
    while time.monotonic() - started < timeout:
        statuses = await counts(conn, merchant)
        if not any(statuses.get(s) for s in OPEN):
            cur = await conn.execute(
                "SELECT count(*) FROM payments p WHERE p.merchant_id = %s "
                "AND p.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM ledger_journals j "
                "WHERE j.source_type = 'payment' AND j.source_id = p.id)", (merchant,))
            row = await cur.fetchone()
            if row is not None and row[0] == 0:
                return time.monotonic() - started
        if time.monotonic() - last_log >= 10:
            await progress(phase, started, statuses, peer, "draining", watch)
            last_log = time.monotonic()
        await asyncio.sleep(1.0)
    return None


async def report(conn: psycopg.AsyncConnection[Any], merchant: str, ids: list[str],
                 phase: Phase, ramp: float, peer: stripe_peer.StripePeer) -> dict[str, Any]:
    k = phase.key
    cur = await conn.execute(
        "WITH w AS (SELECT min(created_at) + make_interval(secs => %s) AS lo, "
        "                  max(created_at) AS hi FROM payments WHERE merchant_id = %s) "
        "SELECT count(*) FILTER (WHERE p.status = 'succeeded' AND p.updated_at >= w.lo "
        "                        AND p.updated_at <= w.hi), "
        "       extract(epoch FROM w.hi - w.lo), "
        "       count(*) FILTER (WHERE p.status = 'succeeded'), "
        "       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP ("
        "         ORDER BY extract(epoch FROM p.updated_at - p.created_at)) "
        "         FILTER (WHERE p.status = 'succeeded'), "
        "       count(*) FILTER (WHERE p.status = 'failed'), "
        "       count(*) FILTER (WHERE p.status = 'failed' AND ("
        "         p.failure_code ILIKE '%%rate%%' OR p.failure_message ILIKE '%%rate limit%%' "
        "         OR p.failure_message ILIKE '%%ratelimit%%')), "
        "       count(*) FILTER (WHERE p.status = ANY(%s)), "
        "       count(*) FILTER (WHERE p.status = 'blocked') "
        "FROM payments p, w WHERE p.merchant_id = %s GROUP BY w.lo, w.hi",
        (ramp, merchant, list(OPEN), merchant))
    row = await cur.fetchone()
    assert row is not None
    steady, window, succeeded, pcts, failed, failed_rate_limited, still_open, blocked = row
    cur = await conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP ("
        "  ORDER BY extract(epoch FROM j.created_at - p.created_at)) "
        "FROM payments p JOIN ledger_journals j "
        "  ON j.source_type = 'payment' AND j.source_id = p.id WHERE p.id = ANY(%s)", (ids,))
    journal = (await cur.fetchone() or [None])[0]
    per_s = steady / float(window) if window and float(window) > 0 else None
    # Any worker reading the stack's change stream (the stack's, restarted) also
    # takes the bench's payments: with the default fraud limits it blocks them (one
    # shared pm_card_visa), or it sends them to localstripe. Either way it shows.
    cur = await conn.execute("SELECT stripe_payment_intent_id FROM payments WHERE "
                             "merchant_id = %s AND stripe_payment_intent_id IS NOT NULL",
                             (merchant,))
    foreign = sum(1 for (pi_id,) in await cur.fetchall() if pi_id not in peer.payment_intents)
    if blocked or foreign:
        log(f"  WARNING: other workers handled {blocked + foreign} of the {phase.name} "
            f"phase's payments ({blocked} blocked by fraud, {foreign} charged elsewhere): "
            "its figures are off")

    def r(x: Any) -> float | None:
        return None if x is None else round(float(x), 3)

    return {
        f"{k}_payments": len(ids),
        f"{k}_succeeded": succeeded,
        f"{k}_succeeded_per_s": r(per_s),
        f"{k}_steady_window_s": r(window),
        f"{k}_commit_to_succeeded_p50_s": r(pcts[0]) if pcts else None,
        f"{k}_commit_to_succeeded_p99_s": r(pcts[1]) if pcts else None,
        f"{k}_commit_to_journal_p50_s": r(journal[0]) if journal else None,
        f"{k}_commit_to_journal_p99_s": r(journal[1]) if journal else None,
        f"{k}_failed": failed,
        f"{k}_failed_rate_limited": failed_rate_limited,
        f"{k}_blocked": blocked,
        f"{k}_charged_elsewhere": foreign,
        f"{k}_pending_at_end": still_open,
    }


async def processing_report(conn: psycopg.AsyncConnection[Any], peer: stripe_peer.StripePeer,
                            k: str, timeout: float) -> dict[str, Any]:
    """Every payment whose PaymentIntent the peer answered `processing`: did the poller
    bring it to succeeded (the peer sends no webhooks)? Waits up to `timeout`."""
    payment_ids = sorted({peer.payment_intents[i]["metadata"].get("payment_id", "")
                          for i in peer.processing_answered})
    started = time.monotonic()
    done = 0
    while True:
        cur = await conn.execute("SELECT count(*) FROM payments WHERE id = ANY(%s) "
                                 "AND status = 'succeeded'", (payment_ids,))
        done = (await cur.fetchone() or (0,))[0]
        if done == len(payment_ids) or time.monotonic() - started >= timeout:
            break
        await asyncio.sleep(1.0)
    cur = await conn.execute(
        "SELECT max(extract(epoch FROM updated_at - created_at)) FROM payments "
        "WHERE id = ANY(%s) AND status = 'succeeded'", (payment_ids,))
    slowest = (await cur.fetchone() or (None,))[0]
    return {
        f"{k}_processing_answered": len(payment_ids),
        f"{k}_processing_read_succeeded_at_peer": len(peer.processing_resolved),
        f"{k}_processing_succeeded_in_db": done,
        f"{k}_processing_all_resolved": done == len(payment_ids),
        f"{k}_processing_commit_to_succeeded_max_s":
            None if slowest is None else round(float(slowest), 3),
    }


async def run_phase(args: argparse.Namespace, settings: Settings, prefix: str,
                    phase: Phase, dbname: str) -> dict[str, Any]:
    """One phase on the bench's own database dbname (settings point at it)."""
    k = phase.key
    log(f"== {phase.name}: {phase.rate:g} payments/s for {phase.seconds:g} s; peer "
        f"{phase.peer.latency_ms:g} +/- {phase.peer.jitter_ms:g} ms "
        f"(tail {phase.peer.tail_ratio:g} at {phase.peer.tail_ms:g} ms), limit "
        f"{phase.peer.rate_limit:g}/s; worker {phase.worker_rps} requests/s")
    result: dict[str, Any] = {f"{k}_offered_rate": phase.rate,
                              f"{k}_seconds": phase.seconds,
                              f"{k}_peer_rate_limit": phase.peer.rate_limit or None,
                              f"{k}_worker_requests_per_second": phase.worker_rps}
    async with stripe_peer.serving(phase.peer) as running:
        env = {"STRIPE_API_BASE": running.url,
               "STRIPE_REQUESTS_PER_SECOND": str(phase.worker_rps),
               "STRIPE_TIMEOUT_SECONDS": str(args.stripe_timeout)}
        if phase.peer.processing_ratio > 0:
            # Only the poller resolves a `processing` PaymentIntent: it must look soon.
            # Elsewhere the production default holds: with 5 s, every payment still
            # queued after 5 s is polled once more, work that production does not do.
            env["POLL_INTERVAL_SECONDS"] = str(args.poll_interval)
        env.update(kv.split("=", 1) for kv in args.worker_env)
        workers = PeerWorkers(settings, prefix, args.workers, dbname=dbname, env=env)
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            merchant = (await create_merchant(
                conn, "stripe bench", merchant_id=merchant_id(prefix))).id
            lag = LagSampler(settings.kafka_bootstrap, workers.app_id)
            try:
                await workers.start()
                # A paused feed connector stalls every payment; another worker reading
                # the stack's change stream takes some of them.
                watch = Watch(set(workers.pids().values()), settings.database_url,
                              workers.feed.name.connector)
                await watch.look()
                pids = {**stack.running_pids(), **workers.pids(),
                        "bench (peer + inserts)": os.getpid()}
                idle = await asyncio.to_thread(cpu.idle_rate, pids) if phase.measure_cpu \
                    else None
                scans = shape.TableScans(conn)
                await scans.start()
                statements = StatementCosts(stack.admin_url(), dbname)
                await statements.start()
                machine = shape.MachineIdle()
                messages = shape.KafkaMessages()
                messages.start()
                cpu_before = cpu.tree_seconds(pids)
                started = time.monotonic()
                profiling = asyncio.create_task(profile_worker(
                    args.profile, workers.workers[0].pid, phase.name)) \
                    if args.profile and phase.measure_cpu else None
                lag.start()
                ids, offered_s = await offer(conn, settings.database_url, merchant, phase,
                                             running.peer, watch, args.payment_methods)
                result[f"{k}_offered_rate"] = round(len(ids) / offered_s, 1)
                drained = await drain(conn, merchant, phase, running.peer, args.drain_seconds,
                                      watch)
                result[f"{k}_drained_after_last_s"] = None if drained is None \
                    else round(drained, 1)
                if phase.measure_cpu:
                    took = time.monotonic() - started
                    cpu_after = cpu.tree_seconds(pids)
                    # Per payment that got through: a drain cut short leaves some behind.
                    cur = await conn.execute(
                        "SELECT count(*) FROM payments WHERE merchant_id = %s "
                        "AND status <> ALL(%s)", (merchant, list(OPEN)))
                    done = (await cur.fetchone() or (0,))[0]
                    result[f"{k}_cpu_ms_per_payment"] = cpu.per_item_ms(
                        cpu_before, cpu_after, max(1, done), elapsed=took, idle=idle)
                    result[f"{k}_payments_per_s_end_to_end"] = round(done / took, 1)
                    # What was left of the machine: ~0 means it, not the pipeline, was
                    # the limit.
                    result[f"{k}_machine_idle_share"] = machine.share()
                result[f"{k}_seq_scans"] = await scans.per_payment(len(ids))
                # The primary's time per payment by statement (the worker's and the
                # bench's inserts, which stand for the API's).
                result[f"{k}_statements_per_payment"] = await statements.per_payment(len(ids))
                # Every message a payment made, by topic (the bench feed's CDC topics,
                # the worker's stage topics and table changelogs).
                result[f"{k}_kafka_messages_per_payment"] = messages.per_payment(
                    len(ids), strip=f"{workers.app_id}-")
                # And the requests that carried them (and fetched them), by kind.
                result[f"{k}_kafka_requests_per_payment"] = messages.requests_per_payment(
                    len(ids))
                if profiling is not None:
                    log(f"  profile of the worker by layer: {await profiling}")
                await watch.look()
                if watch.states - {"RUNNING"}:
                    log(f"  WARNING: the Debezium connector was {sorted(watch.states)} during "
                        f"the {phase.name} phase: payments stalled meanwhile")
                if watch.others_max:
                    log(f"  WARNING: up to {watch.others_max} other paystream workers ran "
                        f"during the {phase.name} phase")
                result[f"{k}_connector_states"] = sorted(watch.states)
                result[f"{k}_other_workers_seen"] = watch.others_max
                await lag.stop()
                result.update(lag.summary(k, offered_s))
                ramp = min(60.0, 0.2 * phase.seconds)
                result.update(await report(conn, merchant, ids, phase, ramp, running.peer))
                if phase.peer.processing_ratio > 0:
                    result.update(await processing_report(
                        conn, running.peer, k, args.processing_deadline))
                for name, value in (await workers.metrics()).items():
                    result[f"{k}_{name}"] = value
            finally:
                await lag.stop()
                # What is left open stays in the bench's own database, which goes at the
                # end; the next phase's workers read a new feed and never see it.
                await workers.stop()
            stats = running.peer.stats()
            several = stats["payment_ids_with_several_intents"]
            limit = phase.peer.rate_limit
            per_s = result.get(f"{k}_succeeded_per_s")
            result.update({
                f"{k}_peer_requests": stats["requests_total"],
                f"{k}_peer_429s": stats["rate_limited"],
                f"{k}_peer_max_in_flight": stats["max_in_flight"],
                f"{k}_peer_payment_intents": stats["payment_intents"],
                f"{k}_payments_with_several_intents": len(several),
                f"{k}_payments_with_several_intents_sample": several[:5],
                f"{k}_succeeded_per_s_over_limit":
                    round(per_s / limit, 3) if per_s is not None and limit else None,
            })
    return result


async def profile_worker(seconds: float, pid: int, name: str) -> Path:
    """Sample the worker for seconds once the offered load has ramped up
    (bench/worker_profile.py); the summary file's path."""
    await asyncio.sleep(min(10.0, seconds / 2))
    return await asyncio.to_thread(worker_profile.record, pid, seconds,
                                   f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", 100)


def phases(args: argparse.Namespace) -> list[Phase]:
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(chosen) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    stripe_like = stripe_peer.latency_from_args(args)
    table = {
        "live": Phase("live", replace(stripe_like, rate_limit=args.live_limit),
                      args.live_worker_rps, args.live_rate, args.live_seconds),
        "test-mode": Phase(
            "test-mode",
            replace(stripe_like, rate_limit=args.test_mode_limit, mode="test",
                    processing_ratio=args.processing_ratio,
                    processing_seconds=args.processing_seconds),
            args.test_mode_worker_rps, args.test_mode_rate, args.test_mode_seconds),
        # The poller's limiter is the only one a worker has today: lifted, not removed.
        "free": Phase("free", stripe_peer.PeerConfig(), 100_000, args.free_rate,
                      args.free_seconds, measure_cpu=True),
    }
    for name in chosen:
        # A tail past the worker's timeout turns into timeouts, not into slow answers.
        if table[name].peer.worst_latency_s >= args.stripe_timeout:
            raise SystemExit(f"{name}: the peer's slowest answer "
                             f"({table[name].peer.worst_latency_s} s) must stay under "
                             f"STRIPE_TIMEOUT_SECONDS ({args.stripe_timeout})")
    return [table[name] for name in chosen]


async def run(args: argparse.Namespace, chosen: list[Phase]) -> dict[str, Any]:
    settings = Settings.from_env()
    prefix = f"acct_sbench{secrets.token_hex(3)}"
    result: dict[str, Any] = {}
    # The bench's feed is the one logical decoder while it measures (bench/shape.py),
    # and its payments, charged at a peer the stack's Stripe never sees, stay out of
    # the stack's books (testkit/own_database.py).
    with stack.StackPaused(os.environ.get("CONNECT_URL")) as paused:
        async with OwnDatabase(settings, stack.admin_url()) as db:
            log(f"(production shape: {paused.describe()} while measuring; "
                f"{db.describe()})")
            for phase in chosen:
                result.update(await run_phase(args, db.settings, prefix, phase, db.name))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(
        __doc__,
        epilog="Progress goes to stderr, results to stdout. Throughput counts payments whose "
        "succeeded write (payments.updated_at) falls in the steady window of the offered time.")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, in order (default {','.join(PHASES)})")
    stripe_peer.add_latency_arguments(parser, "the peer's latency (live and test-mode)")
    live = parser.add_argument_group("live")
    live.add_argument("--live-seconds", type=float, default=300.0, help="default 300")
    live.add_argument("--live-rate", type=float, default=100.0,
                      help="payments/s offered (default 100)")
    live.add_argument("--live-limit", type=float, default=100.0,
                      help="the peer's requests/s (default 100, Stripe live mode)")
    live.add_argument("--live-worker-rps", type=int, default=100,
                      help="the worker's STRIPE_REQUESTS_PER_SECOND (default 100)")
    test = parser.add_argument_group("test-mode")
    test.add_argument("--test-mode-seconds", type=float, default=60.0, help="default 60")
    test.add_argument("--test-mode-rate", type=float, default=30.0,
                      help="payments/s offered (default 30)")
    test.add_argument("--test-mode-limit", type=float, default=25.0,
                      help="the peer's requests/s (default 25, Stripe test mode)")
    test.add_argument("--test-mode-worker-rps", type=int, default=25,
                      help="the worker's STRIPE_REQUESTS_PER_SECOND (default 25; above the "
                      "limit, e.g. 100, shows what the worker does with 429s)")
    test.add_argument("--processing-ratio", type=float, default=0.02,
                      help="share of PaymentIntents answered processing (default 0.02)")
    test.add_argument("--processing-seconds", type=float, default=5.0,
                      help="processing turns succeeded when read this much later (default 5)")
    test.add_argument("--processing-deadline", type=float, default=120.0,
                      help="seconds after the drain for every processing payment to be "
                      "succeeded (default 120)")
    free = parser.add_argument_group("free")
    free.add_argument("--free-seconds", type=float, default=60.0, help="default 60")
    free.add_argument("--free-rate", type=float, default=200.0,
                      help="payments/s offered (default 200)")
    worker = parser.add_argument_group("the bench's workers")
    worker.add_argument("--workers", type=int, default=1,
                        help="dedicated workers, one consumer group (default 1)")
    worker.add_argument("--poll-interval", type=float, default=5.0,
                        help="their POLL_INTERVAL_SECONDS in the phase with `processing` "
                        "answers (test-mode; default 5); the others keep the default")
    worker.add_argument("--stripe-timeout", type=float, default=10.0,
                        help="their STRIPE_TIMEOUT_SECONDS (default 10)")
    worker.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for them (repeatable), e.g. "
                        "STRIPE_CONCURRENCY=64")
    parser.add_argument("--payment-methods", type=int, default=1, metavar="N",
                        help="payment methods the payments cycle through (default 1: every "
                        "one pm_card_visa, so one worker holds every fraud-method decision; "
                        "production's cards spread them over the partitions)")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="sample the (first) worker with py-spy for SECONDS of the free "
                        "phase, 10 s in; writes a flame graph, a speedscope file and a "
                        "summary by layer under .stack/artifacts/profiles/ (default 0: off)")
    parser.add_argument("--drain-seconds", type=float, default=300.0,
                        help="after the last payment is offered, wait at most this long for "
                        "every one to be terminal; the rest is reported pending "
                        "(default 300)")
    args = harness.parse(parser, argv)
    for kv in args.worker_env:
        if "=" not in kv:
            parser.error(f"--worker-env {kv!r}: expected NAME=VALUE")
    # Checked before the stack's worker is paused.
    chosen = phases(args)
    harness.show(uvloop.run(run(args, chosen)), as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`paystream reconcile` over N payments and their PaymentIntents: time, requests, peak memory."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from testkit import rows
from testkit.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
# This module again, in a child process (run from ROOT, as `make bench` runs it).
ITSELF = [sys.executable, "-m", "bench.reconcile_bench"]
PAYSTREAM = ROOT / ".venv" / "bin" / "paystream"
MERCHANT = "acct_reconcile_bench"
# The payments are spread over the last 23 hours, so that --since 24h takes them all.
SPREAD_SECONDS = 23 * 3600
# Payments left `processing` whose PaymentIntent succeeded: drift the run must find.
PLANTED = 10


def _db_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


# --- the Stripe-shaped peer: PaymentIntents computed from their index, O(1) memory --------


class Intents:
    """PaymentIntent i names payment i and was created at base + i * spacing (whole
    seconds); listed newest first, like Stripe, 100 at most per page."""

    def __init__(self, count: int, base: int, spacing_ms: int) -> None:
        self.count, self.base, self.spacing_ms = count, base, spacing_ms

    def created(self, i: int) -> int:
        return self.base + i * self.spacing_ms // 1000

    def body(self, i: int) -> dict[str, Any]:
        return {"id": f"pi_b{i:08d}", "object": "payment_intent", "amount": 1000,
                "currency": "usd", "status": "succeeded", "created": self.created(i),
                "livemode": False,
                "metadata": {"payment_id": f"pay_b{i:08d}", "merchant_id": MERCHANT}}

    def page(self, query: dict[str, str]) -> dict[str, Any]:
        limit = min(100, int(query.get("limit", "10")))
        index = range(self.count)
        lo = bisect.bisect_left(index, int(query["created[gte]"]), key=self.created) \
            if "created[gte]" in query else 0
        hi = bisect.bisect_left(index, int(query["created[lt]"]), key=self.created) \
            if "created[lt]" in query else self.count
        if "starting_after" in query:
            hi = min(hi, int(query["starting_after"].removeprefix("pi_b")))
        data = [self.body(i) for i in range(hi - 1, max(lo, hi - limit) - 1, -1)]
        return {"object": "list", "url": "/v1/payment_intents", "data": data,
                "has_more": hi - len(data) > lo}


async def serve_peer(count: int, base: int, spacing_ms: int, port: int) -> None:
    from aiohttp import web

    intents = Intents(count, base, spacing_ms)
    requests = {"n": 0}

    async def list_intents(request: web.Request) -> web.Response:
        requests["n"] += 1
        return web.json_response(intents.page(dict(request.query)))

    async def list_refunds(request: web.Request) -> web.Response:
        requests["n"] += 1
        return web.json_response({"object": "list", "url": "/v1/refunds", "data": [],
                                  "has_more": False})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(requests)

    app = web.Application()
    app.add_routes([web.get("/v1/payment_intents", list_intents),
                    web.get("/v1/refunds", list_refunds), web.get("/_stats", stats)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the books: a database of the bench's own ----------------------------------------------


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   capture_output=True)


def make_books(admin: str, name: str, count: int, base: int, spacing_ms: int) -> str:
    """A fresh database with the migrations, N succeeded payments with their journals
    (PLANTED of them left processing), and the URL to reach it."""
    psql(admin, f"DROP DATABASE IF EXISTS {name}")
    psql(admin, f"CREATE DATABASE {name}")
    url = _db_url(admin, name)
    for migration in sorted((ROOT / "db" / "migrations").glob("[0-9]*.sql")):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-1", "-f",
                        str(migration)], check=True, capture_output=True)
    # The bench's own ledger: entries balance by construction, so the per-row
    # balance check at commit is left out to make 2N entries in seconds.
    psql(url, "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_balanced")
    rows.create_merchant_sync(url, "bench", merchant_id=MERCHANT)
    ts = f"to_timestamp({base} + i::bigint * {spacing_ms} / 1000)"
    psql(url, f"""
        INSERT INTO payments (id, merchant_id, amount, currency, status, customer,
                              payment_method, stripe_payment_intent_id, created_at, updated_at)
            SELECT 'pay_b' || lpad(i::text, 8, '0'), '{MERCHANT}', 1000, 'usd',
                   CASE WHEN i % ({count} / {PLANTED}) = 7 THEN 'processing' ELSE 'succeeded' END,
                   'c', 'pm_card_visa', 'pi_b' || lpad(i::text, 8, '0'), {ts}, {ts}
              FROM generate_series(0, {count} - 1) i;
        INSERT INTO ledger_journals (id, source_type, source_id, payment_id, merchant_id,
                                     currency, created_at)
            SELECT 'jrn_payment_' || id, 'payment', id, id, merchant_id, 'usd', created_at
              FROM payments WHERE status = 'succeeded';
        INSERT INTO ledger_entries (journal_id, merchant_id, account, direction, amount,
                                    currency)
            SELECT j.id, j.merchant_id, a.account, a.direction, 1000, 'usd'
              FROM ledger_journals j, (VALUES ('stripe_clearing:usd', 'debit'),
                   ('merchant_available:{MERCHANT}:usd', 'credit')) a(account, direction);
        ANALYZE;""")
    return url


# --- one measured run --------------------------------------------------------------------


def measure(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak resident memory (bytes) of the child, and its stdout."""
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    # ru_maxrss of the children waited for so far: the largest one, in kB.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{command[0]} exited {proc.returncode}: {err.decode()[-2000:]}")
    return seconds, peak, out.decode()


def run_size(args: argparse.Namespace, count: int) -> dict[str, Any]:
    admin = os.environ.get("DATABASE_ADMIN_URL",
                           "postgresql://postgres:postgres@127.0.0.1:5432/paystream")
    spacing_ms = SPREAD_SECONDS * 1000 // count
    base = int(time.time()) - SPREAD_SECONDS - 60
    t0 = time.monotonic()
    url = make_books(admin, args.database, count, base, spacing_ms)
    setup = time.monotonic() - t0
    port = free_port()
    peer = subprocess.Popen([*ITSELF, "peer", "--count", str(count),
                             "--base", str(base), "--spacing-ms", str(spacing_ms),
                             "--port", str(port)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == b"ready"
        env = {**os.environ, "DATABASE_URL": url,
               "STRIPE_API_BASE": f"http://127.0.0.1:{port}", "STRIPE_API_KEY": "sk_test_x"}
        command = [*ITSELF, "child", "--", str(PAYSTREAM), "reconcile",
                   "--since", "24h", "--rate", str(args.rate), "--json"]
        seconds, peak, out = measure(command, env)
        report = json.loads(out.strip().splitlines()[-1].split("\t", 1)[1])
        timer = None
        if args.timer_runs:
            command = [*ITSELF, "timer", "--runs", str(args.timer_runs)]
            _, _, timer_out = measure(command, env)
            timer = json.loads(timer_out.strip().splitlines()[-1])
    finally:
        peer.terminate()
        peer.wait()
        if not args.keep_db:
            psql(admin, f"DROP DATABASE IF EXISTS {args.database}")
    summary = report["summary"]
    return {"payments": count, "setup_s": round(setup, 1), "seconds": round(seconds, 1),
            "stripe_requests": summary["stripe_requests"],
            "stripe_objects": summary["stripe_objects"],
            "peak_rss_mb": round(report["peak_rss"] / 2**20, 1),
            "drifts": summary["counts"],
            "at_default_rate_s": round(summary["stripe_requests"] / args.default_rate),
            "timer": timer}


def child(command: list[str]) -> int:
    """Runs the command in this process (its peak memory is then this process's) and
    prints its last line with the peak resident memory."""
    import contextlib
    import io

    sys.argv = [command[0], *command[1:]]
    from paystream.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main()
    last = buffer.getvalue().strip().splitlines()[-1]
    report = json.loads(last)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Only the summary: the drifts are what the run streamed out.
    summary = {k: v for k, v in report.items() if k != "drifts"}
    print(f"rc={rc}\t" + json.dumps({"summary": summary, "peak_rss": peak}))
    return 0


def timer(runs: int) -> None:
    """The worker's reconciliation (streams.reconcile.Incremental) run after run,
    ten minutes apart on its clock, with the resident memory after each."""
    import psycopg

    from paystream.settings import Settings
    from streams import reconcile
    from streams.adapters.stripe_gateway import StripeGateway
    from streams.resilience import RequestBudget

    def rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def go() -> list[dict[str, Any]]:
        settings = Settings.from_env()
        gateway = StripeGateway(settings, budget=RequestBudget(100000))
        incremental = reconcile.Incremental(window_seconds=86400, interval_seconds=600)
        lister = reconcile.StripeLister(gateway)
        now = time.time()
        found = []
        try:
            async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                             autocommit=True) as conn:
                for n in range(runs):
                    started = time.monotonic()
                    counts = await incremental.run_once(conn, lister, now=now + n * 600)
                    found.append({"run": n + 1, "seconds": round(time.monotonic() - started, 1),
                                  "rss_mb": round(rss(), 1), "drifts": sum(counts.values()),
                                  "requests": incremental.requests})
        finally:
            await gateway.close()
        return found

    print(json.dumps(asyncio.run(go())))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Time, Stripe requests and peak memory of `paystream reconcile --since "
        "24h` over N payments (succeeded, journalled, a few planted drifts) in a database of "
        "the bench's own on the stack's primary (made, then dropped), against a Stripe-shaped "
        "peer listing their PaymentIntents 100 a page, newest first, with created[gte]/[lt]. "
        "Prints figures, not pass/fail.")
    p.add_argument("--sizes", default="100000,300000,1000000",
                   help="payment counts, comma-separated (default 100000,300000,1000000)")
    p.add_argument("--database", default="paystream_reconcile_bench")
    p.add_argument("--rate", type=float, default=100000.0,
                   help="Stripe requests/s given to the run (default: no real limit; the "
                   "figure at --default-rate is computed from the requests)")
    p.add_argument("--default-rate", type=float, default=10.0,
                   help="the CLI's default rate, half of STRIPE_REQUESTS_PER_SECOND (10)")
    p.add_argument("--timer-runs", type=int, default=0,
                   help="also run the worker's incremental reconciliation this many times "
                   "(ten minutes apart on its clock) and print its memory after each")
    p.add_argument("--keep-db", action="store_true", help="leave the database for a look")
    sub = p.add_subparsers(dest="mode")
    peer = sub.add_parser("peer", help=argparse.SUPPRESS)
    for name in ("--count", "--base", "--spacing-ms", "--port"):
        peer.add_argument(name, type=int, required=True)
    run = sub.add_parser("child", help=argparse.SUPPRESS)
    run.add_argument("command", nargs="+")
    t = sub.add_parser("timer", help=argparse.SUPPRESS)
    t.add_argument("--runs", type=int, default=10)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.mode == "peer":
        asyncio.run(serve_peer(args.count, args.base, args.spacing_ms, args.port))
        return 0
    if args.mode == "child":
        return child(args.command)
    if args.mode == "timer":
        timer(args.runs)
        return 0
    for count in [int(n) for n in args.sizes.split(",")]:
        figures = run_size(args, count)
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

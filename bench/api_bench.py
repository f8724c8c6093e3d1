"""Create-payment throughput and latency of the API against pgbench's single-row inserts.

    .venv/bin/python -m bench.api_bench [--levels 1,8,32,64] [--seconds 5] [--workers 1,2]

For each concurrency level, N connections send ``POST /v1/payments`` (each with
a fresh Idempotency-Key, so the whole path runs: auth, rate limit, Redis lock,
INSERT, LSN, cached answer) back to back for a fixed time. The load comes from
wrk (C, like pgbench, so the client's own CPU does not eat the 2 cores the
server needs; bench/create_payment.lua numbers the keys). Then one open-loop
run at half the best throughput measures latency at a steady, unsaturated
load. In the same run pgbench inserts single rows on the same primary, through
the same DATABASE_URL the API uses, at the same client counts, into two scratch
tables (created and dropped here): a narrow row, and a copy of `payments` with
the API's own INSERT; the ratio to each is printed. Without --api-url
the API is started as a subprocess (`paystream api --workers N` on a free port,
rate limit lifted) once per --workers value and stopped after its levels.

Not a test: numbers depend on the machine; the issue's target is API throughput
of at least 30% of pgbench's rate, with p99 under 50 ms at half of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import uvloop

from bench import cpu, harness
from testkit import rows, stack
from testkit.ports import free_port
from testkit.stats import percentile

ROOT = Path(__file__).resolve().parents[1]

PGBENCH_DEFAULT = "/usr/lib/postgresql/15/bin/pgbench"
SCRATCH = "bench_api_scratch"
BODY = {
    "amount": 1050,
    "currency": "usd",
    "customer": "cus_bench",
    "payment_method": "pm_card_visa",
    "description": "bench",
    "metadata": {"run": "bench"},
}


@dataclass
class Result:
    level: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    # wrk reports percentiles rather than every latency.
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile (0..100) of the latency in milliseconds."""
        given = {50: self.p50_ms, 99: self.p99_ms}.get(int(p))
        if given is not None:
            return given
        return percentile(self.latencies, p / 100) * 1000

    def line(self) -> str:
        return (f"  api  {self.level:<14} {self.throughput:8.0f} creates/s   "
                f"p50 {self.percentile(50):6.1f} ms   p99 {self.percentile(99):6.1f} ms   "
                f"({self.requests} ok, {self.errors} errors, {self.seconds:.1f} s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.parser(
        __doc__, epilog="Not a test: the figures depend on the machine (2 shared cores here).")
    parser.add_argument("--levels", default="1,8,32,64",
                        help="comma-separated client concurrency levels (default: 1,8,32,64)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured seconds per level, after a 1 s warm-up (default: 5)")
    parser.add_argument("--api-url", default=None,
                        help="benchmark an API already running there (its rate limit applies: "
                        "set RATE_LIMIT_PER_SECOND high); default: start one on a free port")
    parser.add_argument("--database-url",
                        default=os.environ.get("DATABASE_ADMIN_URL")
                        or os.environ.get("DATABASE_URL"),
                        help="primary for pgbench and the bench merchant "
                        "(default: DATABASE_ADMIN_URL, else DATABASE_URL)")
    parser.add_argument("--pgbench", default=shutil.which("pgbench") or PGBENCH_DEFAULT,
                        help=f"pgbench binary (default: {PGBENCH_DEFAULT})")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                        help="API process counts to start and measure in turn "
                        "(default: 1 and the number of cores)")
    parser.add_argument("--connect-url", default=os.environ.get("CONNECT_URL"),
                        help="Kafka Connect, whose Debezium connector is paused while "
                        "measuring (default: CONNECT_URL; empty: leave it running)")
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench baseline")
    return parser.parse_args(argv)


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the API at {url} did not answer /health within {timeout:.0f}s")


def cancel_created(database_url: str, merchant_id: str) -> int:
    """Cancel the bench's payments (pending -> canceled, the merchant's own cancel).

    Left pending, tens of thousands of them would go to localstripe once the
    stack's worker resumes, and it pickles its whole store on every write: the
    stack would be busy for hours. Canceled, the worker only files them.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute("UPDATE payments SET status = 'canceled', updated_at = now() "
                           "WHERE merchant_id = %s AND status = 'pending'", (merchant_id,))
        return cur.rowcount


def closed_loop(url: str, key: str, concurrency: int, seconds: float) -> Result:
    """`concurrency` connections, each sending its next create as soon as the last answers."""
    env = {**os.environ, "BENCH_API_KEY": key, "BENCH_RUN": uuid.uuid4().hex[:12],
           "BENCH_BODY": json.dumps(BODY)}
    threads = min(concurrency, os.cpu_count() or 1)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
         "--timeout", "10s", "-s", str(ROOT / "bench" / "create_payment.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    )
    match = re.search(r"^BENCH (.*)$", out.stdout, re.MULTILINE)
    if match is None:
        raise SystemExit(f"could not read wrk's summary:\n{out.stdout}\n{out.stderr}")
    fields = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    return Result(f"c={concurrency}", int(fields["created"]),
                  int(fields["other"] + fields["errors"]), fields["seconds"], [],
                  p50_ms=fields["p50_ms"], p99_ms=fields["p99_ms"])


# Keep-alive connections the open loop spreads its requests over; a request
# waiting for a free one counts that wait as latency.
OPEN_LOOP_CONNECTIONS = 64


async def read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response off a keep-alive connection; its status code."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def open_loop(url: str, key: str, rate: float, seconds: float) -> Result:
    """Requests at a fixed rate whatever the answers; latency counts from the scheduled
    send time, so a stall is not hidden by clients that stopped sending (coordinated
    omission). A bare HTTP/1.1 client on uvloop: aiohttp's client would spend the
    CPU the server needs."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(BODY).encode()
    head = (f"POST /v1/payments HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
    run = uuid.uuid4().hex[:12]
    latencies: list[float] = []
    errors = 0
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(OPEN_LOOP_CONNECTIONS):
        idle.put_nowait(await asyncio.open_connection(host, int(port)))

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        reader, writer = await idle.get()
        writer.write(f"{head}Idempotency-Key: {run}-{i}\r\n\r\n".encode() + body)
        status = await read_response(reader)
        idle.put_nowait((reader, writer))
        if status == 201:
            latencies.append(time.perf_counter() - scheduled)
        else:
            errors += 1

    start = time.perf_counter() + 0.2
    await asyncio.gather(*(one(i, start + i / rate) for i in range(int(rate * seconds))))
    while not idle.empty():
        idle.get_nowait()[1].close()
    return Result(f"rate={rate:.0f}/s", len(latencies), errors, seconds, latencies)


def pgbench(binary: str, database_url: str, clients: int, seconds: float, script: Path) -> float:
    out = subprocess.run(
        [binary, "-n", "-M", "prepared", "-f", str(script), "-c", str(clients),
         "-j", str(min(clients, os.cpu_count() or 1)), "-T", str(max(1, round(seconds))),
         database_url],
        capture_output=True, text=True, check=True,
    )
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if match is None:
        raise SystemExit(f"could not read pgbench's tps:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


# pgbench's baselines: a narrow row, and a row of `payments` itself (a copy of the
# table with its indexes and checks, the API's very INSERT ... ON CONFLICT ...
# RETURNING): the second is what the API's one write costs Postgres, so its ratio
# is the API's own overhead.
BASELINES = {
    "narrow row": (
        "(id bigserial PRIMARY KEY, amount bigint NOT NULL, currency text NOT NULL, "
        "customer text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
        "INSERT INTO {table} (amount, currency, customer) VALUES (1050, 'usd', 'cus_bench');",
    ),
    "payment row": (
        "(LIKE payments INCLUDING ALL)",
        "\\set n random(1, 1000000000000)\n"
        "INSERT INTO {table} (id, merchant_id, amount, currency, customer, payment_method, "
        "description, metadata, idempotency_key, request_fingerprint) VALUES "
        "('pay_' || md5(:n::text || random()::text), 'acct_bench', 1050, 'usd', 'cus_bench', "
        "'pm_card_visa', NULL, '{{}}', md5(random()::text), md5(:n::text)) "
        "ON CONFLICT (merchant_id, idempotency_key) DO NOTHING RETURNING *;",
    ),
}


def run_pgbench(args: argparse.Namespace, levels: list[int], pids: dict[str, int]
                ) -> dict[str, dict[int, float]]:
    results: dict[str, dict[int, float]] = {}
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        for name, (columns, insert) in BASELINES.items():
            conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
            conn.execute(f"CREATE TABLE {SCRATCH} {columns}")
            # pgbench connects as the table's owner or a superuser; make the app role able too.
            conn.execute(f"GRANT ALL ON {SCRATCH} TO PUBLIC")
            results[name] = {}
            with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
                handle.write(insert.format(table=SCRATCH) + "\n")
                script = Path(handle.name)
            try:
                for clients in levels:
                    before = cpu.tree_seconds(pids)
                    tps = pgbench(args.pgbench, args.database_url, clients, args.seconds, script)
                    results[name][clients] = tps
                    costs = cpu.per_item_ms(before, cpu.tree_seconds(pids),
                                            max(1, round(tps * args.seconds)))
                    print(f"  pgbench {name:<12} c={clients:<4} {tps:8.0f} inserts/s   "
                          f"cpu ms/insert: {cpu.line(costs)}", flush=True)
            finally:
                script.unlink(missing_ok=True)
                conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
    return results


def start_api(workers: int, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1",
           "RATE_LIMIT_PER_SECOND": "10000000"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "paystream"), "api", "--workers", str(workers)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return url, proc


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def measure(url: str, key: str, label: str, levels: list[int], seconds: float,
            pids: dict[str, int]) -> tuple[dict[int, Result], Result]:
    """The closed-loop levels, then the open loop at half the best of them."""
    print(f"API {url} ({label}); {seconds:.0f} s per level; {os.cpu_count()} cores", flush=True)
    results: dict[int, Result] = {}
    for level in levels:
        before = cpu.tree_seconds(pids)
        results[level] = closed_loop(url, key, level, seconds)
        print(results[level].line(), flush=True)
        # Where each create's CPU went: the target is bound by the 2 shared cores.
        costs = cpu.per_item_ms(before, cpu.tree_seconds(pids), max(1, results[level].requests))
        print(f"       cpu ms/create: {cpu.line(costs)}", flush=True)
    best = max(results.values(), key=lambda r: r.throughput)
    half = uvloop.run(open_loop(url, key, best.throughput / 2, seconds))
    print(half.line() + "   <- open loop at half the best rate", flush=True)
    return results, half


def measure_api(args: argparse.Namespace, key: str, levels: list[int]
                ) -> dict[str, tuple[dict[int, Result], Result]]:
    """Every configuration: the API at --api-url, or one started per --workers value."""
    runs: dict[str, tuple[dict[int, Result], Result]] = {}
    pids = stack.running_pids()
    if args.api_url:
        url = args.api_url.rstrip("/")
        wait_healthy(url, None)
        runs["given API"] = measure(url, key, "given API", levels, args.seconds, pids)
    else:
        log = ROOT / ".stack" / "logs" / "bench-api.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        for workers in (int(x) for x in args.workers.split(",") if x.strip()):
            label = f"{workers} process{'es' if workers > 1 else ''}"
            url, proc = start_api(workers, log)
            try:
                runs[label] = measure(url, key, label, levels, args.seconds,
                                      {**pids, "api": proc.pid})
            finally:
                stop_api(proc)
        print(f"(API log: {log})")
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.database_url:
        raise SystemExit("set DATABASE_URL (eval \"$(make -s env)\") "
                         "or pass --database-url")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: run make install (it comes from Debian's wrk package)")
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    merchant = rows.create_merchant_sync(args.database_url, "Bench")
    merchant_id, key = merchant.id, merchant.api_key
    # The stack's stream worker and Debezium would process every created payment
    # on the same two cores while we measure (Connect alone takes most of a core):
    # both paused meanwhile (testkit/stack.py). The changes wait in the replication
    # slot, and both catch up afterwards; nothing is lost.
    with stack.StackPaused(args.connect_url) as paused:
        print(f"({paused.describe()} while measuring; resumed after)", flush=True)
        try:
            runs = measure_api(args, key, levels)
            base = {} if args.no_pgbench else run_pgbench(args, levels, stack.running_pids())
        finally:
            print(f"(canceled the bench's {cancel_created(args.database_url, merchant_id)} "
                  "payments, so the stack's worker does not send them to localstripe)",
                  flush=True)
    if not base:
        return 0
    for label, (api, half) in runs.items():
        best = max(api.values(), key=lambda r: r.throughput)
        for name, tps in base.items():
            print(f"ratio, {label}, vs pgbench {name} (API creates/s / inserts/s at the same "
                  "client count):")
            print("  " + "  ".join(f"c={level} {api[level].throughput / tps[level]:.1%}"
                                  for level in levels))
            print(f"  best API {best.throughput:.0f}/s ({best.level}) vs best pgbench "
                  f"{max(tps.values()):.0f}/s: {best.throughput / max(tps.values()):.1%} "
                  "(target >= 30%)")
        print(f"  p99 at half the best API rate {half.percentile(99):.1f} ms (target < 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

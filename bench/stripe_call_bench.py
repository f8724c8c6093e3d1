"""CPU per create-and-confirm PaymentIntent call through StripeGateway, against the instant peer.

    .venv/bin/python -m bench.stripe_call_bench [--calls 2000] [--rounds 5] \\
        [--compare-with /tmp/base]

What one approved payment costs the worker in its Stripe call: the stripe SDK,
aiohttp and our gateway (budget, breaker, metrics, error mapping), without
Kafka, Postgres or Faust. It starts bench/stripe_peer.py as a process of its
own (no latency, no rate limit: localstripe's instant shape) on a free port of
127.0.0.1, then runs each variant of the code in a fresh child process that
builds the real StripeGateway from paystream.settings.Settings pointed at the
peer and makes --calls create-and-confirm calls (pm_card_visa, each its own
payment id), --concurrency at a time, after --warmup calls left out.

CPU per call is the child's time.process_time() (user + system of that process
only) over the measured calls: the peer's CPU is in another process and never
counted; it is shown apart (from /proc) so a peer that became the bottleneck
shows. Every call must answer `succeeded`, and the peer must count exactly one
PaymentIntent per call made (no retries, no duplicates), else the run fails.

--compare-with DIR: DIR holds another version of the `streams` and `paystream`
packages (e.g. `git archive main streams paystream | tar -x -C /tmp/base`); the
children alternate between DIR's code ("before") and this checkout's ("after"),
round by round, swapping which goes first each round, and the report gives each
one's median and spread over the rounds and the ratio of the medians.
Progress goes to stderr; stdout carries the results (one JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cpu

CARD = "pm_card_visa"
AMOUNT = 1050
REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the child: one variant's calls, in a process of its own -------------------------


async def _calls(url: str, calls: int, warmup: int, concurrency: int) -> dict[str, Any]:
    # Imported here, after child() put the variant's code first on sys.path.
    from paystream.domain import PaymentStatus
    from paystream.settings import Settings
    from streams.adapters import stripe_gateway
    from streams.resilience import RequestBudget
    from streams.rows import PaymentRow

    settings = Settings.from_env({"STRIPE_API_BASE": url})
    # A budget that never makes a call wait: its bookkeeping is counted, not its pauses.
    gateway = stripe_gateway.StripeGateway(settings, budget=RequestBudget(1e9))
    run = os.urandom(4).hex()
    created = datetime.now(UTC)

    def payment(i: int) -> PaymentRow:
        return PaymentRow(
            id=f"pay_bench{run}{i:07d}", merchant_id="mer_bench", amount=AMOUNT,
            currency="usd", status=PaymentStatus.PENDING, customer=f"customer_{run}_{i}",
            payment_method=CARD, description=None, metadata={}, amount_refunded=0,
            stripe_payment_intent_id=None, failure_code=None, failure_message=None,
            created_at=created)

    statuses: dict[str, int] = {}

    async def batch(start: int, stop: int) -> None:
        queue = iter(range(start, stop))

        async def caller() -> None:
            for i in queue:
                pi = await gateway.create_payment_intent(payment(i))
                statuses[pi.status] = statuses.get(pi.status, 0) + 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))

    try:
        await batch(0, warmup)
        statuses.clear()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        await batch(warmup, warmup + calls)
        cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    finally:
        await gateway.close()
    return {"code": str(Path(stripe_gateway.__file__).resolve().parent.parent.parent),
            "calls": calls, "cpu_ms_per_call": cpu_s * 1000 / calls,
            "calls_per_s": calls / wall_s, "statuses": statuses}


def child(args: argparse.Namespace) -> int:
    if args.code:
        sys.path.insert(0, str(Path(args.code).resolve()))
    import uvloop  # the worker's loop (streams/cli.py)

    result = uvloop.run(_calls(args.url, args.calls, args.warmup, args.concurrency))
    expected = Path(args.code).resolve() if args.code else REPO
    if Path(result["code"]) != expected:
        raise SystemExit(f"imported the gateway from {result['code']}, not {expected}")
    print(json.dumps(result), flush=True)
    return 0


# --- the parent: the peer, the children, the report ----------------------------------


@dataclass
class Peer:
    process: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls) -> Peer:
        # Port 0: the peer binds a free one and prints its URL first.
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.stripe_peer", "--host", "127.0.0.1", "--port", "0",
             "--latency-ms", "0", "--jitter-ms", "0", "--tail-ratio", "0", "--rate-limit", "0"],
            cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("stripe peer on "):
            process.kill()
            raise SystemExit(f"the peer did not start: {line!r}")
        return cls(process, line.split()[3])

    def payment_intents(self) -> int:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as resp:
            return int(json.load(resp)["payment_intents"])

    def cpu_seconds(self) -> float:
        return cpu.tree_seconds({"peer": self.process.pid})["peer"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Variant:
    name: str
    code: str | None  # None: this checkout
    runs: list[dict[str, Any]] = field(default_factory=list)

    def figures(self, key: str) -> list[float]:
        return [float(run[key]) for run in self.runs]

    def summary(self) -> dict[str, Any]:
        cpu_ms, rate = self.figures("cpu_ms_per_call"), self.figures("calls_per_s")
        peer_ms = self.figures("peer_cpu_ms_per_call")
        return {"code": self.code or str(REPO), "runs": len(self.runs),
                "cpu_ms_per_call": {"median": statistics.median(cpu_ms), "min": min(cpu_ms),
                                    "max": max(cpu_ms), "each": [round(x, 4) for x in cpu_ms]},
                "calls_per_s": {"median": statistics.median(rate), "min": min(rate),
                                "max": max(rate)},
                "peer_cpu_ms_per_call_median": statistics.median(peer_ms)}


def run_child(peer: Peer, variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.stripe_call_bench", "--child", "--url", peer.url,
               "--calls", str(args.calls), "--warmup", str(args.warmup),
               "--concurrency", str(args.concurrency)]
    if variant.code:
        command += ["--code", variant.code]
    before_pis, before_cpu = peer.payment_intents(), peer.cpu_seconds()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{variant.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    made = peer.payment_intents() - before_pis
    # The peer's CPU over the whole child, warm-up included: for information only.
    result["peer_cpu_ms_per_call"] = ((peer.cpu_seconds() - before_cpu) * 1000
                                      / (args.calls + args.warmup))
    if made != args.calls + args.warmup or result["statuses"] != {"succeeded": args.calls}:
        raise SystemExit(f"{variant.name}: {made} PaymentIntents for "
                         f"{args.calls + args.warmup} calls, answers {result['statuses']}")
    return result


def report(variants: list[Variant], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "calls_per_run": args.calls, "warmup": args.warmup, "concurrency": args.concurrency,
        "rounds": args.rounds, "variants": {v.name: v.summary() for v in variants}}
    if len(variants) == 2:
        before, after = (v.summary()["cpu_ms_per_call"]["median"] for v in variants)
        out["after_over_before"] = after / before
        # Each round's two runs were next to each other in time: their ratio is less
        # at the mercy of whatever else the machine was doing than the medians are.
        pairs = sorted(a / b for a, b in zip(variants[1].figures("cpu_ms_per_call"),
                                             variants[0].figures("cpu_ms_per_call"),
                                             strict=True))
        out["paired_after_over_before"] = {"median": statistics.median(pairs),
                                           "min": pairs[0], "max": pairs[-1]}
    return out


def print_report(out: dict[str, Any]) -> None:
    print(f"{out['rounds']} round(s) of {out['calls_per_run']} calls per variant "
          f"(+{out['warmup']} warm-up), {out['concurrency']} in flight, uvloop; "
          "CPU of the calling process only (time.process_time)")
    for name, v in out["variants"].items():
        c, r = v["cpu_ms_per_call"], v["calls_per_s"]
        print(f"  {name:7} {c['median']:.4f} ms/call CPU (min {c['min']:.4f}, max "
              f"{c['max']:.4f}; each {c['each']}), {r['median']:.0f} calls/s; peer "
              f"{v['peer_cpu_ms_per_call_median']:.3f} ms/call  [{v['code']}]")
    if "after_over_before" in out:
        pairs = out["paired_after_over_before"]
        print(f"  after/before: {out['after_over_before']:.3f} (of the medians); "
              f"round by round {pairs['median']:.3f} (median; min {pairs['min']:.3f}, "
              f"max {pairs['max']:.3f})")


def parent(args: argparse.Namespace) -> int:
    variants = [Variant("after", None)]
    if args.compare_with:
        base = Path(args.compare_with).resolve()
        if not (base / "streams" / "adapters" / "stripe_gateway.py").is_file():
            raise SystemExit(f"{base} holds no streams/adapters/stripe_gateway.py")
        variants.insert(0, Variant("before", str(base)))
    peer = Peer.start()
    log(f"peer on {peer.url} (pid {peer.process.pid}, instant, unlimited)")
    try:
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else variants[::-1]
            for variant in order:
                result = run_child(peer, variant, args)
                variant.runs.append(result)
                log(f"round {round_no + 1}/{args.rounds} {variant.name}: "
                    f"{result['cpu_ms_per_call']:.4f} ms/call CPU, "
                    f"{result['calls_per_s']:.0f} calls/s, peer "
                    f"{result['peer_cpu_ms_per_call']:.3f} ms/call")
    finally:
        peer.stop()
    out = report(variants, args)
    if args.json:
        print(json.dumps(out))
    else:
        print_report(out)
    return 0


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module's docstring as written, and each option's default."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.stripe_call_bench", description=__doc__,
        epilog="Example: git archive main streams paystream | tar -x -C /tmp/base; "
        "python -m bench.stripe_call_bench --compare-with /tmp/base --rounds 5",
        formatter_class=_Formatter)
    p.add_argument("--calls", type=int, default=2000, help="measured calls per run")
    p.add_argument("--warmup", type=int, default=200,
                   help="calls made first in each run and left out (connections, imports)")
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs per variant, interleaved between variants")
    p.add_argument("--compare-with", metavar="DIR",
                   help="a directory holding the `streams` and `paystream` packages to "
                   "measure as 'before' against this checkout's ('after')")
    p.add_argument("--json", action="store_true", help="print the results as one JSON")
    # Internal: one run of one variant, started by the parent.
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--code", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.calls < 1 or args.rounds < 1 or args.concurrency < 1 or args.warmup < 0:
        raise SystemExit("--calls, --rounds and --concurrency must be positive")
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())

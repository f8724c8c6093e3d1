"""The price of replication: the approved path's free phase on each topology, from one run.

For each topology of BENCH_TOPOLOGIES (e.g. `small,ha`) the stack is taken down and
brought up in it (`STACK_TOPOLOGY=... make up`), then `bench.stripe_bench --phases
free` runs against it; the figures are printed side by side with their ratio to the
first. A switch empties Kafka (the CDC topics are snapshotted again), so `make bench`
runs this only when BENCH_TOPOLOGIES is set; the stack is left in the topology it
ran before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import harness
from testkit import stack

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ("small", "ha")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def switch_to(topology: str) -> None:
    """`make down`, then `make up` in topology; raises with make's output when it fails."""
    log(f"== the stack in the {topology} topology (make down, make up)")
    stack.make("down")
    done = stack.make("up", env={"STACK_TOPOLOGY": topology})
    if done.returncode != 0:
        raise SystemExit(f"STACK_TOPOLOGY={topology} make up failed:\n"
                         f"{(done.stdout + done.stderr)[-2000:]}")


def free_phase(seconds: float) -> dict[str, Any]:
    """stripe_bench's free phase against the running stack; its JSON result."""
    env = {**os.environ, **stack.env()}
    done = subprocess.run([sys.executable, "-m", "bench.stripe_bench", "--phases", "free",
                           "--free-seconds", str(seconds), "--json"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"bench.stripe_bench failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summary(result: dict[str, Any]) -> dict[str, float | None]:
    """Approved payments per second and CPU ms per payment (Kafka nodes summed)."""
    cpu: dict[str, float] = result.get("free_cpu_ms_per_payment") or {}
    return {
        "approved_per_s": result.get("free_succeeded_per_s"),
        "cpu_ms_total": cpu.get("total"),
        "cpu_ms_kafka": round(sum(v for k, v in cpu.items() if k.startswith("kafka")), 2),
        "cpu_ms_worker": round(sum(v for k, v in cpu.items() if "worker" in k
                                   and k != "watchdog"), 2),
        "machine_idle_share": result.get("free_machine_idle_share"),
    }


def ratios(rows: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Each topology's figures over the first one's."""
    first = next(iter(rows.values()))

    def ratio(value: float | None, base: float | None) -> float | None:
        return round(value / base, 2) if value is not None and base else None

    return {name: {key: ratio(value, first[key]) for key, value in row.items()}
            for name, row in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, epilog="BENCH_TOPOLOGIES (default: skip) names them, "
                            "comma-separated, from " + ", ".join(TOPOLOGIES) + ".")
    parser.add_argument("--free-seconds", type=float, default=45.0,
                        help="the free phase's offered time on each topology (default 45)")
    args = harness.parse(parser, argv)
    wanted = [t.strip() for t in os.environ.get("BENCH_TOPOLOGIES", "").split(",") if t.strip()]
    if not wanted:
        log("skipped: set BENCH_TOPOLOGIES=small,ha to compare them (each switch empties "
            "Kafka; the stack comes back in its topology)")
        return 0
    unknown = set(wanted) - set(TOPOLOGIES)
    if unknown:
        parser.error(f"BENCH_TOPOLOGIES: unknown {sorted(unknown)}; known: {TOPOLOGIES}")
    before = stack.env().get("STACK_TOPOLOGY", "small")
    # From here the topology `make up` last recorded is the one every stack command
    # acts on (`make bench` exports the one it started with, which goes stale).
    os.environ.pop("STACK_TOPOLOGY", None)
    rows: dict[str, dict[str, float | None]] = {}
    try:
        for topology in wanted:
            switch_to(topology)
            rows[topology] = summary(free_phase(args.free_seconds))
            log(f"  {topology}: {rows[topology]}")
    finally:
        if stack.env().get("STACK_TOPOLOGY", "small") != before:
            switch_to(before)
    result: dict[str, Any] = {f"{t}_{k}": v for t, row in rows.items() for k, v in row.items()}
    result.update({f"{t}_over_{wanted[0]}_{k}": v for t, row in ratios(rows).items()
                   if t != wanted[0] for k, v in row.items()})
    harness.show(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One fault: kill -9 a component under the load, `make up`, and what that cost (a table row)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from stack.chaos.driving import kill_now, log, make_up
from stack.chaos.ha import HA_FAULTS
from stack.chaos.load import Load, probe_payment

PROFILES = {
    "short": ["worker", "api", "redis", "postgres-replica1"],
    "full": ["worker", "connect", "kafka", "postgres-replica1", "postgres-replica2", "redis",
             "api", "postgres-primary", "localstripe"],
    # STACK_TOPOLOGY=ha only: one process of each replicated kind killed in turn with
    # no `make up` between the kills, then one `make up` (stack/chaos/ha.py).
    "ha": HA_FAULTS,
    # STACK_TOPOLOGY=ha only: the workers restarted, killed and frozen in turn, no
    # `make up` between (stack/chaos/restarts.py).
    "restarts": ["worker", "worker-2"],
}


@dataclass
class FaultResult:
    fault: str
    make_up_rc: int
    make_up_s: float
    transient: int
    failed: int
    to_2xx_s: float | None
    to_resolved_s: float | None
    probe_status: str | None = None  # how the probe payment ended ("succeeded" is good)


def back_to_2xx(attempts: list[tuple[float, bool]], since: float, until: float) -> float:
    """Seconds from since to the first good answer after the last bad one before until."""
    bad = [t for t, ok in attempts if since <= t <= until and not ok]
    if not bad:
        return 0.0
    good = [t for t, ok in attempts if ok and t > bad[-1]]
    return (good[0] if good else until) - since


async def inject(fault: str, load: Load, settle: float) -> FaultResult:
    transient_before = load.client.transient
    failed_before = sum(1 for o in load.orders if o.failed_for_good)
    killed_at = time.monotonic()
    # "make-up": the ha profile's closing `make up`, after kills of its own.
    if not kill_now(fault) and fault != "make-up":
        log(f"{fault} was not running")
    # Let the load run into the hole for a moment, as it would before anyone noticed.
    await asyncio.sleep(settle)
    rc, took, output = await asyncio.to_thread(make_up)
    if rc != 0:
        log(f"make up failed ({rc}) after {fault}:\n{output[-2000:]}")
    resolved, probe_status = await probe_payment(load.client, timeout=120)
    up_done = time.monotonic()
    return FaultResult(
        fault, rc, took, load.client.transient - transient_before,
        sum(1 for o in load.orders if o.failed_for_good) - failed_before,
        back_to_2xx(load.client.attempts, killed_at, up_done), resolved, probe_status)


def print_table(results: list[FaultResult]) -> None:
    head = ("fault", "make up", "up s", "transient", "failed", "2xx again s", "succeeded s")
    print("  ".join(f"{h:>12}" for h in head))
    for r in results:
        cells = (r.fault, f"rc {r.make_up_rc}", f"{r.make_up_s:.1f}", r.transient, r.failed,
                 "-" if r.to_2xx_s is None else f"{r.to_2xx_s:.1f}", probe_cell(r))
        print("  ".join(f"{c!s:>12}" for c in cells))


def probe_cell(r: FaultResult) -> str:
    """Seconds until the probe succeeded; any other ending says how it ended."""
    if r.to_resolved_s is None:
        return f"never ({r.probe_status})" if r.probe_status else "never"
    seconds = f"{r.to_resolved_s:.1f}"
    return seconds if r.probe_status == "succeeded" else f"{seconds} {r.probe_status}"

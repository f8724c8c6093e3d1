"""CPU time of the stack's processes, each counted with its descendants (Linux /proc).

The stack's components and their root pids come from testkit.stack's
`running_pids()` (`python3 -m stack json`). A benchmark on a 2-core machine
measures the whole stack at once: Postgres,
Connect, Kafka, localstripe, the API and the worker share the cores. Dividing
each one's CPU by the payments it handled says where the budget goes, and how
many cores a target rate needs, independently of how busy the machine was.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system seconds of the process and of its reaped children),
    None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICK


def tree_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named root pid and every process under it.

    A child that exited counts once its parent reaped it (pgbench's backends end
    with its run; Postgres reaps them at once); one that was reparented to init
    on the way is lost, which none of the stack's processes do.
    """
    parent: dict[int, int] = {}
    own: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parent[int(entry)], own[int(entry)] = stat
    name_of = {pid: name for name, pid in roots.items()}
    totals: dict[str, float] = defaultdict(float)
    for pid, seconds in own.items():
        ancestor, hops = pid, 0
        while ancestor not in name_of and ancestor in parent and hops < 64:
            ancestor, hops = parent[ancestor], hops + 1
        if ancestor in name_of:
            totals[name_of[ancestor]] += seconds
    return {name: totals.get(name, 0.0) for name in roots}


def idle_rate(roots: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    """CPU seconds per second each component spends doing nothing for us (timers,
    polls, heartbeats), measured over `seconds` of quiet."""
    before = tree_seconds(roots)
    time.sleep(seconds)
    after = tree_seconds(roots)
    return {name: max(0.0, (after[name] - before[name]) / seconds) for name in roots}


def per_item_ms(before: dict[str, float], after: dict[str, float], items: int, *,
                elapsed: float = 0.0, idle: dict[str, float] | None = None) -> dict[str, float]:
    """CPU milliseconds per item of each component between two snapshots, and the total.

    With `idle` (from idle_rate) and the seconds elapsed between the snapshots, the
    quiet-time share is taken off: at a few items per second, timers and polls
    would otherwise dominate the figure.
    """
    idle = idle or {}
    costs = {name: round(max(0.0, 1000 * (after[name] - before.get(name, 0.0)
                                          - idle.get(name, 0.0) * elapsed) / items), 2)
             for name in after}
    costs["total"] = round(sum(costs.values()), 2)
    return costs


def line(costs: dict[str, float]) -> str:
    """The non-zero costs of per_item_ms, for one printed line."""
    return "  ".join(f"{name} {ms}" for name, ms in costs.items() if ms)

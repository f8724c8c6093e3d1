"""bench/cpu.py: CPU of process trees from /proc, and the per-item arithmetic."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_cpu", Path(__file__).resolve().parents[3] / "bench" / "cpu.py")
assert _spec is not None and _spec.loader is not None
cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu)


def test_per_item_ms_divides_the_delta_and_totals() -> None:
    costs = cpu.per_item_ms({"pg": 1.0, "kafka": 2.0}, {"pg": 1.5, "kafka": 2.1}, 100)
    assert costs == {"pg": 5.0, "kafka": 1.0, "total": 6.0}


def test_per_item_ms_takes_the_idle_share_off_and_never_goes_negative() -> None:
    costs = cpu.per_item_ms({"pg": 0.0, "kafka": 0.0}, {"pg": 1.0, "kafka": 0.1}, 10,
                            elapsed=2.0, idle={"pg": 0.25, "kafka": 0.5})
    # pg: (1.0 - 0.25 * 2) / 10 s; kafka idled more than it spent: 0, not negative.
    assert costs == {"pg": 50.0, "kafka": 0.0, "total": 50.0}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_tree_seconds_counts_a_child_that_exited_once_reaped() -> None:
    me = {"me": os.getpid()}
    before = cpu.tree_seconds(me)["me"]
    # A child that burns ~0.3 s of CPU and exits; run() reaps it.
    subprocess.run([sys.executable, "-c",
                    "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    assert cpu.tree_seconds(me)["me"] - before >= 0.25


def test_line_lists_the_non_zero_costs() -> None:
    assert cpu.line({"pg": 5.0, "redis": 0.0, "total": 5.0}) == "pg 5.0  total 5.0"

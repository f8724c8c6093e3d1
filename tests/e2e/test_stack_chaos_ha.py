"""The ha chaos profiles, short: one process of each replicated kind killed in turn under load
with no make up between the kills; payments go on, then one make up, and the books hold.
And the two workers restarted, killed -9 and frozen in turn: no event committed unhandled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import stack

pytestmark = pytest.mark.disruptive
ROOT = Path(__file__).resolve().parents[2]


def topology() -> str:
    """The running stack's topology, as `make env` says it (small when it does not)."""
    return os.environ.get("STACK_TOPOLOGY") or stack.env().get("STACK_TOPOLOGY", "small")


def chaos(*args: str) -> str:
    """`python -m stack.chaos ARGS` on the ha stack; its report, printed whatever the outcome,
    after checking that it held (no MISSED sentence, every invariant, exit 0)."""
    if topology() != "ha":
        pytest.skip("the stack runs the small topology: these profiles kill one of several "
                    "brokers, Connect workers, Faust workers and API processes, which only "
                    "STACK_TOPOLOGY=ha make up starts (CI runs them after the small suite)")
    done = subprocess.run([sys.executable, "-m", "stack.chaos", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500, check=False)
    report = done.stdout + done.stderr
    # The per-fault table and the invariants' verdict, whatever the outcome.
    print(report)
    assert "MISSED" not in report, report[-4000:]
    assert "invariants: all hold" in report, report[-4000:]
    assert done.returncode == 0, report[-4000:]
    return report


def test_ha_chaos_profile_keeps_paying_through_each_kill_and_keeps_the_books() -> None:
    chaos("--profile", "ha", "--rate", "4", "--dwell", "25", "--drain", "240")


def test_workers_restarted_killed_and_frozen_in_turn_leave_no_event_unhandled() -> None:
    # Each worker each way once: a rebalance with events in flight every few seconds.
    report = chaos("--profile", "restarts", "--rounds", "6", "--interval", "4",
                   "--drain", "240")
    assert "6 rounds:" in report, report[-4000:]


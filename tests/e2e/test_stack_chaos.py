"""The short chaos profile: kill -9 under load, one make up each, every money invariant holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.disruptive
ROOT = Path(__file__).resolve().parents[2]


def test_short_chaos_profile_recovers_and_keeps_the_books() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stack.chaos", "--profile", "short", "--rate", "4",
         "--drain", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    report = done.stdout + done.stderr
    # The table and the invariants' verdict, whatever the outcome.
    print(report)
    assert "invariants: all hold" in report, report[-4000:]
    assert done.returncode == 0, report[-4000:]

"""bench/cpu.py on a real child process: its CPU counts once it is reaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cpu


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_tree_seconds_counts_a_child_that_exited_once_reaped() -> None:
    me = {"me": os.getpid()}
    before = cpu.tree_seconds(me)["me"]
    # A child that burns ~0.3 s of CPU and exits; run() reaps it.
    subprocess.run([sys.executable, "-c",
                    "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)
    assert cpu.tree_seconds(me)["me"] - before >= 0.25

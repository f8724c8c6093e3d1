"""Past its deadline a process stuck in a call exits 70 at once, naming what it waited on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from streams import deadline

ROOT = Path(__file__).resolve().parents[3]

STUCK = textwrap.dedent("""
    import logging, sys, time
    from streams.deadline import Deadlines
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    d = Deadlines()
    d.run(every=0.05)
    with d.watch("a commit that never returns", 0.3):
        time.sleep(30)  # the main thread stuck, as in an uncancellable call
    print("returned")
""")



def test_past_a_deadline_the_process_exits_70_at_once_naming_what_it_waited_on() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True,
                          cwd=ROOT, timeout=25)
    assert done.returncode == deadline.EXIT_CODE == 70, done.stderr
    assert time.monotonic() - started < 20  # not the 30 s sleep
    assert "returned" not in done.stdout
    assert "deadline passed: waited" in done.stderr
    assert "on a commit that never returns" in done.stderr
    assert "paystream-deadlines" in done.stderr or "Thread" in done.stderr  # thread dump

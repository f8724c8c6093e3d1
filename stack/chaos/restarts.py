"""The restarts profile (ha): the Faust workers taken down and brought back one after the
other under the load, with no `make up`, in the three ways partitions move in
production: a clean restart (a deploy), a kill -9 started again at once (a crash
and its supervisor), a freeze past the 15 s session timeout (SIGSTOP, then SIGCONT:
a long GC pause or a stalled host; the worker comes back a generation behind).

Each one is a rebalance with events in flight. What must not happen is a commit
past an event no worker handled: a payment left pending, a journal missing, a
balance short (streams/current_acks.py). The money invariants after the drain
say whether it did.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from stack.chaos.driving import WORKER_ENV, kill_now, log
from testkit import stack

WAYS = ("restart", "kill", "freeze")
FREEZE_SECONDS = 20.0  # past the workers' 15 s session timeout


async def cycle(names: list[str], rounds: int, interval: float) -> list[str]:
    """Take the named workers down in turn, each way in turn; what was done, in order."""
    done: list[str] = []
    for i in range(rounds):
        name = names[i % len(names)]
        way = WAYS[(i // len(names)) % len(WAYS)]
        log(f"round {i + 1}/{rounds}: {way} {name}")
        await asyncio.to_thread(_take_down_and_back, name, way)
        done.append(f"{way} {name}")
        await asyncio.sleep(interval)
    return done


def _take_down_and_back(name: str, way: str) -> None:
    if way == "freeze":
        pid = stack.pids().get(name)
        if pid:
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(FREEZE_SECONDS)
            finally:
                os.kill(pid, signal.SIGCONT)
        return
    if way == "restart":
        stack.run_stack("stop", name)
    else:
        kill_now(name, " (restarts profile)")
    # Started with the load's fraud setting, as `make up` in this run does.
    stack.run_stack("start", name, env={**os.environ, **WORKER_ENV})

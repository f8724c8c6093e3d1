"""The stack as chaos drives it from outside: `make up` with the load's worker setting, and a
log line; its endpoints, pids and a merchant of the run's own come from testkit."""

from __future__ import annotations

import os
import signal
import time

from stack.config import HA_FAUST_WORKERS
from testkit import stack

# The worker must not block the load as a card-testing attack (one test card).
WORKER_ENV = {"FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD": "100000000"}
# Restarted with WORKER_ENV at the start: the worker, and the watchdog, whose own
# environment a worker it starts again after a kill inherits. Without it that
# worker blocks the load (seen: 133 of 173 payments, the probe too, after a kill -9
# of the worker that the watchdog answered 3 s later, before `make up`).
RESTARTED_WITH_WORKER_ENV = ("worker", "watchdog")


def restarted_with_worker_env(topology: str) -> tuple[str, ...]:
    """RESTARTED_WITH_WORKER_ENV and, in the ha topology, the other workers (worker-2)."""
    if topology != "ha":
        return RESTARTED_WITH_WORKER_ENV
    return RESTARTED_WITH_WORKER_ENV + tuple(f"worker-{n}"
                                             for n in range(2, HA_FAUST_WORKERS + 1))


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_up() -> tuple[int, float, str]:
    """`make up` with WORKER_ENV: its exit code, seconds and output."""
    started = time.monotonic()
    done = stack.make("up", env=WORKER_ENV)
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def kill_now(name: str, why: str = "") -> bool:
    """kill -9 the stack's process called name, logged; False when it was not running."""
    pid = stack.pids().get(name)
    if not pid:
        return False
    log(f"kill -9 {name} (pid {pid}){why}")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True

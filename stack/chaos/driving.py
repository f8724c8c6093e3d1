"""The stack as chaos drives it from outside: its endpoints and pids (`python3 -m stack`),
`make up` with the load's worker setting, a merchant of the run's own."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

from stack.config import ROOT

# Run from the checkout, which holds the stack package.
STACK = [sys.executable, "-m", "stack"]
# The worker must not block the load as a card-testing attack (one test card).
WORKER_ENV = {"FRAUD_MAX_PAYMENTS_PER_PAYMENT_METHOD": "100000000"}
# Restarted with WORKER_ENV at the start: the worker, and the watchdog, whose own
# environment a worker it starts again after a kill inherits. Without it that
# worker blocks the load (seen: 133 of 173 payments, the probe too, after a kill -9
# of the worker that the watchdog answered 3 s later, before `make up`).
RESTARTED_WITH_WORKER_ENV = ("worker", "watchdog")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def stack_env() -> dict[str, str]:
    out = subprocess.run([*STACK, "env"], cwd=ROOT, capture_output=True, text=True, check=True)
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


def stack_pids() -> dict[str, int | None]:
    out = subprocess.run([*STACK, "json"], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name: info["pid"] for name, info in json.loads(out.stdout).items()}


def make_up() -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run(["make", "-s", "up"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **WORKER_ENV}, check=False)
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr



async def new_merchant() -> tuple[str, str]:
    made = subprocess.run([str(ROOT / ".venv" / "bin" / "paystream"), "merchant", "create",
                           "Chaos " + secrets.token_hex(3)], capture_output=True, text=True,
                          check=True, env={**os.environ, **stack_env()})
    merchant = json.loads(made.stdout)
    return merchant["id"], merchant["api_key"]

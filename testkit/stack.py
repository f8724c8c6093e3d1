"""The running stack as `python3 -m stack` reports it, and `StackPaused` while a run measures.

Everything goes through the stack's own command line, run in this checkout with
this interpreter: `json` for pids and health, `env` for endpoints, `stop` and
`start` for one component. `PAYSTREAM_STACK_DIR` in the environment names
which stack (a stack on shifted ports has a folder of its own).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from testkit import connector

ROOT = Path(__file__).resolve().parents[1]
# Run in ROOT, the checkout that holds the stack package.
STACK = [sys.executable, "-m", "stack"]
# What a test's or bench's worker sets that the stack's own worker must not inherit.
WORKER_OVERRIDES = ("POLL_INTERVAL_SECONDS", "FAUST_APP_ID", "CDC_TOPIC_PREFIX")


def run_stack(*args: str, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python3 -m stack ARGS` in the checkout; never raises for its exit code."""
    return subprocess.run([*STACK, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def make(target: str, timeout: float = 900,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`make -s TARGET` in the checkout (env: extra environment for it)."""
    return subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env=None if env is None else {**os.environ, **env})


def components() -> dict[str, dict[str, Any]]:
    """{name: {"port", "pid", "up"}} of every component (`python3 -m stack json`)."""
    out = run_stack("json", timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"python3 -m stack json failed: {out.stderr.strip()}")
    found: dict[str, dict[str, Any]] = json.loads(out.stdout)
    return found


def pids() -> dict[str, int | None]:
    """Every component's pid, None for one not running."""
    return {name: state["pid"] for name, state in components().items()}


def running_pids() -> dict[str, int]:
    """The pid of every component that runs."""
    return {name: pid for name, pid in pids().items() if pid}


def up() -> set[str]:
    """The names of the components that are up (running and answering)."""
    return {name for name, state in components().items() if state["up"]}


def is_up(name: str) -> bool:
    try:
        return bool(components()[name]["up"])
    except (RuntimeError, ValueError, KeyError, TypeError):
        return False


def env() -> dict[str, str]:
    """{NAME: value} of every endpoint (`python3 -m stack env`, what `make env` prints)."""
    out = run_stack("env", timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"python3 -m stack env failed: {out.stderr.strip()}")
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name:
            found[name] = shlex.split(value)[0] if value else ""
    return found


def admin_url() -> str:
    """DATABASE_ADMIN_URL (a superuser), else what `make env` says it is for the stack."""
    url = os.environ.get("DATABASE_ADMIN_URL") or env().get("DATABASE_ADMIN_URL")
    if not url:
        raise RuntimeError("DATABASE_ADMIN_URL is not set (a superuser): "
                           "eval \"$(make -s env)\" first")
    return url


def worker_names() -> list[str]:
    """The stack's Faust workers: "worker", and in the ha topology "worker-2" too."""
    return [name for name in components() if name == "worker" or name.startswith("worker-")]


def stop_worker() -> None:
    """Stop every worker of the stack (in ha a second one would go on consuming)."""
    names = worker_names() or ["worker"]
    done = run_stack("stop", *names, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"python3 -m stack stop {' '.join(names)} failed: "
                           f"{done.stdout}{done.stderr}")


def start_worker() -> None:
    """Start the stack's workers in their own environment: none of a run's worker settings."""
    run_stack("start", *(worker_names() or ["worker"]), timeout=300,
              env={k: v for k, v in os.environ.items() if k not in WORKER_OVERRIDES})


class StackPaused:
    """`with StackPaused(connect_url):` the stack's worker stopped and its connector
    paused for the block, both as they were after it (each restarted or resumed only
    if this stopped or paused it).

    A run with workers of its own would race the stack's worker for its payments;
    and a benchmark with a change feed of its own beside the stack's would make
    Postgres and Connect decode everything twice (testkit/cdc_feed.py).
    """

    def __init__(self, connect_url: str | None = None, *, pause_connector: bool = True) -> None:
        self._url = connect_url if pause_connector else None
        self._connector = connector.paused(self._url)
        self.worker_stopped = False
        self.connector_paused = False

    def __enter__(self) -> StackPaused:
        if any(is_up(name) for name in worker_names()):
            stop_worker()
            self.worker_stopped = True
        try:
            self.connector_paused = self._connector.__enter__()
        except BaseException:
            self._restart()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._connector.__exit__(kind, err, tb)
        finally:
            self._restart()

    def _restart(self) -> None:
        if self.worker_stopped:
            start_worker()
            self.worker_stopped = False

    def describe(self) -> str:
        return (f"stack worker {'stopped' if self.worker_stopped else 'not running'}, "
                f"stack connector {'paused' if self.connector_paused else 'left as it was'}")

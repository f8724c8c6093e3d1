"""`paystream worker` processes of a run's own: started, awaited ready, stopped, read.

Each has its own environment (group, topics, web port, data folder) and log
file, and runs in a session of its own so that a signal reaches it and its
children.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
PAYSTREAM = ROOT / ".venv" / "bin" / "paystream"


class WorkerFailed(RuntimeError):
    """A worker exited, or did not become ready in time; the message ends with its log."""


def clean_env() -> dict[str, str]:
    """This process's environment without the fraud settings and pytest's variables a
    worker must not inherit from the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "PYTEST"))}


@dataclasses.dataclass
class WorkerProcess:
    """A `paystream worker` subprocess; env names its FAUST_WEB_PORT."""

    name: str
    env: dict[str, str]
    log_path: Path
    level: str = "info"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["FAUST_WEB_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"worker {self.name} not started"
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(PAYSTREAM), "worker", "-l", self.level],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True)

    def exited(self) -> int | None:
        """Its exit code once it is gone, else None (also before it is started)."""
        return None if self.proc is None else self.proc.poll()

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        """Whether /ready/ answers 200 now; WorkerFailed if it exited."""
        if self.exited() is not None:
            raise WorkerFailed(f"worker {self.name} exited {self.exited()}:\n{self.tail()}")
        try:
            async with http.get(f"{self.url}/ready/",
                                timeout=aiohttp.ClientTimeout(total=3)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def wait_ready(self, timeout: float = 120.0) -> None:
        await wait_all_ready([self], timeout)

    async def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON body, or the text when it is not JSON) of GET path."""
        async with aiohttp.ClientSession() as http, http.get(
            f"{self.url}{path}", timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            body = await resp.text()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body

    def terminate(self) -> None:
        """SIGTERM to its session, without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


async def wait_all_ready(workers: Iterable[WorkerProcess], timeout: float = 120.0) -> None:
    """Until every worker answers ready at once (one joining later rebalances the others);
    WorkerFailed when one exits or the time is up."""
    pending = list(workers)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            answers = [await worker.ready(http) for worker in pending]
            if all(answers):
                return
            await asyncio.sleep(0.5)
    late = [w for w in pending if w.exited() is None]
    raise WorkerFailed(f"workers {[w.name for w in late]} not ready in {timeout:.0f}s:\n"
                       + "\n".join(w.tail() for w in late[:1]))


async def stop_all(workers: Iterable[WorkerProcess], timeout: float = 60.0) -> None:
    """SIGTERM every one, wait without blocking the event loop (a peer served in this
    process goes on answering their last calls), SIGKILL those still there."""
    running = [w for w in workers if w.exited() is None and w.proc is not None]
    for worker in running:
        worker.terminate()
    deadline = time.monotonic() + timeout
    while any(w.exited() is None for w in running) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    for worker in running:
        if worker.exited() is None:
            worker.kill9()

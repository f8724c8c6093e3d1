"""localstripe's PaymentIntents/s with a large store: through the launcher and as shipped.

1. seed: --objects objects built in this process through localstripe's own
   classes (PaymentIntents created and confirmed with pm_card_visa, exactly as
   over HTTP: each leaves a PaymentIntent, a charge, a balance transaction, an
   event and three payment methods), written once to a private store file.
2. launcher: stack.localstripe on a free port and a copy of that
   store; --clients clients create and confirm PaymentIntents over HTTP for
   --seconds. Reported: PaymentIntents/s, latency, the CPU it spent (its writer
   children included), how often it replaced its store file (a checkpoint) and
   how many fsynced appends its change log made (each answer waits for one).
3. unpatched: localstripe's own entry point (localstripe.server.start) on the
   same objects for --baseline-seconds, its pickle path redirected to a private
   file; nothing else is changed. Its own loader cannot read a store of more
   than ~1,000 objects (it rewrites the file while reading it), so the objects
   are preloaded into its store first, which is what it would hold had it
   created them itself.

Neither touches the stack's localstripe or /tmp/localstripe.pickle.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import cpu, harness
from stack.localstripe.compat import DEFAULT_STORE
from stack.localstripe.patch import install
from testkit.ports import free_port
from testkit.stats import percentile

ROOT = Path(__file__).resolve().parents[1]

API_KEY = "sk_test_localstripe_bench"
PAYMENT_INTENT = {"amount": "1050", "currency": "usd", "payment_method": "pm_card_visa",
                  "confirm": "true"}


def seed(path: Path, objects: int) -> dict[str, Any]:
    """Fills localstripe's store in this process and writes it once to path."""
    from localstripe import resources

    # The launcher's patch: no write per object, and no scan of the store per
    # list (each confirm lists refunds), or seeding would take minutes.
    patch = install(resources, path, fork=False)
    started = time.monotonic()
    try:
        asyncio.run(_create(resources, objects, started))
        patch.writer.write()
    finally:
        dict.clear(resources.store)
        patch.undo()
    return {"seed_s": round(time.monotonic() - started, 1),
            "store_mb": round(path.stat().st_size / 1e6, 1)}


async def _create(resources: Any, objects: int, started: float) -> None:
    # In a running loop, as in the server: each success schedules its webhook
    # task (none is registered; asyncio.run cancels them at the end).
    step = max(1, objects // 5)
    shown = 0
    store = resources.store
    while len(store) < objects:
        resources.PaymentIntent._api_create(**PAYMENT_INTENT)
        if len(store) >= shown + step or len(store) >= objects:
            shown = len(store) // step * step
            print(f"seeding: {len(store):,}/{objects:,} objects "
                  f"({time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)


class Server:
    """A localstripe subprocess of the bench's own (its own session, killed with it)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT,
                                         start_new_session=True)

    async def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        url = f"http://127.0.0.1:{self.port}/v1/customers"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            while time.monotonic() - started < timeout:
                if self.proc.poll() is not None:
                    raise SystemExit(f"localstripe exited; see {self.log}:\n"
                                     + self.log.read_text(errors="replace")[-2000:])
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return time.monotonic() - started
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit(f"localstripe not ready in {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 60) -> tuple[float, int | None]:
        """SIGTERM, then seconds until it exited and its exit code (None: killed)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return time.monotonic() - started, None
        return time.monotonic() - started, self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def drive(server: Server, name: str, clients: int, seconds: float,
                store: Path) -> dict[str, Any]:
    """Creates and confirms PaymentIntents for `seconds` from `clients` clients; the
    ones still under way then are waited for and counted."""
    url = f"http://127.0.0.1:{server.port}/v1/payment_intents"
    latencies: list[float] = []
    failures: list[str] = []
    stop_at = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=120)

    async def client(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            async with http.post(url, data=PAYMENT_INTENT) as resp:
                body = await resp.json()
            if resp.status == 200 and body.get("status") == "succeeded":
                latencies.append(time.monotonic() - sent)
            else:
                failures.append(f"{resp.status} {str(body)[:200]}")

    writes = 0

    async def count_writes() -> None:
        # The launcher replaces the file (new inode); localstripe rewrites it in place.
        nonlocal writes
        last = _stamp(store)
        while True:
            await asyncio.sleep(0.02)
            if (now := _stamp(store)) != last:
                writes, last = writes + 1, now

    pid = {name: server.proc.pid}
    cpu_before = cpu.tree_seconds(pid)
    children_before = _children_cpu(server.proc.pid)
    started = time.monotonic()
    watcher = asyncio.create_task(count_writes())
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=timeout) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.monotonic() - started
    watcher.cancel()
    cpu_s = cpu.tree_seconds(pid)[name] - cpu_before[name]
    children_s = _children_cpu(server.proc.pid) - children_before
    if failures:
        print(f"{name}: {len(failures)} failed, e.g. {failures[0]}", file=sys.stderr)
    done = len(latencies)
    return {
        f"{name}_payment_intents": done,
        f"{name}_payment_intents_per_s": round(done / elapsed, 1),
        f"{name}_failed": len(failures),
        f"{name}_latency_p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        f"{name}_latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        # CPU seconds per second of wall time, children (the launcher's writers) included.
        f"{name}_cpu_cores": round(cpu_s / elapsed, 2),
        f"{name}_cpu_ms_per_payment_intent": round(1000 * cpu_s / done, 1) if done else None,
        # Of which its exited children: the launcher's forked store writers.
        f"{name}_writer_cpu_cores": round(children_s / elapsed, 2),
        f"{name}_store_writes": writes,
    }


def _children_cpu(pid: int) -> float:
    """CPU seconds of the reaped children of pid (cutime + cstime in /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / cpu.TICK


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


async def run(args: argparse.Namespace, work: Path, seeded: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    store = work / "launcher.pickle"
    shutil.copyfile(seeded, store)
    port = free_port()
    server = Server([sys.executable, "-m", "stack.localstripe",
                     "--port", str(port), "--store", str(store)], port, work / "launcher.log")
    try:
        result["launcher_ready_s"] = round(await server.wait_ready(120), 1)
        result.update(await drive(server, "launcher", args.clients, args.seconds, store))
        exit_s, code = server.stop()
        result["launcher_exit_s"] = round(exit_s, 1)
        result["launcher_exit_code"] = code
        # Its last line: "... (writes since start: N, log commits: N)".
        commits = re.search(r"log commits: (\d+)", server.log.read_text(errors="replace"))
        result["launcher_log_commits"] = int(commits[1]) if commits else None
    finally:
        server.kill()

    if args.baseline_seconds > 0:
        private = work / "unpatched.pickle"
        port = free_port()
        server = Server([sys.executable, "-m", "bench.localstripe_bench", "--serve-unpatched",
                         str(port), str(seeded),
                         str(private)], port, work / "unpatched.log")
        try:
            result["unpatched_ready_s"] = round(await server.wait_ready(120), 1)
            result.update(await drive(server, "unpatched", args.baseline_clients,
                                      args.baseline_seconds, private))
        finally:
            server.kill()
        if result["unpatched_payment_intents_per_s"]:
            result["speedup"] = round(result["launcher_payment_intents_per_s"]
                                      / result["unpatched_payment_intents_per_s"], 1)
    return result


def serve_unpatched(port: int, seeded: Path, private: Path) -> None:
    """localstripe as shipped, on a private pickle, holding the seeded objects."""
    from localstripe import resources, server

    def redirected_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(DEFAULT_STORE):
            file = private
        return builtins.open(file, *args, **kwargs)

    # Store's methods name the path as a literal and look `open` up in their module
    # first: this changes where they read and write, and nothing else.
    resources.open = redirected_open
    with open(seeded, "rb") as file:
        objects = _PlainStore(file).load()
    dict.update(resources.store, objects)
    sys.argv = [sys.argv[0], "--port", str(port), "--from-scratch"]
    server.start()


class _PlainStore(pickle.Unpickler):
    """Reads a pickled Store as a plain dict: Store.__setitem__ would write the
    file once per object while it loads."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("localstripe.resources", "Store"):
            return dict
        return super().find_class(module, name)


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(
        __doc__,
        epilog="Target: at least 100 PaymentIntents/s at 50,000 objects through the launcher.")
    parser.add_argument("--objects", type=int, default=50_000,
                        help="objects in the store before the runs (default 50000)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of the launcher's run (default 10)")
    parser.add_argument("--clients", type=int, default=4,
                        help="concurrent HTTP clients against the launcher (default 4)")
    parser.add_argument("--baseline-seconds", type=float, default=10.0,
                        help="length of the unpatched run, 0 to skip (default 10)")
    parser.add_argument("--baseline-clients", type=int, default=1,
                        help="clients against the unpatched one (default 1: it answers one "
                        "request at a time, several seconds each at 50,000 objects)")
    parser.add_argument("--serve-unpatched", nargs=3, metavar=("PORT", "SEED", "STORE"),
                        help=argparse.SUPPRESS)
    args = harness.parse(parser, argv)
    if args.serve_unpatched:
        port, seeded, private = args.serve_unpatched
        serve_unpatched(int(port), Path(seeded), Path(private))
        return 0
    work = Path(tempfile.mkdtemp(prefix="localstripe-bench-"))
    try:
        result: dict[str, Any] = {"objects": args.objects, "clients": args.clients}
        seeded = work / "seed.pickle"
        result.update(seed(seeded, args.objects))
        result.update(asyncio.run(run(args, work, seeded)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    harness.show(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

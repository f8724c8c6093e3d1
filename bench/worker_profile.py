"""Where a worker's CPU goes: a sampling profile, written for speedscope and summed by layer.

    .venv/bin/python -m bench.worker_profile record [--pid PID] [--seconds 25] [--name NAME]
    .venv/bin/python -m bench.worker_profile summary FILE.txt [--top 25]

`record` attaches py-spy (PyPI) to a running worker (by default the stack's,
as `python3 -m stack json` names it; a benchmark's worker by --pid) and writes, under
.stack/artifacts/profiles/:

- NAME.txt: the samples as collapsed stacks (flamegraph.pl and speedscope read it),
- NAME.speedscope.json: the same for https://www.speedscope.app,
- NAME.layers.txt: the summary below.

The summary gives each layer's share of the samples by self time (the frame on
top of the stack: where the CPU is spent) and the share of each step of ours by
inclusive time (what it costs with everything it calls), then the top frames.
Profile a worker while it is busy (`make profile` runs a burst of approved
payments through a bench worker and records it); samples of an idle worker
say nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from testkit import stack

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".stack" / "artifacts" / "profiles"

# (layer, path prefixes of its files as py-spy names them), first match wins. The
# order matters where a layer sits inside another's folder (Faust's codecs).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("our code", ("streams/", "paystream/", "api/")),
    ("faust codecs", ("faust/serializers/", "faust/models/")),
    ("faust tables", ("faust/tables/", "faust/stores/")),
    ("faust dispatch", ("faust/",)),
    ("mode", ("mode/",)),
    ("aiokafka produce", ("aiokafka/producer/",)),
    ("aiokafka fetch/commit", ("aiokafka/consumer/",)),
    ("aiokafka protocol/conn", ("aiokafka/", "kafka/")),
    ("JSON", ("json/", "orjson", "simplejson/")),
    ("psycopg", ("psycopg/", "psycopg_pool/", "psycopg_binary/")),
    ("Stripe SDK", ("stripe/",)),
    ("aiohttp", ("aiohttp/", "yarl/", "multidict/", "aiosignal/", "frozenlist/",
                 "propcache/", "aiohappyeyeballs/")),
    ("RocksDB", ("rocksdict/",)),
    ("metrics", ("prometheus_client/",)),
    ("asyncio", ("asyncio/", "uvloop/", "contextvars", "weakref.py", "selectors.py")),
    ("logging", ("logging/",)),
)

# Our steps, told apart by a frame of theirs anywhere on the stack (inclusive time).
STEPS: tuple[tuple[str, str], ...] = (
    ("changes agent (fraud route, ledger, notify)", "streams/agents/changes.py"),
    ("fraud stages", "streams/agents/fraud.py"),
    ("submit agent", "streams/agents/submit.py"),
    ("Stripe sequence", "streams/stripe_sequence.py"),
    ("pending agent", "streams/agents/pending.py"),
    ("ledger and balances", "streams/agents/ledger.py"),
    ("poller", "streams/agents/poller.py"),
    ("database calls (Runtime.with_db)", "streams/runtime.py"),
    ("Stripe calls (SDK + aiohttp)", "stripe/"),
    ("producer buffer (Faust sends)", "faust/transport/producer.py"),
    ("aiokafka consumer (fetch, commit)", "aiokafka/consumer/"),
    ("aiokafka producer (batches, sends)", "aiokafka/producer/"),
    ("Faust consumer (conductor, offsets)", "faust/transport/consumer.py"),
    ("table changelogs", "faust/tables/"),
    ("web views", "streams/views.py"),
)


# A sample whose top Python frame is where an event loop was started was in the loop
# itself (uvloop is C: polling sockets, running callbacks): the main thread's loop,
# or the consumer thread's loop that Faust runs aiokafka's fetcher in.
EVENT_LOOP_FRAMES = ("Worker.execute_from_commandline (mode/worker.py",
                     "ServiceThread._start_thread (mode/threads.py")


def layer_of(frame: str) -> str:
    """The layer of one py-spy frame, `function (path/file.py:line)`."""
    if frame.startswith(EVENT_LOOP_FRAMES):
        return "event loop (uvloop, C)"
    where = frame.rsplit("(", 1)[-1]
    for layer, prefixes in LAYERS:
        if any(where.startswith(p) or f"/{p}" in where for p in prefixes):
            return layer
    return "other (stdlib, click, ...)"


def read_collapsed(path: Path) -> Iterator[tuple[list[str], int]]:
    """(frames from the root, samples) for each line of a collapsed-stack file."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarise(samples: Iterable[tuple[list[str], int]], top: int = 25) -> str:
    by_layer: Counter[str] = Counter()
    by_step: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    total = 0
    for frames, count in samples:
        total += count
        by_layer[layer_of(frames[-1])] += count
        by_frame[frames[-1]] += count
        joined = ";".join(frames)
        for step, marker in STEPS:
            if f"({marker}" in joined or f"/{marker}" in joined:
                by_step[step] += count
    if not total:
        return "no samples (was the worker busy?)"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"{total} samples", "", "self time by layer:"]
    lines += [f"  {pct(n)}  {name}" for name, n in by_layer.most_common()]
    lines += ["", "inclusive time by step (a sample can count in several):"]
    lines += [f"  {pct(n)}  {name}" for name, n in by_step.most_common()]
    lines += ["", f"top {top} frames by self time:"]
    lines += [f"  {pct(n)}  {name}" for name, n in by_frame.most_common(top)]
    return "\n".join(lines)


def to_speedscope(samples: list[tuple[list[str], int]], name: str) -> dict[str, object]:
    """The collapsed stacks as a speedscope 'sampled' profile."""
    index: dict[str, int] = {}
    stacks: list[list[int]] = []
    weights: list[int] = []
    for frames, count in samples:
        stacks.append([index.setdefault(f, len(index)) for f in frames])
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in index]},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                      "endValue": sum(weights), "samples": stacks, "weights": weights}],
        "name": name,
    }


def stack_worker_pid() -> int:
    """The stack's worker's pid (`python3 -m stack json`)."""
    pid = stack.pids().get("worker")
    if not pid:
        raise SystemExit("no running stack worker (python3 -m stack json); give --pid")
    return pid


def record(pid: int, seconds: float, name: str, rate: int) -> Path:
    """Sample pid for seconds; write NAME.txt, NAME.speedscope.json and NAME.layers.txt."""
    spy = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: run make install")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    raw = ARTIFACTS / f"{name}.txt"
    print(f"recording pid {pid} for {seconds:.0f} s at {rate} samples/s ...", file=sys.stderr)
    # --nonblocking: the worker is never paused (a paused worker misses heartbeats);
    # some samples are torn and dropped, which py-spy reports as errors.
    subprocess.run([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate),
                    "--nonblocking", "--format", "raw", "-o", str(raw)],
                   check=True, stdout=subprocess.DEVNULL)
    samples = list(read_collapsed(raw))
    (ARTIFACTS / f"{name}.speedscope.json").write_text(json.dumps(to_speedscope(samples, name)))
    summary = ARTIFACTS / f"{name}.layers.txt"
    summary.write_text(summarise(samples) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "Files go to .stack/artifacts/profiles/; open NAME.speedscope.json at "
        "https://www.speedscope.app or feed NAME.txt to flamegraph.pl."))
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="sample a running worker")
    rec.add_argument("--pid", type=int, help="the worker's pid (default: the stack's worker)")
    rec.add_argument("--seconds", type=float, default=25.0, help="how long (default 25)")
    rec.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    rec.add_argument("--name", default=f"worker-{os.getpid()}",
                     help="file name stem under .stack/artifacts/profiles/")
    show = commands.add_parser("summary", help="summarise a collapsed-stack file again")
    show.add_argument("file", type=Path)
    show.add_argument("--top", type=int, default=25, help="frames listed (default 25)")
    args = parser.parse_args(argv)
    if args.command == "record":
        summary = record(args.pid or stack_worker_pid(), args.seconds, args.name, args.rate)
        print(summary.read_text())
        print(f"written: {summary.parent}/{args.name}.{{txt,speedscope.json,layers.txt}}")
    else:
        if not args.file.exists():
            raise SystemExit(f"{args.file}: no such file")
        print(summarise(read_collapsed(args.file), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

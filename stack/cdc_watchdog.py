"""The stack's watchdog: every few seconds, look at CDC and repair what cdc.Repairer can.

Run by `make up` as a component (`python3 -m stack watchdog`), with its own pid
file and log. It logs each change of verdict and every repair, and rewrites a
small state file each round: a state file that stops changing means the
watchdog itself is stuck, which `make status` reports.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stack import cdc

INTERVAL_S = 10.0


def log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", flush=True)


def write_state(path: Path, verdicts: dict[str, str | None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"at": time.time(), "pid": os.getpid(), "cdc": verdicts}))
    tmp.replace(path)


def fresh(path: Path, max_age: float, *, pid: int | None) -> bool:
    """Whether watchdog `pid` wrote its state file in the last `max_age` seconds."""
    try:
        state = json.loads(path.read_text())
        return state["pid"] == pid and time.time() - float(state["at"]) < max_age
    except (OSError, ValueError, KeyError, TypeError):
        return False


Watched = Sequence[tuple[Callable[[], cdc.State], cdc.Repairer]]


def run(watching: Watched | Callable[[], Watched], *,
        kafka_up: Callable[[], bool], state_file: Path, interval: float = INTERVAL_S,
        rounds: int | None = None,
        also: Sequence[Callable[[bool], list[str]]] = ()) -> None:
    """Checks and repairs every `interval` seconds, forever unless `rounds` is given.

    `watching`: what to look at, or a function that says so afresh each round
    (the ha topology's Connect worker that answers may change). `also`: more
    checks run each round with whether Kafka answers (restarting an exited
    worker); each returns what it did, logged as is.
    """
    watched = watching() if callable(watching) else watching
    log(f"watching {', '.join(r.conn.name for _, r in watched)} every {interval:.0f}s")
    last: dict[str, str | None] = {}
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        if done and callable(watching):
            try:
                watched = watching()
            except Exception as err:  # one bad round must not end the watchdog
                log(f"listing what to watch failed: {err!r}")
        up = kafka_up()
        verdicts: dict[str, str | None] = {}
        for look, repair in watched:
            name = repair.conn.name
            try:
                state = look()
                reason = cdc.verdict(state, kafka_up=up)
                actions = repair(state, kafka_up=up)
            except Exception as err:  # one bad round must not end the watchdog
                reason, actions = f"check failed: {err!r}", []
            if name not in last or reason != last[name]:
                log(f"{name}: {'streaming' if reason is None else reason}")
            for action in actions:
                log(f"{name}: {action}")
            verdicts[name] = reason
        for check in also:
            try:
                done_now = check(up)
            except Exception as err:  # one bad round must not end the watchdog
                done_now = [f"check failed: {err!r}"]
            for action in done_now:
                log(action)
        last = verdicts
        write_state(state_file, verdicts)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

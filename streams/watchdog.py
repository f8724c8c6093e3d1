"""The worker's own health: its partitions assigned, and advancing wherever there is lag.

A worker can be up and useless: left its consumer group after a long stall
(it does not rejoin on its own), or stuck behind one agent while messages
wait. `/health/` (what `make status` asks) reports both, and a worker that
stays unassigned or stalled past EXIT_AFTER_SECONDS stops itself, so that it
is seen as down and restarted (`make up`) instead of sitting there quietly.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Joining the group and recovering tables takes this long at most on a start or
# a rebalance; unassigned for longer means the worker is out of its group.
# Measured (2 cores): a restart is ready in 3-5 s (13 s after a kill -9, the
# group waiting for the dead member), its recovery replaying what came after the
# last commit in under 1 s; a fresh data folder replayed ~33k changelog records/s
# (estimated ~16 s for the 534k records of a stack after its benches). Joining waits
# at most the rebalance timeout (30 s).
UNASSIGNED_GRACE_SECONDS = 60.0
# Defaults of WATCHDOG_STALL_SECONDS (a partition with messages waiting whose
# committed offset has not moved for this long is stalled: an agent handles a
# batch in well under a second; 15 s above STRIPE_OUTAGE_PATIENCE_SECONDS, 45 s,
# which a full submit window waits out, and above a table recovery, during which
# nothing commits) and
# WATCHDOG_EXIT_AFTER_SECONDS (unhealthy for this long: stop, and be restarted).
# From the last move to the stop: at most 60 + 5 + 15 + 5 = 85 s. A commit that
# hangs is ended sooner by its own deadline (streams/deadline.py).
STALL_SECONDS = 60.0
EXIT_AFTER_SECONDS = 15.0
CHECK_EVERY_SECONDS = 5.0


@dataclass
class Health:
    assigned: bool
    stalled: list[str]
    unhealthy_for: float
    # Messages waiting per (topic, partition) whose committed offset is known.
    lag: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.assigned and not self.stalled

    def as_json(self) -> dict[str, Any]:
        return {"assigned": self.assigned, "advancing": not self.stalled,
                "stalled_partitions": self.stalled,
                "unhealthy_for_seconds": round(self.unhealthy_for, 1)}


@dataclass
class Progress:
    """Tracks, per partition, when its committed offset last moved while lag was waiting.

    Fed with what the consumer knows (assigned partitions, committed offsets,
    high watermarks), so it is a pure function of those and a clock.
    """

    clock: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.monotonic)
    stall_seconds: float = STALL_SECONDS
    _unassigned_since: float | None = None
    _moved: dict[Any, tuple[int | None, float]] = field(default_factory=dict)
    _unhealthy_since: float | None = None
    last_lag: int = 0

    def check(self, assigned: Iterable[Any], committed: Mapping[Any, int | None],
              highwater: Mapping[Any, int | None]) -> Health:
        now = self.clock()
        tps = list(assigned)
        if tps:
            self._unassigned_since = None
        elif self._unassigned_since is None:
            self._unassigned_since = max(now, self.started)
        out_of_group = (self._unassigned_since is not None
                        and now - self._unassigned_since > UNASSIGNED_GRACE_SECONDS)
        stalled: list[str] = []
        for tp in tps:
            offset, high = committed.get(tp), highwater.get(tp)
            # No offset of ours yet (nothing processed since the assignment, e.g. a
            # group started at the end): unknown, not stalled.
            waiting = offset is not None and high is not None and high > offset
            seen = self._moved.get(tp)
            if seen is None or seen[0] != offset or not waiting:
                self._moved[tp] = (offset, now)
            elif now - seen[1] > self.stall_seconds:
                stalled.append(f"{tp.topic}:{tp.partition}")
        for gone in set(self._moved) - set(tps):
            del self._moved[gone]
        lag: dict[tuple[str, int], int] = {}
        for tp in tps:
            offset, high = committed.get(tp), highwater.get(tp)
            if offset is not None and high is not None:
                lag[(tp.topic, tp.partition)] = max(0, high - offset)
        self.last_lag = sum(lag.values())
        healthy = not out_of_group and not stalled
        if healthy:
            self._unhealthy_since = None
        elif self._unhealthy_since is None:
            self._unhealthy_since = now
        return Health(assigned=not out_of_group, stalled=sorted(stalled),
                      unhealthy_for=0.0 if self._unhealthy_since is None
                      else now - self._unhealthy_since, lag=lag)


def stop_worker(reason: str) -> None:
    """Stop this worker as SIGTERM would, and for good if the stop itself hangs.

    `paystream worker` bounds the stop by WORKER_STOP_DEADLINE_SECONDS (exit 70,
    streams/deadline.py); the alarm is the backstop of a worker made without it.
    """
    log.error("worker unhealthy too long (%s): stopping so that it is restarted", reason)
    os.kill(os.getpid(), signal.SIGTERM)
    signal.signal(signal.SIGALRM, lambda *_: os._exit(1))
    signal.alarm(60)


class ConsumerWatch:
    """This worker's consumer as the watchdog sees it: one Progress for the worker's life."""

    def __init__(self, app: Any, stall_seconds: float = STALL_SECONDS) -> None:
        self._app = app
        self._progress = Progress(stall_seconds=stall_seconds)

    def health(self) -> Health:
        """Health of the worker's Faust consumer, from what it already knows (no I/O)."""
        app = self._app
        consumer = app.consumer
        try:
            tps = [tp for tp in consumer.assignment()
                   # Changelogs are read by table recovery and standbys, not by agents:
                   # nothing commits them, so they never "advance".
                   if not tp.topic.endswith("-changelog")
                   and app.topics.acks_enabled_for(tp.topic)]
        except Exception:  # no consumer yet: nothing assigned
            tps = []
        # Faust's own record of what it committed; it has no public accessor.
        committed = {tp: consumer._committed_offset.get(tp) for tp in tps}
        highwater: dict[Any, int | None] = {}
        for tp in tps:
            try:
                highwater[tp] = consumer.highwater(tp)
            except Exception:  # not fetched yet
                highwater[tp] = None
        return self._progress.check(tps, committed, highwater)

    def waiting_messages(self) -> int:
        """Messages waiting on this worker's partitions at the last check (0 before any)."""
        return self._progress.last_lag

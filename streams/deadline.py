"""Deadlines on what Faust and aiokafka can wait on for ever; past one the worker exits hard.

After a broker crash aiokafka's `commit_offsets` retries for as long as the group
coordinator is unknown (no overall deadline; `request_timeout_ms` bounds one
request), and Faust runs it in the consumer thread with no timeout: one commit at
a time, and the next commits, a rebalance's revocation, `wait_empty()` and the
stop all wait on it (faust-streaming #523, #532; robinhood/faust #596, #684;
aiokafka #875). A call already running in the consumer thread cannot be cancelled
from the main loop, so there is nothing to recover: the worker logs what it
waited on and ends with `os._exit(EXIT_CODE)`, and whatever runs it (the stack's
watchdog, `make up`, compose, systemd, Kubernetes) starts a fresh one, which
resumes from the last committed offsets.

Checked by a thread of its own, not by the event loop: it fires even when the
loop itself is what is stuck.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from streams.current_acks import CurrentGenerationConsumer, use_consumer_class

log = logging.getLogger(__name__)

# EX_SOFTWARE (sysexits.h): not a clean stop, so any restarter restarts it.
EXIT_CODE = 70
CHECK_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class Overdue:
    """A call past its deadline, and every other one still open (the context)."""

    what: str
    waited: float
    limit: float
    open: tuple[tuple[str, float], ...] = ()

    def describe(self) -> str:
        others = [f"{what} ({waited:.1f}s)" for what, waited in self.open if what != self.what]
        inside = f"; also open: {', '.join(others)}" if others else ""
        return f"waited {self.waited:.1f}s (deadline {self.limit:g}s) on {self.what}{inside}"


@dataclass
class _Open:
    what: str
    limit: float
    since: float


@dataclass
class _Trigger:
    condition: Callable[[], bool]
    what: str
    limit: float
    fired: bool = False


def exit_hard(overdue: Overdue) -> None:
    """Log what was waited on, dump every thread's stack, and end the process now.

    os._exit, not sys.exit or a signal: the loop or the consumer thread is stuck in
    a call that cannot be cancelled, so neither finally blocks nor Faust's stop
    can be trusted to run (a SIGTERM stop was seen to hang on the same commit).
    """
    log.critical("deadline passed: %s; exiting with %d so that the worker is restarted",
                 overdue.describe(), EXIT_CODE)
    try:
        # The process's own stderr: Faust replaces sys.stderr with a logging proxy,
        # which has no file descriptor for faulthandler to write to.
        faulthandler.dump_traceback(file=sys.__stderr__ or sys.stderr, all_threads=True)
    except Exception:  # no usable stderr: exit all the same
        pass
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    os._exit(EXIT_CODE)


class Deadlines:
    """The calls in progress that have a deadline, and what happens past one.

    `watch()` opens a deadline around a call; `start_when()` opens one the first
    time a condition holds (a stop that has begun). `check()` is what the thread
    started by `run()` calls every second; it is pure given the clock, so tests
    drive it with a fake clock and a fake `expire`.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 expire: Callable[[Overdue], None] = exit_hard) -> None:
        self._clock = clock
        self._expire = expire
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._triggers: list[_Trigger] = []
        self._next = 0
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, what: str, seconds: float) -> Iterator[None]:
        """Give the enclosed call `seconds` to finish."""
        with self._lock:
            token = self._next
            self._next += 1
            self._open[token] = _Open(what, seconds, self._clock())
        try:
            yield
        finally:
            with self._lock:
                del self._open[token]

    def start_when(self, condition: Callable[[], bool], what: str, seconds: float) -> None:
        """Open a deadline (never closed) the first time `condition()` is true."""
        with self._lock:
            self._triggers.append(_Trigger(condition, what, seconds))

    def open_calls(self) -> list[tuple[str, float]]:
        """What is open now and for how long, oldest first."""
        now = self._clock()
        with self._lock:
            return [(o.what, now - o.since)
                    for o in sorted(self._open.values(), key=lambda o: o.since)]

    def overdue(self) -> Overdue | None:
        """The call furthest past its deadline, if any (fires the triggers first)."""
        now = self._clock()
        with self._lock:
            for trigger in self._triggers:
                if not trigger.fired and _holds(trigger.condition):
                    trigger.fired = True
                    self._open[self._next] = _Open(trigger.what, trigger.limit, now)
                    self._next += 1
            late = [o for o in self._open.values() if now - o.since > o.limit]
            if not late:
                return None
            worst = max(late, key=lambda o: now - o.since - o.limit)
            context = tuple((o.what, now - o.since)
                            for o in sorted(self._open.values(), key=lambda o: o.since))
        return Overdue(worst.what, now - worst.since, worst.limit, context)

    def check(self) -> Overdue | None:
        """Expire the call furthest past its deadline (by default: exit the process)."""
        overdue = self.overdue()
        if overdue is not None:
            self._expire(overdue)
        return overdue

    def run(self, every: float = CHECK_EVERY_SECONDS) -> threading.Thread:
        """Check every `every` seconds from a daemon thread, for the life of the process."""
        if self._thread is None:
            def loop() -> None:
                while True:
                    time.sleep(every)
                    try:
                        self.check()
                    except Exception:  # the checker must outlive a bad round
                        log.exception("deadline check failed")

            self._thread = threading.Thread(target=loop, name="paystream-deadlines",
                                            daemon=True)
            self._thread.start()
        return self._thread


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return bool(condition())
    except Exception:  # read from another thread: try again next round
        return False


class DeadlineConsumer(CurrentGenerationConsumer):
    """The worker's consumer (current_acks.py) with its commits (and its wait for acks)
    under deadlines.

    install() makes a subclass per app with the Deadlines and the limits set.
    """

    deadlines: ClassVar[Deadlines]
    commit_seconds: ClassVar[float]
    stop_seconds: ClassVar[float]

    async def force_commit(self, topics: Any = None,
                           start_new_transaction: bool = True) -> bool:
        # One commit at a time: the next ones, a revocation and the stop all wait
        # on this one, so bounding it bounds them.
        with self.deadlines.watch(
                "the consumer commit (attached sends, the producer flush, then the offset "
                "commit in the consumer thread)", self.commit_seconds):
            return bool(await super().force_commit(
                topics, start_new_transaction=start_new_transaction))

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        with self.deadlines.watch(
                f"the offset commit of {len(offsets)} partition(s) in the aiokafka consumer "
                "thread (commit_offsets retries while the group coordinator is unknown)",
                self.commit_seconds):
            return bool(await super()._commit(offsets))

    async def wait_empty(self) -> None:
        with self.deadlines.watch("consumer.wait_empty() (agents acking what they started)",
                                  self.stop_seconds):
            await super().wait_empty()


def install(app: Any, *, commit_seconds: float, stop_seconds: float,
            deadlines: Deadlines | None = None, start: bool = True) -> Deadlines:
    """Put the app's commits, its wait for acks and its whole stop under deadlines.

    Call before the worker starts: the consumer is made from the transport's
    Consumer class when first used.
    """
    deadlines = deadlines or Deadlines()
    use_consumer_class(app, type("DeadlineConsumer", (DeadlineConsumer,), {
        "deadlines": deadlines, "commit_seconds": commit_seconds,
        "stop_seconds": stop_seconds}), "deadline.install()")
    # Stopping (SIGTERM, the stall watchdog, a crashed service) must end too: the
    # stop commits, closes the connections and flushes the producer, any of which
    # can wait on a broker that does not answer.
    deadlines.start_when(lambda: bool(app.should_stop),
                         "the worker's stop (commit, close, producer flush, "
                         "consumer thread)", stop_seconds)
    if start:
        deadlines.run()
    return deadlines

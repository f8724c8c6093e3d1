"""The checkpoint: the whole store pickled to its file, by a forked child at most once per
interval, after which the log segments it covers are deleted."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from stack.localstripe.changelog import ChangeLog
from stack.localstripe.files import atomic_dump, pickle_dump, temp_path
from stack.localstripe.report import say

# A write happens at most once per this many times its own duration.
WRITE_SPACING = 5.0


class StoreWriter:
    """Writes one store to a file at most once per interval, and only after a change.

    With fork (the default) a child process pickles a copy-on-write snapshot of
    the store while the server goes on answering. localstripe runs in one thread
    and the fork happens in a task of its event loop, so the snapshot falls
    between two steps of the loop, never inside an operation. Without fork, or
    at close, the write happens in this process.

    With a change log, each write is a checkpoint: the log moves to a new segment
    as the snapshot is taken, and the segments the written file covers are deleted
    once it is in place.
    """

    def __init__(self, store: dict[str, Any], path: Path, *, interval: float = 1.0,
                 fork: bool = True,
                 dump: Callable[[object, BinaryIO], None] = pickle_dump,
                 log: ChangeLog | None = None) -> None:
        self.store = store
        self.path = path
        self.interval = interval
        self.fork = fork
        self.dump = dump
        self.log = log
        self._covers = 0  # the last log segment the write under way covers
        self.dirty = False
        self.writes = 0
        self.failures = 0
        self._child: int | None = None
        self._last = float("-inf")
        self._spawned_at = 0.0
        # How long the last forked write took: a store of tens of thousands of
        # objects pickles for about a second, and writing it every second would
        # take a core from the server the worker is waiting on.
        self.last_took = 0.0

    @property
    def period(self) -> float:
        """The spacing of writes: the interval, or five times a write's own
        length, so the writer never uses more than about a fifth of a core."""
        return max(self.interval, WRITE_SPACING * self.last_took)

    def mark_dirty(self) -> None:
        self.dirty = True

    @property
    def writing(self) -> bool:
        """A forked child is writing the store."""
        return self._child is not None

    def write(self) -> None:
        """Writes the store now, in this process."""
        self.dirty = False
        covers = self.log.rotate() if self.log is not None else 0
        try:
            atomic_dump(self.store, self.path, self.dump, temp=temp_path(self.path))
        except BaseException:
            self.dirty = True
            self.failures += 1
            raise
        self.writes += 1
        self._written(covers)

    def _written(self, covers: int) -> None:
        if self.log is None:
            return
        try:
            self.log.drop_through(covers)
        except OSError:
            # The segments stay, and are replayed over this checkpoint: no harm.
            say(f"deleting log segments up to {covers} failed\n" + traceback.format_exc())

    def tick(self, now: float) -> None:
        """Reaps a finished child, and starts a write if one is due."""
        if self._child is not None:
            self._reap(block=False)
        if self._child is None and self.dirty and now - self._last >= self.period:
            self._last = now
            try:
                if self.fork:
                    self._spawn()
                else:
                    self.write()
            except Exception:
                say(f"writing {self.path} failed; retrying in {self.period:g}s\n"
                     + traceback.format_exc())

    def next_tick(self, now: float) -> float:
        """Seconds until tick has something to do: a child to reap, a write due, or
        (nothing changed yet) a look again in one interval."""
        if self._child is not None:
            return 0.02
        if not self.dirty:
            return self.period
        return max(0.02, self._last + self.period - now)

    def close(self, timeout: float = 60.0) -> bool:
        """Waits for a write under way, then writes what changed since (True if
        there was anything)."""
        deadline = time.monotonic() + timeout
        while self._child is not None and time.monotonic() < deadline:
            self._reap(block=False)
            time.sleep(0.01)
        if self._child is not None:
            say(f"the writer child {self._child} is stuck; killing it")
            os.kill(self._child, signal.SIGKILL)
            self._reap(block=True)
        if not self.dirty:
            return False
        self.write()
        return True

    def _spawn(self) -> None:
        self.dirty = False
        temp = temp_path(self.path)
        self._spawned_at = time.monotonic()
        # Between two steps of the loop, as the snapshot: commits from here on go to
        # a new segment, which this write does not cover.
        covers = self.log.rotate() if self.log is not None else 0
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about forking a threaded process (aiohttp's
                # resolver threads): the child takes no lock those threads may hold,
                # it only pickles, writes a file of its own and exits.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as err:
            say(f"fork failed ({err}); writing {self.path} in process")
            self.write()
            return
        if pid == 0:
            self._child_write(temp)
        self._child = pid
        self._covers = covers

    def _child_write(self, temp: Path) -> None:
        code = 1
        try:
            # The parent's asyncio signal handling must not see this child's signals,
            # and a SIGTERM to the process group must end the child at once.
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            gc.disable()
            atomic_dump(self.store, self.path, self.dump, temp=temp)
            code = 0
        except BaseException:
            # Straight to fd 2: sys.stderr's lock may belong to a thread of the parent.
            os.write(2, f"writing {self.path} failed:\n{traceback.format_exc()}".encode())
        finally:
            os._exit(code)

    def _reap(self, *, block: bool) -> None:
        assert self._child is not None
        pid, status = os.waitpid(self._child, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        self._child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self.writes += 1
            self.last_took = time.monotonic() - self._spawned_at
            self._written(self._covers)
        else:
            # Whatever it was writing is still to be written.
            self.dirty = True
            self.failures += 1
            temp_path(self.path).unlink(missing_ok=True)

    async def run(self) -> None:
        while True:
            self.tick(time.monotonic())
            await asyncio.sleep(self.next_tick(time.monotonic()))

"""The group commit: which keys changed since they were last logged, and the one writer
thread that logs them all in one write while requests wait for it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import traceback
from collections.abc import Callable

from stack.localstripe.changelog import ChangeLog
from stack.localstripe.report import say


class Changes:
    """The keys changed since they were last logged, and the group commit that logs
    them: one writer thread appends and fsyncs, in one write, every object changed
    since its previous write began (pickled as that write begins). A request is
    answered only once a write that began after its changes is done.

    localstripe changes objects in place (a confirm sets the PaymentIntent's status
    without storing it again), so what a write request read from the store is
    logged too, besides what was stored, deleted or assigned to."""

    def __init__(self, log: ChangeLog, on_commit: Callable[[], None] = lambda: None) -> None:
        self.log = log
        self.on_commit = on_commit
        self.changed: dict[str, None] = {}  # keys in the order first changed
        self.touched: dict[str, None] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failures = 0
        self._staging = False  # a call to _stage is scheduled
        # Done once what changed since the last write began is on disk.
        self._next: asyncio.Future[None] | None = None
        self._running: asyncio.Future[None] | None = None  # done when the write under way is
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def active(self) -> bool:
        return self.loop is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "localstripe-log")

    def mark(self, key: str) -> None:
        if self.loop is not None:
            self.changed[key] = None
            self._schedule()

    def touch(self, key: str) -> None:
        if self.loop is not None:
            self.touched[key] = None

    def cleared(self) -> None:
        if self.loop is not None:
            self.changed.clear()
            self.touched.clear()
            self.log.stage_clear()
            self._schedule()

    def request_done(self, *, wrote: bool) -> None:
        """At the end of a request: what a write request read is logged too."""
        if wrote and self.touched:
            self.changed.update(self.touched)
            self._schedule()
        self.touched.clear()

    async def durable(self) -> None:
        """Returns once everything changed so far is on disk (raises if it failed)."""
        # Writes end in order: the last one to begin covers all before it.
        waiting = self._next if self._next is not None else self._running
        if waiting is not None:
            # Shielded: a request that goes away must not cancel others' write.
            await asyncio.shield(waiting)

    def _schedule(self) -> None:
        assert self.loop is not None
        if self._next is None:
            self._next = self.loop.create_future()
        if not self._staging:
            self._staging = True
            self.loop.call_soon(self._stage)

    def _stage(self) -> None:
        self._staging = False
        self._submit()

    def _submit(self) -> None:
        """Starts a write of everything changed so far, unless one is under way (its
        end calls this again)."""
        if self._running is not None or self.loop is None or self._thread is None:
            return
        done, self._next = self._next, None
        if done is None:
            return
        # Pickled here, in the loop's thread, between two of its steps: every object
        # is whole. Only bytes go to the writer thread.
        keys, self.changed = self.changed, {}
        try:
            self.log.stage(keys)
        except Exception as err:
            self._fail(done, err, f"staging {len(keys)} changes")
            return
        if not self.log.staged:
            done.set_result(None)
            return
        data, new_segment = self.log.submit()
        self._running = done
        write = self.loop.run_in_executor(
            self._thread, functools.partial(self.log.write, data, new_segment=new_segment))
        write.add_done_callback(functools.partial(self._written, done, data))

    def _written(self, done: asyncio.Future[None], data: bytes,
                 write: asyncio.Future[None]) -> None:
        self._running = None
        err = write.exception()
        if err is not None:
            # Written again with the next changes, if any come.
            self.log.untake(data)
            self._fail(done, err, "writing to the log")
            return
        self.on_commit()
        done.set_result(None)
        self._submit()  # what was staged meanwhile

    def _fail(self, done: asyncio.Future[None] | None, err: BaseException, what: str) -> None:
        self.failures += 1
        say(f"{what} failed; the requests waiting for it fail\n"
             + "".join(traceback.format_exception(err)))
        if done is not None and not done.done():
            done.set_exception(err)
            done.add_done_callback(lambda future: future.exception())  # retrieved

    async def stop(self) -> None:
        """At exit: waits for the write under way, then writes what is left here."""
        while self._running is not None:
            try:
                await asyncio.shield(self._running)
            except Exception:
                break
        self.loop = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        keys, self.changed = self.changed, {}
        self.log.stage(keys)
        self.log.commit()
        if self._next is not None and not self._next.done():
            self._next.set_result(None)
        self._next = None

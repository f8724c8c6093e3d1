"""Many concurrent callers' small writes, flushed together in one round trip."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await put(item)`` returns ``flush([... item ...])``'s answer for it.

    No timer: while one flush runs the next items wait, and the next flush takes
    them all, so a quiet worker pays no added latency and a busy one pays one
    round trip per flush instead of one per item. A flush that fails for a
    batch is tried again one item at a time, so one bad item fails alone.
    """

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *,
                 max_size: int = 500) -> None:
        self._flush = flush
        self._max_size = max_size
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def put(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch = self._queue[:self._max_size]
            del self._queue[:self._max_size]
            try:
                await self._answer(batch)
            except BaseException:
                # Cancelled (the worker stops): so are the callers still waiting.
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue.clear()
                raise

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as err:  # handed to the callers below
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(err)
                return
            log.warning("flush of %d failed (%s); flushing one by one", len(batch), err)
            for one in batch:
                await self._answer([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
